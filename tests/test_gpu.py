"""The --cuda and --cudagraphs paths, run only where a CUDA GPU is (skipped elsewhere, CI included): each script
trains briefly on the GPU, logs finite losses, and its checkpoint loads back on the CPU."""

import importlib
import math

import pytest
import torch
from helpers import only_run_dir, read_scalars

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("cudagraphs", [False, True])
@pytest.mark.parametrize("script", ["ddpg", "td3", "sac"])
def test_offpolicy_trains_on_the_gpu(script, cudagraphs):
    """policy_frequency 2 with an odd --log-every: logging often reads the actor loss of an earlier update, whose
    CUDA graph output a later update overwrites unless the loop keeps a copy."""
    module = importlib.import_module(script)
    metrics = module.train(module.Args(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200,
                                       policy_frequency=2, log_every=7, eval_every=600, eval_episodes=1,
                                       save_model=True, cuda=True, cudagraphs=cudagraphs))
    assert metrics["num_updates"] == 400
    scalars = read_scalars(only_run_dir())
    for tag in ("losses/qf_loss", "losses/actor_loss"):
        assert len(scalars[tag]) >= 50 and all(math.isfinite(value) for _, value in scalars[tag]), tag
    assert math.isfinite(module.evaluate(metrics["model_path"], "Pendulum-v1", 1, seed=0)[0])  # on the CPU


@pytest.mark.parametrize(("script", "settings"), [
    ("regulator_1d", {"total_timesteps": 3200}),
    ("ac", {"total_timesteps": 2000, "eval_every": 2000, "eval_episodes": 1}),
    ("a2c", {"total_timesteps": 1000, "eval_every": 1000, "eval_episodes": 1}),
    ("alphazero", {"total_games": 64, "num_envs": 16, "simulations": 8, "eval_every": 32, "eval_games": 4,
                   "rollouts": 8}),
])
def test_onpolicy_and_alphazero_train_on_the_gpu(script, settings):
    module = importlib.import_module(script)
    metrics = module.train(module.Args(cuda=True, **settings))
    assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("losses/") and isinstance(v, float))
    assert any(tag.startswith("losses/") for tag in read_scalars(only_run_dir()))
