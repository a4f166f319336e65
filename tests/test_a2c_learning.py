"""a2c.py's learning bars, with the script's defaults (its own file, so that pytest-xdist runs it beside the others)."""

import pytest
from test_a2c_distributed import run_ranks, same_weights

from a2c import Args, train


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_learns_cartpole_within_100k_steps(seed):
    """The issue's bar: the mean of the last 20 episodic returns >= 475 after 100k steps, for 3 seeds of 3."""
    metrics = train(Args(seed=seed, cuda=False, eval_every=100_000))
    assert metrics["global_step"] == 100_000
    assert metrics["charts/episodic_return"] >= 475, metrics
    assert metrics["eval/episodic_return"] >= 475, metrics


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_learns_inverted_pendulum_within_100k_steps(seed):
    """Gaussian actions: InvertedPendulum-v4 (best return 1000) at 100k steps, the mean of the last 20 training
    returns and the deterministic evaluation >= 950."""
    metrics = train(Args(seed=seed, env_id="InvertedPendulum-v4", cuda=False, eval_every=100_000))
    assert metrics["charts/episodic_return"] >= 950, metrics
    assert metrics["eval/episodic_return"] >= 950, metrics


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_ranks_of_4_envs_learn_cartpole_within_100k_steps(seed):
    """Issue 15: under torchrun, 2 ranks x 4 envs (N = 8, the default) and 100k steps of both together: rank 0's
    last 20 episodic returns and the evaluation >= 475, the same weights on both ranks."""
    ranks = run_ranks(seed=seed, num_envs=4, cuda=False, eval_every=100_000, timeout=900)
    assert [r["code"] for r in ranks] == [0, 0] and same_weights(ranks)
    metrics = ranks[0]["metrics"]
    assert metrics["global_step"] == 100_000
    assert metrics["charts/episodic_return"] >= 475, metrics
    assert metrics["eval/episodic_return"] >= 475, metrics
