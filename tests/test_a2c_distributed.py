"""a2c.py under torchrun (issue 15): 2 ranks, gloo, CPU, short budgets.

One test runs the script as a user would (`python -m torch.distributed.run --standalone --nproc-per-node 2`); the
others start train() in 2 spawned processes with torchrun's environment variables (RANK, WORLD_SIZE, ...), so that
each rank can hand back what it saw: its final weights, the gradients it sent to the all-reduce and those it
clipped. A rank that hangs fails the test after a timeout (the other ranks are killed).
"""

import glob
import math
import os
import random
import shutil
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing
from gymnasium.envs.classic_control import CartPoleEnv
from helpers import REPO, only_run_dir, read_scalars, spawn_ranks
from test_a2c import Chain

import a2c
from a2c import Actor, Args, Critic, merged_obs_stats, train

SHORT = {"num_envs": 4, "num_steps": 5, "total_timesteps": 800, "eval_every": 800, "eval_episodes": 2, "log_every": 1,
         "checkpoint_every": 400, "cuda": False}  # 2 ranks x 4 envs x 5 steps: 40 steps an update, 20 updates


def rank_main(rank: int, port: int, kwargs: dict, sigterm_at: int | None, keep_at: int | None) -> None:
    """One rank of a 2-process run in a spawned process; writes what it saw to rank<r>.pt (and rank 0 a copy of the
    checkpoint of step `keep_at` to copy/checkpoint.pt)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    nets, sent, clipped, evaluated = [], [], [], []
    spy_class = lambda base: type(base.__name__, (base,), {
        "__init__": lambda self, *a, **k: (base.__init__(self, *a, **k), nets.append(self))[0]})
    a2c.Actor, a2c.Critic = spy_class(Actor), spy_class(Critic)
    real_all_reduce, real_clip = torch.distributed.all_reduce, a2c.nn.utils.clip_grad_norm_
    real_save, real_evaluate = a2c.Run.save, a2c.evaluate

    def all_reduce(tensor, *args, **kwargs):
        if tensor.numel() > 5 and len(sent) < 100:  # the gradients (the logged scalars are 5 numbers, the signal 1)
            sent.append(tensor.clone())
        return real_all_reduce(tensor, *args, **kwargs)

    def clip(params, max_norm):
        if len(clipped) < 100:
            clipped.append(torch.cat([p.grad.flatten() for p in params]).clone())
        return real_clip(params, max_norm)

    def save_then_signal(run, *args, **kwargs):  # SIGTERM to rank 1 alone, at its checkpoint
        real_save(run, *args, **kwargs)
        if rank == 0 and run.step == keep_at:
            os.makedirs("copy", exist_ok=True)
            shutil.copy(run.path, "copy/checkpoint.pt")
        if rank == 1 and run.step == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)

    def evaluate(actor, env_id, episodes, seed, video_folder=None, obs_rms=None):  # the statistics it evaluates with
        evaluated.append(obs_rms)
        return real_evaluate(actor, env_id, episodes, seed, video_folder, obs_rms)

    torch.distributed.all_reduce, a2c.nn.utils.clip_grad_norm_, a2c.Run.save = all_reduce, clip, save_then_signal
    a2c.evaluate = evaluate
    try:
        metrics, code = train(Args(**kwargs)), 0
    except SystemExit as exit_info:
        metrics, code = None, exit_info.code
    weights = {f"{i}.{k}": v for i, net in enumerate(nets) for k, v in net.state_dict().items()}
    torch.save({"code": code, "metrics": metrics, "weights": weights, "sent": sent, "clipped": clipped,
                "evaluated": evaluated}, f"rank{rank}.pt")


def run_ranks(sigterm_at: int | None = None, keep_at: int | None = None, timeout: float = 240, **kwargs) -> list[dict]:
    """train(Args(**kwargs)) on 2 ranks; what each saw. Fails if a rank is still running after `timeout` s."""
    return spawn_ranks(rank_main, kwargs, sigterm_at, keep_at, timeout=timeout)


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
    """SIGTERM to rank 1 alone, while it writes its part of a checkpoint: both ranks stop after the next update with
    exit status 143, and rank 0 writes the checkpoint there, with each rank's observation statistics; a resume on 2
    ranks runs to the budget with the same weights on both, and rank 0 alone evaluates, with the statistics of the
    2 x 4 envs merged; on 1 rank it is refused with one line (before that)."""
    ranks = run_ranks(sigterm_at=400, timeout=90, **SHORT, normalize_obs=True)
    assert [r["code"] for r in ranks] == [143, 143]
    path = f"{only_run_dir()}/checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 440 and checkpoint["world_size"] == 2
    assert [len(r["obs_rms"]) for r in checkpoint["ranks"]] == [4, 4]
    with pytest.raises(SystemExit) as exit_info:
        train(Args(resume=path, cuda=False))
    assert exit_info.value.code == f"error: --resume {path}: the run used 2 processes, this 1"
    resumed = run_ranks(resume=path, cuda=False)
    assert [r["code"] for r in resumed] == [0, 0] and same_weights(resumed)
    assert [len(r["clipped"]) for r in resumed] == [9, 9] and resumed[0]["metrics"]["global_step"] == 800
    final = torch.load(path, weights_only=True)  # written just before the final evaluation
    every_env, rank_0 = (merged_obs_stats([s for r in final["ranks"][:k] for s in r["obs_rms"]]) for k in (2, 1))
    used = resumed[0]["evaluated"][-1]
    assert len(resumed[0]["evaluated"]) == 1 and resumed[1]["evaluated"] == []  # the final evaluation: rank 0's
    assert all(torch.equal(used[k], every_env[k]) for k in ("mean", "var")) and used["count"] == every_env["count"]
    assert not torch.equal(used["mean"], rank_0["mean"])  # the ranks' statistics differ: the merge matters


def test_a_nan_stops_both_ranks():
    ranks = run_ranks(**{**SHORT, "total_timesteps": 40_000, "learning_rate": 1e30})
    assert [r["code"] for r in ranks] == [1, 1]


def test_torchrun_end_to_end(monkeypatch):
    """A user's run: one run folder, rank 0's output alone, TensorBoard steps and budget over both ranks, the
    observation statistics of the 2 x 4 envs in the checkpoint, merged for --evaluate."""
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
    assert [len(r["obs_rms"]) for r in checkpoint["ranks"]] == [4, 4]
    stats = [s for r in checkpoint["ranks"] for s in r["obs_rms"]]  # rank 0's 4 envs', then rank 1's
    assert not torch.equal(stats[0]["mean"], stats[4]["mean"])
    # --evaluate: the statistics of all 8 envs merged, as rank 0's final evaluation used them
    returns = a2c.evaluate_checkpoint(Args(evaluate=f"{run_dir}/checkpoint.pt", eval_episodes=2))
    assert np.mean(returns) == pytest.approx(scalars["eval/episodic_return"][-1][1], rel=1e-6)
    seen = []
    monkeypatch.setattr(a2c, "evaluate", lambda actor, env_id, episodes, seed, video_folder=None, obs_rms=None: (
        seen.append(obs_rms), np.zeros(episodes))[1])
    a2c.evaluate_checkpoint(Args(evaluate=f"{run_dir}/checkpoint.pt", eval_episodes=2))
    assert seen[0]["count"] == pytest.approx(sum(s["count"] for s in stats))
    assert torch.equal(seen[0]["mean"], merged_obs_stats(stats)["mean"])
    assert glob.glob("runs/*") == [run_dir]


CHAIN = "DuetChainTwoRanks-v0"  # tests/test_a2c.py's Chain: its envs seeded 0, 1, 2 (mod 3) end their episodes at
if CHAIN not in gym.registry:   # steps 3, 4 (terminated and truncated) and 4 (truncated), all together every 12 steps
    gym.register(CHAIN, entry_point=Chain, max_episode_steps=4)


def same_state(a, b) -> bool:
    """Nested dicts and lists of tensors and numbers, equal bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(same_state, a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_a_2_rank_resume_where_every_episode_has_just_ended_is_exact():
    """2 ranks x 3 Chain envs x 4 steps (rank r's envs seeded 3r .. 3r + 2: the same episode lengths on both ranks):
    at step 72 (update 3) every env's episode has just ended. Resumed from the checkpoint there, each rank with its
    own random states, the run ends at step 240 with the uninterrupted run's networks, optimizer and every rank's
    random states, bit for bit, on both ranks."""
    args = dict(env_id=CHAIN, seed=0, num_envs=3, num_steps=4, total_timesteps=240, checkpoint_every=72,
                eval_every=240, eval_episodes=1, log_every=1, cuda=False)
    whole = run_ranks(keep_at=72, **args)
    assert [r["code"] for r in whole] == [0, 0] and same_weights(whole)
    kept = torch.load("copy/checkpoint.pt", weights_only=True)
    assert kept["global_step"] == 72 and kept["update"] == 3
    assert not same_state(kept["ranks"][0]["rng"], kept["ranks"][1]["rng"])  # the ranks' own states differ
    resumed = run_ranks(resume="copy/checkpoint.pt", cuda=False)
    assert [r["code"] for r in resumed] == [0, 0] and same_weights(resumed)
    assert [len(r["clipped"]) for r in resumed] == [7, 7]  # updates 4 to 10
    first, second = (torch.load(path, weights_only=True) for path in (whole[0]["metrics"]["checkpoint"],
                                                                     "copy/checkpoint.pt"))
    assert first["global_step"] == second["global_step"] == 240 and first["update"] == second["update"] == 10
    for key in ("actor", "critic", "optimizer"):
        assert same_state(first[key], second[key]), key
    assert same_state([r["rng"] for r in first["ranks"]], [r["rng"] for r in second["ranks"]])
    assert whole[0]["weights"].keys() == resumed[0]["weights"].keys()
    assert all(torch.equal(whole[0]["weights"][k], resumed[0]["weights"][k]) for k in whole[0]["weights"])

# ---- issue 22 audit: env seeds of each rank, the logged losses, each rank's random states on resume ---------------

AUDIT_ENV = "DuetSeedRecordingCartPole-v0"
AUDIT = {"env_id": AUDIT_ENV, "num_envs": 4, "num_steps": 5, "eval_every": 10_000, "eval_episodes": 1, "log_every": 1,
         "checkpoint_every": 0, "cuda": False}  # 2 ranks x 4 envs x 5 steps: 40 steps an update


class SeedRecordingCartPole(CartPoleEnv):
    """CartPole that notes, at every seeded reset, the seed, the first observation and the process's Python, numpy
    and torch random states at that moment (in `seeded`, a list of the process)."""

    seeded: list[dict] = []

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        if seed is not None:
            SeedRecordingCartPole.seeded.append({
                "seed": seed, "obs": torch.as_tensor(obs), "torch": torch.get_rng_state(),
                "numpy": torch.as_tensor(np.random.get_state()[1].astype(np.int64)),
                "python": torch.tensor(random.getstate()[1])})
        return obs, info


if AUDIT_ENV not in gym.registry:
    gym.register(AUDIT_ENV, entry_point=SeedRecordingCartPole, max_episode_steps=500)


def audit_rank_main(rank: int, port: int, kwargs: dict) -> None:
    """One rank of a 2-process train(Args(**kwargs)); writes to rank<r>.pt its seeded env resets (the training envs'
    first) and the small float tensors it sent to all-reduces (the values it logs, not the gradients), as they
    were before the reduction."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    sent, real_all_reduce = [], torch.distributed.all_reduce

    def all_reduce(tensor, *args, **kwargs):
        if tensor.is_floating_point() and tensor.numel() < 50:
            sent.append(tensor.detach().clone())
        return real_all_reduce(tensor, *args, **kwargs)

    torch.distributed.all_reduce = all_reduce
    try:
        metrics, code = train(Args(**kwargs)), 0
    except SystemExit as exit_info:
        metrics, code = None, exit_info.code
    torch.save({"code": code, "metrics": metrics, "seeded": SeedRecordingCartPole.seeded[:8], "sent": sent},
               f"rank{rank}.pt")


def test_audit_rank_r_seeds_its_envs_rN_to_rN_plus_N_minus_1():
    """Seed 1, N = 4: rank 0's envs start as CartPole reset with seeds 1..4, rank 1's as with seeds 5..8."""
    ranks = spawn_ranks(audit_rank_main, AUDIT | {"total_timesteps": 40})
    assert [r["code"] for r in ranks] == [0, 0]
    env = gym.make("CartPole-v1")
    for rank, r in enumerate(ranks):
        expected_seeds = [1 + 4 * rank + i for i in range(4)]
        assert [e["seed"] for e in r["seeded"][:4]] == expected_seeds, rank
        for seed, e in zip(expected_seeds, r["seeded"][:4]):
            assert torch.equal(e["obs"], torch.as_tensor(env.reset(seed=seed)[0])), (rank, seed)


def audit_is_the_mean(logged: dict, own0: torch.Tensor, own1: torch.Tensor) -> bool:
    """Every logged value is one of the means of the ranks' own values (the order of the values aside)."""
    means = ((own0 + own1) / 2).tolist()
    return all(any(math.isclose(v, m, rel_tol=1e-5, abs_tol=1e-6) for m in means) for v in logged.values())


def test_audit_logged_losses_are_the_mean_of_the_ranks_own():
    """At each of the 2 updates, every losses/* value rank 0 writes to TensorBoard is the mean of what the two ranks
    computed (the values each sent to the all-reduce, matched whatever their order), not their sum."""
    ranks = spawn_ranks(audit_rank_main, AUDIT | {"total_timesteps": 80})
    assert [r["code"] for r in ranks] == [0, 0]
    scalars = read_scalars(ranks[0]["metrics"]["run_dir"])
    pairs = list(zip(ranks[0]["sent"], ranks[1]["sent"], strict=True))
    for step in (40, 80):
        logged = {tag: dict(values)[step] for tag, values in scalars.items() if tag.startswith("losses/")}
        assert {"losses/actor_loss", "losses/value_loss", "losses/entropy"} <= set(logged), logged
        matches = [(own0, own1) for own0, own1 in pairs if audit_is_the_mean(logged, own0, own1)]
        assert matches, (step, logged, pairs)
        own0, own1 = matches[0]
        assert not torch.allclose(own0, own1)  # the ranks computed different losses: their mean is neither's


def test_audit_a_2_rank_resume_gives_each_rank_its_own_random_states():
    """Resumed on 2 ranks, the ranks do not share rank 0's random states: at the first reset of the resumed run's
    envs (before any action is drawn) rank 1's Python, numpy and torch states all differ from rank 0's."""
    first = spawn_ranks(audit_rank_main, AUDIT | {"total_timesteps": 40})
    assert [r["code"] for r in first] == [0, 0]
    resumed = spawn_ranks(audit_rank_main, {"resume": first[0]["metrics"]["checkpoint"], "cuda": False,
                                            "total_timesteps": 80})
    assert [r["code"] for r in resumed] == [0, 0]
    state0, state1 = (r["seeded"][0] for r in resumed)
    for key in ("python", "numpy", "torch"):
        assert not torch.equal(state0[key], state1[key]), key


def test_bad_input_under_torchrun_is_one_error_line_from_rank_0():
    """Both ranks refuse --num-envs 0 before the process group starts; rank 0 alone says so. (torchrun then adds its
    own report of the failed ranks, which names no `error:` line of ours.)"""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             os.path.join(REPO, "a2c.py"), "--num-envs", "0"], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode == 1 and not os.path.exists("runs")
    ours = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert ours == ["error: --num-envs must be positive, got 0"], result.stderr
