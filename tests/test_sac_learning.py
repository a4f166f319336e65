"""SAC learns Pendulum-v1 with its real defaults (256x256 networks, batch 256, lr 3e-4, one update per env step,
5000 random steps before learning), and --compile trains. Their own file, so that pytest-xdist runs them beside
tests/test_sac.py, which a developer runs in a minute or two."""

import math

import pytest
from helpers import read_scalars

from sac import Args, train


@pytest.mark.parametrize("seed", [1, 2])
def test_learns_pendulum_within_10k_steps(seed):
    metrics = train(Args(env_id="Pendulum-v1", total_timesteps=10_000, eval_every=5_000, seed=seed, cuda=False))
    evals = dict(read_scalars(metrics["run_dir"])["eval/episodic_return"])
    assert evals[5_000] < -900  # the uniform-random phase: the untrained actor swings, it does not balance
    assert metrics["eval/episodic_return"] >= -250, metrics  # mean of 10 deterministic episodes at step 10k


def test_compiled_updates_train():
    """--compile (torch.compile of the update functions) runs the same loop; ~40 CPU-seconds of compiling."""
    metrics = train(Args(env_id="Pendulum-v1", compile=True, total_timesteps=400, learning_starts=200,
                         eval_every=1000, eval_episodes=1, log_every=10, batch_size=32, cuda=False))
    scalars = read_scalars(metrics["run_dir"])
    assert metrics["num_updates"] == 200 and metrics["alpha"] < 1
    assert all(math.isfinite(v) for tag in ("losses/qf_loss", "losses/actor_loss") for _, v in scalars[tag])
