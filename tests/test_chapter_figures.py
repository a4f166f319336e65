"""benchmarks/chapter_figures.py: the numbers behind the chapter's four pictures, against their closed forms."""

import json
import math
import os
import sys

import matplotlib.pyplot as plt
import pytest
import torch
from helpers import REPO, run_script

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import chapter_figures as cf  # noqa: E402


def within_sampling_error(numbers: dict, n: int):
    """Sampled mean within 4 standard errors of the closed form, sampled std within 4 of its standard errors."""
    mean_error = abs(numbers["mean"] - numbers["closed_form_mean"])
    std_error = abs(numbers["std"] - numbers["closed_form_std"])
    assert mean_error < 4 * numbers["closed_form_std"] / math.sqrt(n), numbers
    assert std_error < 4 * numbers["closed_form_std"] / math.sqrt(2 * n), numbers


def test_the_chain_has_the_true_advantage():
    """Monte Carlo over both actions at s_0: E[G | a] - V(s_0) = A, and V(s_k) is the discounted reward sum."""
    args, generator = cf.Args(samples=50_000, gamma=0.9, step_reward=-1.0, reward_std=2.0), torch.Generator()
    generator.manual_seed(0)
    discounts = args.gamma ** torch.arange(args.horizon, dtype=torch.float64)
    g_a = (discounts[:, None] * cf.sample_rewards(args, -2.0, generator)).sum(0)
    g_other = (discounts[:, None] * cf.sample_rewards(args, +2.0, generator)).sum(0)
    v0 = (g_a.mean() + g_other.mean()) / 2  # the policy takes each action with probability 1/2
    standard_error = g_a.std() / math.sqrt(args.samples)
    assert abs(v0 - cf.true_values(args)[0]) < 4 * standard_error
    assert abs(g_a.mean() - v0 - (-2.0)) < 4 * standard_error
    assert cf.true_values(args)[-2] == pytest.approx(-1.0) and cf.true_values(args)[-1] == 0  # one reward, none
    assert cf.critic_values(args)[0] == cf.true_values(args)[0]  # exact at s_0, off by b ahead
    assert torch.allclose(cf.critic_values(args)[1:] - cf.true_values(args)[1:], torch.tensor(args.critic_bias,
                                                                                               dtype=torch.float64))


def test_td_residual_and_full_return_match_their_closed_forms():
    args = cf.Args(samples=20_000, critic_bias=1.5)
    fig, numbers, _ = cf.figure_td_vs_return(args, torch.Generator().manual_seed(1))
    plt.close(fig)
    td, ret = numbers["td_residual"], numbers["full_return"]
    assert td["closed_form_mean"] == pytest.approx(-2.0 + args.gamma * 1.5)  # the critic's bias, discounted once
    assert td["closed_form_std"] == pytest.approx(args.reward_std)  # one step of randomness
    assert ret["closed_form_mean"] == pytest.approx(-2.0)  # unbiased
    within_sampling_error(td, args.samples)
    within_sampling_error(ret, args.samples)
    assert td["std"] < ret["std"] / 2  # the return sums H rewards' noise


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 0.8), (0.99, 0.0), (0.99, 1.0)])
def test_gae_weights_are_powers_of_gamma_lambda(gamma, lam):
    weights = cf.gae_weights(gamma, lam, 12)  # read off a2c.compute_gae
    assert torch.allclose(weights, (gamma * lam) ** torch.arange(12, dtype=torch.float64))


def test_lambda_0_and_1_reproduce_td_and_monte_carlo_through_compute_gae():
    args = cf.Args(samples=500, critic_bias=0.7, gamma=0.95)
    rewards, values = cf.sample_rewards(args, -1.5, torch.Generator().manual_seed(2)), cf.critic_values(args)
    assert torch.allclose(cf.gae(rewards, values, args.gamma, 0.0), cf.td_residual(rewards, values, args.gamma))
    assert torch.allclose(cf.gae(rewards, values, args.gamma, 1.0), cf.full_return(rewards, values, args.gamma))
    # in between: the chapter's sum_l (gamma lambda)^l delta_l, delta from the critic, no bootstrap at the end
    next_values = torch.cat([values[1:-1], torch.zeros(1, dtype=values.dtype)])  # no bootstrap at the end
    deltas = rewards + args.gamma * next_values[:, None] - values[:-1, None]
    weights = (args.gamma * 0.6) ** torch.arange(args.horizon, dtype=torch.float64)
    assert torch.allclose(cf.gae(rewards, values, args.gamma, 0.6), (weights[:, None] * deltas).sum(0))


def test_gae_estimates_match_their_closed_forms():
    args = cf.Args(samples=20_000, lambdas=(0.0, 0.5, 0.9, 1.0))
    fig, numbers, _ = cf.figure_gae(args, torch.Generator().manual_seed(3))
    plt.close(fig)
    assert numbers["1.0"]["closed_form_mean"] == pytest.approx(-1.5)
    assert numbers["0.0"]["closed_form_mean"] == pytest.approx(-1.5 + args.gamma * args.critic_bias)
    for lam in args.lambdas:
        within_sampling_error(numbers[str(lam)], args.samples)
    stds = [numbers[str(lam)]["std"] for lam in args.lambdas]
    assert stds == sorted(stds)  # more lambda, more variance
    biases = [numbers[str(lam)]["mean"] + 1.5 for lam in args.lambdas]
    assert biases[0] > biases[-2] > 4 * numbers["0.9"]["standard_error"] and abs(biases[-1]) < 0.1  # and less bias


@pytest.mark.parametrize("theta, dt", [(0.15, 1.0), (0.5, 0.2)])
def test_ou_wanders_and_gaussian_jumps(theta, dt):
    """ddpg.OUNoise: lag-1 autocorrelation 1 - theta dt and the stationary std; the Gaussian's is 0."""
    args = cf.Args(samples=2_000, noise_steps=300, ou_theta=theta, ou_sigma=0.3, ou_dt=dt)
    fig, numbers, noises = cf.figure_exploration(args)
    plt.close(fig)
    ou, gaussian = numbers["ou"], numbers["gaussian"]
    assert ou["closed_form_lag1"] == pytest.approx(1 - theta * dt)
    pairs = args.samples * (args.noise_steps - ou["burn_in_steps"] - 1)
    rho = ou["closed_form_lag1"]
    assert abs(ou["lag1_autocorrelation"] - rho) < 4 * math.sqrt((1 - rho**2) / pairs), ou
    assert abs(gaussian["lag1_autocorrelation"]) < 4 / math.sqrt(args.samples * (args.noise_steps - 1)), gaussian
    assert ou["std"] == pytest.approx(ou["closed_form_std"], rel=0.03)
    assert gaussian["std"] == pytest.approx(ou["closed_form_std"], rel=0.01)  # the same spread by default
    steps = noises["ou"].diff(dim=0).abs().mean() / noises["gaussian"].diff(dim=0).abs().mean()
    assert steps < 0.6  # the OU's step-to-step moves are small: it wanders


def test_command_end_to_end(tmp_path):
    out = tmp_path / "figures"
    result = run_script("benchmarks/chapter_figures.py", "--out-dir", str(out), "--samples", "300",
                        "--noise-steps", "40", "--lambdas", "0", "0.9", "1", "--critic-bias", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    names = ["td_vs_return", "gae", "exploration", "regulator"]
    for name in names:
        assert (out / f"chapter_{name}.png").stat().st_size > 10_000
    numbers = json.loads((out / "chapter_figures.json").read_text())
    assert set(names) <= set(numbers) and numbers["args"]["critic_bias"] == 2.0
    assert list(numbers["gae"]) == ["0.0", "0.9", "1.0"]
    assert numbers["td_vs_return"]["td_residual"]["closed_form_mean"] == pytest.approx(-2 + 0.99 * 2)
    for estimator in [*numbers["td_vs_return"].values(), *numbers["gae"].values()]:  # the arguments reach the samples
        assert abs(estimator["mean"] - estimator["closed_form_mean"]) < 4 * estimator["closed_form_std"] / 300**0.5
    regulator = numbers["regulator"]
    assert abs(regulator["theta1"] + 1) < 0.05 and abs(regulator["phi2"] + 1) < 0.1 and not regulator["diverged"]
    assert "td_residual" in result.stdout and not os.path.exists("runs")  # the regulator's run folder is thrown away
    print(result.stdout)
