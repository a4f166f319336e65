import math

import numpy as np
import pytest
import torch
from helpers import only_run_dir, read_scalars, read_tags, run_script

import regulator_1d
from regulator_1d import Actor, Args, Critic, Regulator, evaluate, train


def test_dynamics_and_reward():
    env = Regulator(3, episode_length=2, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    s = env.reset().clone()
    reward, next_s, truncated, obs = env.step(torch.tensor([1.0, -1.0, 0.5]))
    assert torch.allclose(reward, -(s**2)) and torch.allclose(next_s, s + torch.tensor([1.0, -1.0, 0.5]))
    assert not truncated and torch.equal(obs, next_s)
    reward, next_s, truncated, obs = env.step(-next_s)  # the optimal action: s' = 0
    assert truncated and torch.equal(next_s, torch.zeros(3))  # the true next state survives the reset...
    assert not torch.equal(obs, next_s)  # ...and the observation is a fresh start state


def test_value_of_gaussian_policy_matches_closed_form():
    """V^pi(s) = -k s^2 - c from the docstring, against the Monte Carlo discounted return."""
    theta1, log_var, gamma = -0.6, math.log(0.2), 0.9
    g = (1 + theta1) ** 2
    k = 1 / (1 - gamma * g)
    c = gamma * k * math.exp(log_var) / (1 - gamma)
    generator = torch.Generator().manual_seed(0)
    s0 = torch.tensor([0.0, 1.0, -2.0]).repeat_interleave(20_000)
    s, ret = s0.clone(), torch.zeros_like(s0)
    for t in range(150):  # gamma^150 < 1e-6
        a = theta1 * s + math.exp(0.5 * log_var) * torch.randn(s.shape, generator=generator)
        ret += gamma**t * -(s**2)
        s = s + a
    monte_carlo = ret.view(3, -1).mean(1)
    closed_form = -k * torch.tensor([0.0, 1.0, 4.0]) - c
    assert torch.allclose(monte_carlo, closed_form, rtol=0.02), (monte_carlo, closed_form)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_converges_to_the_optimal_regulator(seed):
    metrics = train(Args(seed=seed))
    assert abs(metrics["theta1"] + 1) < 0.05, metrics  # mu*(s) = -s
    assert metrics["phi2"] < 0, metrics  # the value is a negative quadratic
    assert abs(metrics["phi2"] + 1) < 0.1 and abs(metrics["phi1"]) < 0.05, metrics  # V*(s) = -s^2
    assert not metrics["diverged"]
    # the deterministic policy is near the best possible return, E[-s_0^2] = -1
    assert metrics["eval/episodic_return"] > -1.5


def test_untrained_policy_is_far_from_optimal():
    """The evaluation can tell: theta1 = 0 (do nothing) pays -s_0^2 every step."""
    returns = evaluate(Actor(-1.0), episodes=1000, episode_length=10, seed=0)
    assert -12 < returns.mean() < -8


@pytest.mark.parametrize("actor_lr", [1.0, 3.0])
def test_large_actor_step_size_diverges(actor_lr):
    """The chapter's "try large alpha_actor": theta1 overshoots -1 and the closed loop blows up."""
    metrics = train(Args(actor_lr=actor_lr))
    assert metrics["diverged"]
    assert not math.isfinite(metrics["theta1"]) or abs(metrics["theta1"] + 1) > 0.5


def test_same_seed_same_run(tmp_path, monkeypatch):
    returns = []
    for folder in ("a", "b", "c"):
        monkeypatch.chdir(tmp_path)
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(Args(seed=7 if folder != "c" else 8, total_timesteps=6400))
        returns.append([v for _, v in read_scalars(metrics["run_dir"])["charts/episodic_return"]])
    assert returns[0] == returns[1]
    assert returns[0] != returns[2]


def test_checkpoint_loads_back_with_weights_only():
    metrics = train(Args(total_timesteps=3200, save_model=True))
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) >= {"actor", "critic", "actor_optimizer", "critic_optimizer", "args"}
    assert checkpoint["args"]["total_timesteps"] == 3200
    critic = Critic()
    critic.load_state_dict(checkpoint["critic"])
    assert critic.phi2.item() == pytest.approx(metrics["phi2"])
    returns = evaluate(metrics["model_path"], episodes=100, episode_length=10, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-5)


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("regulator_1d.py", "--total-timesteps", "3200", "--eval-every", "1600", "--no-cuda")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    run_dir = only_run_dir()
    scalars = read_scalars(run_dir)
    for tag in ("params/theta1", "params/theta2", "params/phi1", "params/phi2", "charts/episodic_return",
                "charts/episodic_length", "charts/SPS", "losses/actor_loss", "losses/critic_loss",
                "eval/episodic_return"):
        assert tag in scalars, tag
    assert scalars["params/theta1"][-1][1] < -0.3  # it is learning already
    assert [step for step, _ in scalars["eval/episodic_return"]] == [1600, 3200]
    assert "panels" in read_tags(run_dir)["images"]
    with open(f"{run_dir}/panels.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_help_documents_every_argument():
    result = run_script("regulator_1d.py", "--help")
    assert result.returncode == 0
    for field in regulator_1d.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--actor-lr", "0"], "--actor-lr must be positive"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--gamma", "0"], "--gamma must be in (0, 1]"),
    (["--env-id", "CartPole-v1"], "unknown --env-id"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("regulator_1d.py", *argv)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
