"""a2c.py under torchrun (issue 15): 2 ranks, gloo, CPU, short budgets.

One test runs the script as a user would (`python -m torch.distributed.run --standalone --nproc-per-node 2`); the
others start train() in 2 spawned processes with torchrun's environment variables (RANK, WORLD_SIZE, ...), so that
each rank can hand back what it saw: its final weights, the gradients it sent to the all-reduce and those it
clipped. A rank that hangs fails the test after a timeout (the other ranks are killed).
"""

import glob
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing
from helpers import REPO, only_run_dir, read_scalars, spawn_ranks

import a2c
from a2c import Actor, Args, Critic, train

SHORT = {"num_envs": 4, "num_steps": 5, "total_timesteps": 800, "eval_every": 800, "eval_episodes": 2, "log_every": 1,
         "checkpoint_every": 400, "cuda": False}  # 2 ranks x 4 envs x 5 steps: 40 steps an update, 20 updates


def rank_main(rank: int, port: int, kwargs: dict, sigterm_at: int | None) -> None:
    """One rank of a 2-process run in a spawned process; writes what it saw to rank<r>.pt."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    nets, sent, clipped = [], [], []
    spy_class = lambda base: type(base.__name__, (base,), {
        "__init__": lambda self, *a, **k: (base.__init__(self, *a, **k), nets.append(self))[0]})
    a2c.Actor, a2c.Critic = spy_class(Actor), spy_class(Critic)
    real_all_reduce, real_clip = torch.distributed.all_reduce, a2c.nn.utils.clip_grad_norm_
    real_save = a2c.save_checkpoint

    def all_reduce(tensor, *args, **kwargs):
        if tensor.numel() > 4 and len(sent) < 100:  # the gradients (the losses are 4 numbers, the signal 1)
            sent.append(tensor.clone())
        return real_all_reduce(tensor, *args, **kwargs)

    def clip(params, max_norm):
        if len(clipped) < 100:
            clipped.append(torch.cat([p.grad.flatten() for p in params]).clone())
        return real_clip(params, max_norm)

    def save_then_signal(path, args, global_step, *rest):  # SIGTERM to rank 1 alone, at its checkpoint
        written = real_save(path, args, global_step, *rest)
        if rank == 1 and global_step == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return written

    torch.distributed.all_reduce, a2c.nn.utils.clip_grad_norm_, a2c.save_checkpoint = all_reduce, clip, save_then_signal
    try:
        metrics, code = train(Args(**kwargs)), 0
    except SystemExit as exit_info:
        metrics, code = None, exit_info.code
    weights = {f"{i}.{k}": v for i, net in enumerate(nets) for k, v in net.state_dict().items()}
    torch.save({"code": code, "metrics": metrics, "weights": weights, "sent": sent, "clipped": clipped},
               f"rank{rank}.pt")


def run_ranks(sigterm_at: int | None = None, timeout: float = 240, **kwargs) -> list[dict]:
    """train(Args(**kwargs)) on 2 ranks; what each saw. Fails if a rank is still running after `timeout` s."""
    return spawn_ranks(rank_main, kwargs, sigterm_at, timeout=timeout)


def same_weights(ranks: list[dict]) -> bool:
    first, second = (r["weights"] for r in ranks)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_ranks_average_their_gradients_and_end_with_the_same_weights():
    """Every update: each rank's clipped gradient is the mean of the 2 ranks' own (which differ: their envs and
    samples are seeded apart); the budget counts both ranks' steps; one run folder; the same final weights."""
    ranks = run_ranks(**SHORT)
    assert [r["code"] for r in ranks] == [0, 0]
    updates = 800 // (2 * 4 * 5)
    for r in ranks:
        assert r["metrics"]["global_step"] == 800 and len(r["clipped"]) == len(r["sent"]) == updates
    for u in range(updates):
        mean = (ranks[0]["sent"][u] + ranks[1]["sent"][u]) / 2
        for r in ranks:
            assert torch.allclose(r["clipped"][u], mean, atol=1e-7, rtol=1e-5), u
    assert not torch.allclose(ranks[0]["sent"][0], ranks[1]["sent"][0])  # different rollouts
    assert same_weights(ranks)
    assert ranks[0]["metrics"]["run_dir"] == ranks[1]["metrics"]["run_dir"] == only_run_dir()
    assert torch.load(f"{only_run_dir()}/checkpoint.pt", weights_only=True)["global_step"] == 800


def test_sigterm_to_one_rank_stops_both_then_resume_on_2_ranks(capsys):
    """SIGTERM to rank 1 alone: both ranks stop after the next update with exit status 143, and rank 0 writes the
    checkpoint there; a resume on 2 ranks runs to the budget with the same weights on both; on 1 rank it is
    refused with one line."""
    ranks = run_ranks(sigterm_at=400, timeout=90, **SHORT, normalize_obs=True)
    assert [r["code"] for r in ranks] == [143, 143]
    path = f"{only_run_dir()}/checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 440 and checkpoint["world_size"] == 2 and len(checkpoint["env_obs_rms"]) == 8
    resumed = run_ranks(resume=path, cuda=False)
    assert [r["code"] for r in resumed] == [0, 0] and same_weights(resumed)
    assert [len(r["clipped"]) for r in resumed] == [9, 9] and resumed[0]["metrics"]["global_step"] == 800
    with pytest.raises(SystemExit) as exit_info:
        train(Args(resume=path, cuda=False))
    assert exit_info.value.code == f"error: --resume {path}: the run used 2 processes, this one 1"


def test_a_nan_stops_both_ranks():
    ranks = run_ranks(**{**SHORT, "total_timesteps": 40_000, "learning_rate": 1e30})
    assert [r["code"] for r in ranks] == [1, 1]


def test_torchrun_end_to_end():
    """A user's run: one run folder, rank 0's output alone, TensorBoard steps and budget over both ranks, the
    observation statistics of the 2 x 4 envs in the checkpoint."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             os.path.join(REPO, "a2c.py"), "--total-timesteps", "1600", "--num-envs", "4",
                             "--eval-every", "800", "--eval-episodes", "2", "--log-every", "4", "--checkpoint-every",
                             "800", "--normalize-obs", "--no-cuda"], capture_output=True, text=True, timeout=240,
                            env=env)
    assert result.returncode == 0, result.stderr
    run_dir = only_run_dir()
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "device: cpu; 2 processes" and len(lines) == 4, lines
    assert lines[1].startswith("finished 1,600 steps in ")
    assert lines[2:] == [f"run folder: {run_dir}   (tensorboard --logdir runs)", f"checkpoint: {run_dir}/checkpoint.pt"]
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["eval/episodic_return"]] == [800, 1600]
    assert [step for step, _ in scalars["losses/entropy"]] == list(range(160, 1601, 160))
    checkpoint = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 1600 and checkpoint["update"] == 40
    stats = checkpoint["env_obs_rms"]
    assert len(stats) == 8 and checkpoint["obs_rms"]["count"] == pytest.approx(sum(s["count"] for s in stats))
    assert not torch.equal(stats[0]["mean"], stats[4]["mean"])
    assert glob.glob("runs/*") == [run_dir]
