"""alphazero.py under torchrun (issue 15): 2 ranks, gloo, CPU, tiny tic-tac-toe budgets.

One test runs the script as a user would (`python -m torch.distributed.run --standalone --nproc-per-node 2`); the
others start train() in 2 spawned processes with torchrun's environment variables (RANK, WORLD_SIZE, ...), so that
each rank can hand back what it saw: its final network, the gradients it sent to the all-reduce and those its
optimizer stepped with, the checkpoints it wrote. A rank that hangs fails the test after a timeout (both are killed).
"""

import contextlib
import glob
import io
import os
import shutil
import signal
import subprocess
import sys
import types

import pytest
import torch
import torch.multiprocessing
import torch.nn.functional as F
from helpers import REPO, only_run_dir, read_scalars, spawn_ranks
from torch.optim.optimizer import register_optimizer_step_pre_hook

import alphazero
from alphazero import Args, Net, train

TINY = {"total_games": 25, "num_envs": 4, "simulations": 4, "batch_size": 16, "replay_ratio": 1.0, "channels": 8,
        "blocks": 1, "eval_every": 1_000, "eval_games": 2, "rollouts": 2, "checkpoint_every": 8, "cuda": False}
# 25 games: rank 0 plays 13, rank 1 12; an iteration every 2 x 4 finished games


def rank_main(rank: int, port: int, kwargs: dict, sigterm_at: int | None, nan_at: int | None) -> None:
    """One rank of a 2-process run in a spawned process; writes what it saw to rank<r>.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    nets, sent, stepped, saves = [], [], [], []
    alphazero.Net = type("Net", (Net,), {
        "__init__": lambda self, *a, **k: (Net.__init__(self, *a, **k), nets.append(self))[0]})
    real_all_reduce, real_save = torch.distributed.all_reduce, torch.save

    def all_reduce(tensor, *args, **kwargs):
        if tensor.numel() > 10:  # the gradients (the logged scalars are 4 numbers)
            sent.append(tensor.clone())
        return real_all_reduce(tensor, *args, **kwargs)

    def save(obj, path, *args, **kwargs):  # the checkpoints this rank writes; rank 0's first periodic one is copied,
        real_save(obj, path, *args, **kwargs)  # as a crash would leave it
        if str(path).endswith("checkpoint.pt.tmp"):
            saves.append(obj["games"])
            if len(saves) == 1:
                os.makedirs("copy", exist_ok=True)
                shutil.copy(path, "copy/checkpoint.pt")

    def signal_at(module, games):  # SIGTERM to rank 1 alone, when the games of both ranks reach `sigterm_at`
        if rank == 1 and sigterm_at is not None and games >= sigterm_at and not sent_signal:
            sent_signal.append(os.kill(os.getpid(), signal.SIGTERM))

    sent_signal = []
    real_add = alphazero.NoWriter.__getattr__
    alphazero.NoWriter.__getattr__ = lambda self, name: (
        (lambda tag, value, step, *a, **k: signal_at(self, step)) if name == "add_scalar" else real_add(self, name))
    register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: stepped.append(
        torch.cat([p.grad.flatten() for p in optimizer.param_groups[0]["params"]]).clone()))
    torch.distributed.all_reduce, torch.save = all_reduce, save
    if rank == 1 and nan_at is not None:  # rank 1 alone: a NaN value loss from its `nan_at`-th minibatch on
        mse_loss = lambda v, z: F.mse_loss(v, z) * (float("nan") if len(stepped) >= nan_at else 1.0)
        alphazero.F = types.SimpleNamespace(cross_entropy=F.cross_entropy, mse_loss=mse_loss)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            metrics, code = train(Args(**kwargs)), 0
    except SystemExit as exit_info:
        metrics, code = None, exit_info.code
    torch.save({"code": code, "metrics": metrics, "weights": nets[0].state_dict() if nets else {}, "sent": sent,
                "stepped": stepped, "saves": saves, "stderr": stderr.getvalue()}, f"rank{rank}.pt")


def run_ranks(sigterm_at: int | None = None, nan_at: int | None = None, timeout: float = 60, **kwargs) -> list[dict]:
    """train(Args(**kwargs)) on 2 ranks; what each saw. Fails if a rank is still running after `timeout` s."""
    return spawn_ranks(rank_main, kwargs, sigterm_at, nan_at, timeout=timeout)


def same_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_ranks_average_their_gradients_split_the_budget_and_end_with_the_same_weights():
    """Every minibatch step: each rank steps with the mean of the 2 ranks' own gradients (which differ: their games
    are seeded apart); both take the same number of steps; 25 games in all (13 + 12); rank 0 alone makes the run
    folder and writes the checkpoint, with both ranks' self-play states; the same final weights (BatchNorm
    statistics included) on both."""
    ranks = run_ranks(**TINY)
    assert [r["code"] for r in ranks] == [0, 0]
    assert len(ranks[0]["sent"]) == len(ranks[1]["sent"]) == len(ranks[0]["stepped"]) > 3
    for u, (sent0, sent1) in enumerate(zip(ranks[0]["sent"], ranks[1]["sent"])):
        for r in ranks:
            assert torch.allclose(r["stepped"][u], (sent0 + sent1) / 2, atol=1e-7, rtol=1e-5), u
    assert not torch.allclose(ranks[0]["sent"][0], ranks[1]["sent"][0])  # different games, different gradients
    assert same_weights(ranks[0]["weights"], ranks[1]["weights"])
    assert [r["metrics"]["global_step"] for r in ranks] == [25, 25]
    assert ranks[0]["metrics"]["run_dir"] == ranks[1]["metrics"]["run_dir"] == only_run_dir()
    assert ranks[0]["saves"] and ranks[0]["saves"][-1] == 25 and ranks[1]["saves"] == []
    checkpoint = torch.load(f"{only_run_dir()}/checkpoint.pt", weights_only=True)
    assert checkpoint["games"] == 25 and checkpoint["world_size"] == 2
    own, other = (r["self_play"] for r in checkpoint["ranks"])
    assert (own["started"], other["started"]) == (13, 12)
    assert [len(state["window"]["lengths"]) for state in (own, other)] == [13, 12]
    assert not torch.equal(own["window"]["boards"][:20], other["window"]["boards"][:20])  # seeded apart
    assert same_weights(checkpoint["net"], ranks[0]["weights"])


def test_resume_on_2_ranks_is_exact_and_on_1_rank_refused():
    """A resume from the first periodic checkpoint (every rank's games in progress, windows and random states) ends
    with the uninterrupted run's network; another number of processes is refused with one line."""
    full = run_ranks(**TINY)
    assert [r["code"] for r in full] == [0, 0]
    path = "copy/checkpoint.pt"
    assert 8 <= torch.load(path, weights_only=True)["games"] < 25
    resumed = run_ranks(resume=path, cuda=False)
    assert [r["code"] for r in resumed] == [0, 0] and resumed[0]["metrics"]["global_step"] == 25
    assert same_weights(resumed[0]["weights"], full[0]["weights"])
    assert same_weights(resumed[1]["weights"], full[0]["weights"])
    with pytest.raises(SystemExit) as exit_info:
        train(Args(resume=path, cuda=False))
    assert exit_info.value.code == f"error: --resume {path}: the run used 2 processes, this 1"


def test_sigterm_to_one_rank_stops_both_with_a_checkpoint():
    ranks = run_ranks(sigterm_at=10, **{**TINY, "total_games": 200})
    assert [r["code"] for r in ranks] == [143, 143]
    checkpoint = torch.load(f"{only_run_dir()}/checkpoint.pt", weights_only=True)
    assert 10 <= checkpoint["games"] < 200 and checkpoint["games"] == ranks[0]["saves"][-1]
    assert same_weights(ranks[0]["weights"], ranks[1]["weights"])


def test_a_nan_on_one_rank_stops_both_ranks():
    """A NaN loss on rank 1 alone: the ranks' mean losses are NaN, and both stop after the same update, rank 0 with
    one line."""
    ranks = run_ranks(nan_at=6, **{**TINY, "total_games": 200})
    assert [r["code"] for r in ranks] == [1, 1]
    assert ranks[0]["stderr"].startswith("error: losses/value_loss is nan at game ")
    assert len(ranks[0]["stderr"].splitlines()) == 1 and ranks[1]["stderr"] == ""  # rank 1 exits without a word


def test_torchrun_end_to_end():
    """A user's run: rank 0's output alone, one run folder with one TensorBoard file, the budget counted over both
    ranks (25 games, exact though odd), the final checkpoint; a budget smaller than the ranks refused."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               os.path.join(REPO, "alphazero.py"), "--game", "tictactoe", "--num-envs", "4", "--simulations", "4",
               "--channels", "8", "--blocks", "1", "--batch-size", "16", "--eval-every", "12", "--eval-games", "2",
               "--rollouts", "2", "--checkpoint-every", "8", "--no-cuda"]
    result = subprocess.run([*command, "--total-games", "25"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir()
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "device: cpu; 2 processes" and len(lines) == 4, lines
    assert lines[1].startswith("finished 25 self-play games in ")
    assert lines[2:] == [f"run folder: {run_dir}   (tensorboard --logdir runs)", f"checkpoint: {run_dir}/checkpoint.pt"]
    assert len(glob.glob(f"{run_dir}/events.*")) == 1
    scalars = read_scalars(run_dir)
    assert scalars["eval/random_win"][-1][0] == scalars["losses/policy_loss"][-1][0] == 25
    assert len(scalars["eval/random_win"]) >= 2
    checkpoint = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)
    assert checkpoint["games"] == 25 and [r["self_play"]["started"] for r in checkpoint["ranks"]] == [13, 12]
    refused = subprocess.run([*command, "--total-games", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode != 0
    assert refused.stderr.count("error: --total-games must be at least 2 (the processes), got 1") == 1
    assert glob.glob("runs/*") == [run_dir]


# ---- issue 22 audit: the update schedule follows the games of all ranks; the logged losses are the ranks' mean ----

AUDIT = TINY | {"replay_ratio": 4.0, "checkpoint_every": 0}  # about 20 minibatch steps over 25 games


def audit_rank_main(rank: int, port: int, kwargs: dict) -> None:
    """One rank of a 2-process train(Args(**kwargs)); writes to rank<r>.pt, for each iteration (each call of
    alphazero.update): the games and positions in this rank's replay window then, the optimizer steps the call
    took, and the policy and value losses this rank computed at its last minibatch."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    iterations, steps, computed = [], [], {"cross_entropy": [], "mse_loss": []}
    register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: steps.append(1))

    def spy(name):
        def loss(*args, **kwargs):
            value = getattr(F, name)(*args, **kwargs)
            computed[name].append(value.item())
            return value
        return loss

    alphazero.F = types.SimpleNamespace(**{name: getattr(F, name) for name in dir(F) if not name.startswith("_")}
                                        | {name: spy(name) for name in computed})
    real_update = alphazero.update

    def update(net, optimizer, window, *args, **kwargs):
        before = len(steps)
        result = real_update(net, optimizer, window, *args, **kwargs)
        iterations.append({"games": len(window), "positions": sum(len(game[-1]) for game in window),
                           "steps": len(steps) - before, "policy_loss": computed["cross_entropy"][-1],
                           "value_loss": computed["mse_loss"][-1]})
        return result

    alphazero.update = update
    try:
        metrics, code = train(Args(**kwargs)), 0
    except SystemExit as exit_info:
        metrics, code = None, exit_info.code
    torch.save({"code": code, "metrics": metrics, "iterations": iterations}, f"rank{rank}.pt")


def test_audit_minibatch_steps_follow_the_games_of_all_ranks():
    """4 games per rank (8 in all) between iterations: iteration i (from 0) comes once both ranks together have
    finished 4 + 8 i games, or at the last game; each takes max(1, 4.0 x (positions of both ranks' games finished
    since the last iteration) / (16 x 2 ranks)) minibatch steps on each rank, rounded. Counted here from each
    rank's replay window and optimizer steps, not from the script's counters."""
    ranks = spawn_ranks(audit_rank_main, AUDIT)
    assert [r["code"] for r in ranks] == [0, 0]
    its = list(zip(ranks[0]["iterations"], ranks[1]["iterations"], strict=True))
    games = [a["games"] + b["games"] for a, b in its]
    positions = [a["positions"] + b["positions"] for a, b in its]
    assert games[-1] == 25 and games == sorted(games) and len(games) >= 3
    for i, g in enumerate(games[:-1]):
        assert g >= 4 + 8 * i, (i, games)  # not before the games of both ranks reached the mark
    steps = read_scalars(only_run_dir())["losses/policy_loss"]
    assert [step for step, _ in steps] == games  # TensorBoard's step: the games of both ranks
    for i, (a, b) in enumerate(its):
        new = positions[i] - (positions[i - 1] if i else 0)
        assert a["steps"] == b["steps"], i
        assert abs(a["steps"] - max(1.0, 4.0 * new / (16 * 2))) <= 0.5, (i, a["steps"], new)


def test_audit_logged_losses_are_the_mean_of_the_ranks_own():
    """At every iteration, the policy and value losses rank 0 writes to TensorBoard are the means of those the two
    ranks computed at their last minibatch (which differ: their minibatches are drawn apart), not their sums."""
    ranks = spawn_ranks(audit_rank_main, AUDIT)
    assert [r["code"] for r in ranks] == [0, 0]
    scalars = read_scalars(only_run_dir())
    for tag in ("policy_loss", "value_loss"):
        own = [[it[tag] for it in r["iterations"]] for r in ranks]
        assert len(scalars[f"losses/{tag}"]) == len(own[0]) == len(own[1]) >= 3
        for (_, logged), own0, own1 in zip(scalars[f"losses/{tag}"], *own, strict=True):
            assert logged == pytest.approx((own0 + own1) / 2, rel=1e-5), tag
        assert own[0] != own[1]
