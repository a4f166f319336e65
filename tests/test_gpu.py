"""The --cuda and --cudagraphs paths, run only where a CUDA GPU is (skipped elsewhere, CI included; benchmarks/gpu.py
runs them on a GPU machine): each script trains briefly on the GPU, logs finite losses, and its checkpoint (always
written, metrics["checkpoint"]) loads back on the CPU, where `--evaluate` plays it."""

import importlib
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO, only_run_dir, read_scalars

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def load_on_the_cpu(metrics: dict, script: str) -> dict:
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True, map_location="cpu")
    assert checkpoint["script"] == script
    return checkpoint


def evaluate_on_the_cpu(script: str, checkpoint: str, *args: str) -> str:
    """`python <script>.py --evaluate <checkpoint>` with the GPU hidden: the checkpoint plays on the CPU."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(REPO, f"{script}.py"), "--evaluate", checkpoint, *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("cudagraphs", [False, True])
@pytest.mark.parametrize("script", ["ddpg", "td3", "sac"])
def test_offpolicy_trains_on_the_gpu(script, cudagraphs):
    """policy_frequency 2 with an odd --log-every: logging often reads the actor loss of an earlier update, whose
    CUDA graph output a later update overwrites unless the loop keeps a copy."""
    module = importlib.import_module(script)
    metrics = module.train(module.Args(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200,
                                       policy_frequency=2, log_every=7, eval_every=600, eval_episodes=1,
                                       cuda=True, compile=cudagraphs, cudagraphs=cudagraphs))
    assert metrics["num_updates"] == 400
    scalars = read_scalars(only_run_dir())
    for tag in ("losses/qf_loss", "losses/actor_loss"):
        assert len(scalars[tag]) >= 50 and all(math.isfinite(value) for _, value in scalars[tag]), tag
    assert load_on_the_cpu(metrics, script)["actor"]
    out = evaluate_on_the_cpu(script, metrics["checkpoint"], "--eval-episodes", "1")
    assert "evaluation of" in out and "mean return" in out, out


@pytest.mark.parametrize(("script", "settings", "evaluate_args"), [
    ("regulator_1d", {"total_timesteps": 3200}, None),
    ("ac", {"total_timesteps": 2000, "eval_every": 2000, "eval_episodes": 1}, ["--eval-episodes", "1"]),
    ("a2c", {"total_timesteps": 1000, "eval_every": 1000, "eval_episodes": 1}, ["--eval-episodes", "1"]),
    ("alphazero", {"total_games": 64, "num_envs": 16, "simulations": 8, "eval_every": 32, "eval_games": 4,
                   "rollouts": 8}, ["--eval-games", "4", "--rollouts", "8"]),
])
def test_onpolicy_and_alphazero_train_on_the_gpu(script, settings, evaluate_args):
    module = importlib.import_module(script)
    metrics = module.train(module.Args(cuda=True, **settings))
    assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("losses/") and isinstance(v, float))
    assert any(tag.startswith("losses/") for tag in read_scalars(only_run_dir()))
    load_on_the_cpu(metrics, script)
    if evaluate_args is not None:
        assert evaluate_on_the_cpu(script, metrics["checkpoint"], *evaluate_args).strip()
