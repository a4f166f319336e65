"""The chapter's four pictures, from duet's own code, on problems whose true values are known in closed form.

    python benchmarks/chapter_figures.py         # a few CPU-seconds; writes benchmarks/results/chapter_*
    python benchmarks/chapter_figures.py --help  # lambda, the noises, the critic's bias, the samples, the folder

  chapter_td_vs_return.png  TD residual vs full return, both estimating A(s_0, a) = -2  (the chapter's formulas)
  chapter_gae.png           the (gamma lambda)^l weights, and GAE's estimates of A = -1.5  (a2c.compute_gae)
  chapter_exploration.png   mu(s), Gaussian noise that jumps, OU noise that wanders       (ddpg.OUNoise)
  chapter_regulator.png     the 1-D regulator's policy and critic vs the optimum  (regulator_1d.train, plot_panels)
  chapter_figures.json      the numbers behind them: sampled means and stds beside their closed forms

The chain (figures 1 and 2): states s_0, ..., s_{H-1}, then the end s_H; each step pays r ~ N(m, sigma^2),
except at s_0, where the policy takes one of two actions with probability 1/2: action a pays N(m + A, sigma^2),
the other N(m - A, sigma^2), and both lead to s_1. Transitions are deterministic, so
    V(s_k) = m sum_{j=0}^{H-1-k} gamma^j,    Q(s_0, a) = V(s_0) + A,    the true advantage A(s_0, a) = A.
The critic is V_phi(s_k) = V(s_k) + b for k >= 1, the end s_H included (there only the done flag keeps it out),
and exact at s_0 (an error at s_0 would shift every estimator alike: a baseline, which leaves the policy
gradient unbiased; the error that biases it lies ahead).
On episodes that take a at s_0, GAE(lambda) at t = 0 is sum_l (gamma lambda)^l delta_l, each delta_l holding
one reward's noise, hence
    mean = A + b (1 - lambda) sum_{k=1}^{H-1} gamma^k lambda^(k-1)   (lambda = 0, the TD residual: A + gamma b)
    std  = sigma sqrt(sum_{l=0}^{H-1} (gamma lambda)^(2 l))          (lambda = 1, the full return: mean A)
The exploration noise (figure 3), x' = (1 - theta dt) x + sigma sqrt(dt) N(0, 1), has lag-1 autocorrelation
1 - theta dt and stationary std sigma sqrt(dt / (1 - (1 - theta dt)^2)); independent Gaussian noise has 0.
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402

import a2c  # noqa: E402
import ddpg  # noqa: E402
import regulator_1d  # noqa: E402


@dataclass
class Args:
    out_dir: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    """folder for the PNGs and chapter_figures.json"""
    seed: int = 1
    """seed of the sampling (and of the regulator's run)"""
    samples: int = 20_000
    """episodes per estimator (figures 1, 2) and noise processes (figure 3)"""
    gamma: float = 0.99
    """the discount factor gamma of the chain"""
    horizon: int = 10
    """H, the chain's steps per episode"""
    step_reward: float = -1.0
    """m, the mean reward of a step"""
    reward_std: float = 1.0
    """sigma, the std of every reward"""
    critic_bias: float = 1.0
    """b, the critic's error on the states ahead, V_phi(s_k) = V(s_k) + b for k >= 1"""
    td_advantage: float = -2.0
    """the true advantage A(s_0, a) of figure 1"""
    gae_advantage: float = -1.5
    """the true advantage A(s_0, a) of figure 2"""
    lambdas: tuple[float, ...] = (0.0, 0.5, 0.9, 1.0)
    """the GAE lambdas of figure 2"""
    ou_theta: float = ddpg.Args.ou_theta
    """OU mean-reversion rate theta (ddpg.py's --ou-theta)"""
    ou_sigma: float = ddpg.Args.ou_sigma
    """OU volatility sigma (ddpg.py's --ou-sigma)"""
    ou_dt: float = ddpg.Args.ou_dt
    """OU time step dt (ddpg.py's --ou-dt)"""
    gaussian_std: float | None = None
    """std of the Gaussian noise (default: the OU process's stationary std, so only the correlation differs)"""
    noise_steps: int = 200
    """steps of the exploration noise in figure 3"""

    def __post_init__(self):
        checks = {"--samples >= 2": self.samples >= 2, "--horizon >= 2": self.horizon >= 2,
                  "--noise-steps >= 10": self.noise_steps >= 10, "--reward-std >= 0": self.reward_std >= 0,
                  "0 < --gamma <= 1": 0 < self.gamma <= 1,
                  "--lambdas in [0, 1]": all(0 <= lam <= 1 for lam in self.lambdas),
                  "0 < --ou-theta * --ou-dt < 1": 0 < self.ou_theta * self.ou_dt < 1}
        for rule, ok in checks.items():
            if not ok:
                sys.exit(f"error: {rule} is required")


# Figures 1 and 2: the chain ----------------------------------------------------------------------------
def true_values(args: Args) -> torch.Tensor:
    """V(s_0), ..., V(s_H) [H + 1]; V(s_H) = 0, the episode has ended."""
    discounts = args.gamma ** torch.arange(args.horizon, dtype=torch.float64)
    return torch.stack([args.step_reward * discounts[: args.horizon - k].sum() for k in range(args.horizon + 1)])


def critic_values(args: Args) -> torch.Tensor:
    """V_phi(s_0), ..., V_phi(s_H) [H + 1]: exact at s_0, off by b ahead (at s_H too: it cannot see the end)."""
    return true_values(args) + args.critic_bias * (torch.arange(args.horizon + 1) >= 1)


def sample_rewards(args: Args, advantage: float, generator: torch.Generator) -> torch.Tensor:
    """Rewards [H, samples] of episodes that take action a at s_0."""
    noise = torch.randn(args.horizon, args.samples, generator=generator, dtype=torch.float64)
    rewards = args.step_reward + args.reward_std * noise
    rewards[0] += advantage
    return rewards


def td_residual(rewards: torch.Tensor, values: torch.Tensor, gamma: float) -> torch.Tensor:
    return rewards[0] + gamma * values[1] - values[0]  # the chapter's delta = r + gamma V(s') - V(s)


def full_return(rewards: torch.Tensor, values: torch.Tensor, gamma: float) -> torch.Tensor:
    discounts = gamma ** torch.arange(len(rewards), dtype=rewards.dtype)
    return (discounts[:, None] * rewards).sum(0) - values[0]  # G_0 - V(s_0)


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """a2c.compute_gae's advantage at t = 0 [samples], one episode per column. values: V_phi(s_0..s_H)."""
    horizon, n = rewards.shape
    dones = torch.zeros_like(rewards)
    dones[-1] = 1.0  # the episode ends after s_{H-1}: compute_gae must not bootstrap from V_phi(s_H)
    return a2c.compute_gae(rewards, values[:-1, None].expand(horizon, n), dones, values[-1].expand(n), gamma,
                           lam)[0][0]


def gae_weights(gamma: float, lam: float, horizon: int) -> torch.Tensor:
    """The weight a2c.compute_gae puts on delta_l, l = 0..H-1, read off by linearity: a unit delta_l alone."""
    impulses = torch.eye(horizon, dtype=torch.float64)  # column l: reward 1 at step l, V = 0, so delta = e_l
    zeros = torch.zeros(horizon, horizon, dtype=torch.float64)
    return a2c.compute_gae(impulses, zeros, zeros, zeros[0], gamma, lam)[0][0]


def gae_closed_form(args: Args, advantage: float, lam: float) -> tuple[float, float]:
    """(mean, std) of the GAE(lambda) estimate at s_0, from the docstring."""
    k = torch.arange(args.horizon, dtype=torch.float64)
    mean = advantage + args.critic_bias * (1 - lam) * (args.gamma ** k[1:] * lam ** (k[1:] - 1)).sum()
    std = args.reward_std * ((args.gamma * lam) ** (2 * k)).sum().sqrt()
    return mean.item(), std.item()


def summary(samples: torch.Tensor, closed_form: tuple[float, float]) -> dict:
    return {"mean": samples.mean().item(), "std": samples.std().item(),
            "standard_error": (samples.std() / len(samples) ** 0.5).item(),
            "closed_form_mean": closed_form[0], "closed_form_std": closed_form[1]}


def figure_td_vs_return(args: Args, generator: torch.Generator) -> tuple[plt.Figure, dict, dict]:
    rewards, values = sample_rewards(args, args.td_advantage, generator), critic_values(args)
    td, ret = td_residual(rewards, values, args.gamma), full_return(rewards, values, args.gamma)
    numbers = {"td_residual": summary(td, gae_closed_form(args, args.td_advantage, 0.0)),
               "full_return": summary(ret, gae_closed_form(args, args.td_advantage, 1.0))}
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = torch.linspace(ret.quantile(0.001).item(), ret.quantile(0.999).item(), 80).numpy()
    for name, x, color in (("TD residual", td, "teal"), ("full return G - V(s)", ret, "tab:orange")):
        ax.hist(x.numpy(), bins=bins, density=True, alpha=0.55, color=color,
                label=f"{name}: mean {x.mean():.2f}, std {x.std():.2f}")
    ax.axvline(args.td_advantage, color="k", ls="--", label=f"true A(s,a) = {args.td_advantage:g}")
    ax.set_title(f"{args.samples} sampled advantage estimates (critic bias b = {args.critic_bias:g} ahead, "
                 f"gamma = {args.gamma:g}, H = {args.horizon})", fontsize=9)
    ax.set_xlabel("advantage estimate")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, numbers, {"td": td, "return": ret}


def figure_gae(args: Args, generator: torch.Generator) -> tuple[plt.Figure, dict, dict]:
    rewards, values = sample_rewards(args, args.gae_advantage, generator), critic_values(args)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6))
    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(args.lambdas)).numpy())
    numbers, estimates, width = {}, {}, 0.8 / len(args.lambdas)
    for i, (lam, color) in enumerate(zip(args.lambdas, colors)):
        weights, estimates[lam] = gae_weights(args.gamma, lam, args.horizon), gae(rewards, values, args.gamma, lam)
        closed_form = gae_closed_form(args, args.gae_advantage, lam)
        numbers[str(lam)] = {"weights": weights.tolist()} | summary(estimates[lam], closed_form)
        offset = (i - (len(args.lambdas) - 1) / 2) * width
        top.bar(torch.arange(args.horizon).numpy() + offset, weights.numpy(), width, color=color,
                label=f"lambda = {lam:g}")
    low = min(x.quantile(0.001).item() for x in estimates.values())
    high = max(x.quantile(0.999).item() for x in estimates.values())
    for lam, color in zip(args.lambdas, colors):
        x = estimates[lam]
        bottom.hist(x.numpy(), bins=80, range=(low, high), density=True, histtype="step", lw=1.5, color=color,
                    label=f"lambda = {lam:g}: mean {x.mean():.2f}, std {x.std():.2f}")
    bottom.axvline(args.gae_advantage, color="k", ls="--", label=f"true A = {args.gae_advantage:g}")
    top.set_title(f"weight (gamma lambda)^l on delta_l (gamma = {args.gamma:g})", fontsize=9)
    top.set_xlabel("l")
    top.set_ylim(0, 1.25)
    top.legend(fontsize=8, ncol=len(args.lambdas), loc="upper center")
    bottom.set_title(f"GAE(lambda) estimates of A at s_0 ({args.samples} episodes, critic bias b = "
                     f"{args.critic_bias:g} ahead)", fontsize=9)
    bottom.set_xlabel("advantage estimate")
    bottom.set_ylabel("density")
    bottom.legend(fontsize=7)
    fig.tight_layout()
    return fig, numbers, estimates


# Figure 3: exploration ---------------------------------------------------------------------------------
def sample_noises(args: Args) -> tuple[torch.Tensor, torch.Tensor]:
    """(OU, Gaussian) noise [noise_steps, samples]: ddpg.OUNoise, one process per column; i.i.d. normals."""
    ou = ddpg.OUNoise(args.samples, 1, args.ou_theta, args.ou_sigma, args.ou_dt, torch.device("cpu"))
    ou_steps = torch.stack([ou.sample()[:, 0] for _ in range(args.noise_steps)])
    return ou_steps, gaussian_std(args) * torch.randn(args.noise_steps, args.samples)


def ou_stationary_std(args: Args) -> float:
    return args.ou_sigma * (args.ou_dt / (1 - (1 - args.ou_theta * args.ou_dt) ** 2)) ** 0.5


def gaussian_std(args: Args) -> float:
    return ou_stationary_std(args) if args.gaussian_std is None else args.gaussian_std


def lag1_autocorrelation(x: torch.Tensor) -> float:
    """Correlation of x_t with x_{t+1}, pooled over the columns (independent processes)."""
    a, b = x[:-1].flatten(), x[1:].flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


def figure_exploration(args: Args) -> tuple[plt.Figure, dict, dict]:
    torch.manual_seed(args.seed)  # OUNoise draws from torch's global generator
    ou, gaussian = sample_noises(args)
    burn_in = min(int(5 / (args.ou_theta * args.ou_dt)), args.noise_steps // 2)  # it starts at 0: let it settle
    numbers = {"ou": {"lag1_autocorrelation": lag1_autocorrelation(ou[burn_in:]),
                      "closed_form_lag1": 1 - args.ou_theta * args.ou_dt, "std": ou[burn_in:].std().item(),
                      "closed_form_std": ou_stationary_std(args), "burn_in_steps": burn_in},
               "gaussian": {"lag1_autocorrelation": lag1_autocorrelation(gaussian), "closed_form_lag1": 0.0,
                            "std": gaussian.std().item(), "closed_form_std": gaussian_std(args)}}
    s = torch.linspace(-2, 2, args.noise_steps)  # the state sweeps left to right, one step at a time
    mu = -s  # a deterministic policy: the regulator's optimum
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(s, mu, color="tab:blue", lw=2, label="deterministic policy mu(s) = -s")
    ax.scatter(s, mu + gaussian[:, 0], s=9, color="tab:orange",
               label=f"mu(s) + Gaussian noise, std {gaussian_std(args):.2f} "
                     f"(lag-1 autocorrelation {numbers['gaussian']['lag1_autocorrelation']:.2f})")
    ax.plot(s, mu + ou[:, 0], color="tab:red", lw=0.5, alpha=0.5)
    ax.scatter(s, mu + ou[:, 0], s=9, color="tab:red",
               label=f"mu(s) + OU noise, theta {args.ou_theta:g}, sigma {args.ou_sigma:g}, dt {args.ou_dt:g} "
                     f"(lag-1 autocorrelation {numbers['ou']['lag1_autocorrelation']:.2f})")
    ax.set_title(f"exploration around mu(s): one of {args.samples} processes, {args.noise_steps} steps "
                 "(left to right is time)", fontsize=9)
    ax.set_xlabel("state s")
    ax.set_ylabel("action a")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, numbers, {"ou": ou, "gaussian": gaussian}


# Figure 4: the regulator -------------------------------------------------------------------------------
def figure_regulator(args: Args) -> tuple[plt.Figure, dict]:
    """regulator_1d.train at its defaults (it writes runs/ into a throw-away folder), then its plot_panels."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        os.chdir(tmp)
        try:
            metrics = regulator_1d.train(regulator_1d.Args(seed=args.seed, cuda=False))
        finally:
            os.chdir(cwd)
    actor, critic = regulator_1d.Actor(regulator_1d.Args.init_log_var), regulator_1d.Critic()
    for module in (actor, critic):
        module.load_state_dict({name: torch.tensor(metrics[name]) for name in module.state_dict()})
    numbers = {name: p.item() for name, p in (*actor.named_parameters(), *critic.named_parameters())}
    numbers |= {"optimum": {"theta1": -1.0, "phi1": 0.0, "phi2": -1.0}, "diverged": metrics["diverged"]}
    return regulator_1d.plot_panels(actor, critic), numbers


def main(args: Args) -> dict:
    torch.set_num_threads(1)
    os.makedirs(args.out_dir, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    results, seconds = {"args": {k: v for k, v in asdict(args).items() if k != "out_dir"}}, {}
    for name, draw in (("td_vs_return", lambda: figure_td_vs_return(args, generator)[:2]),
                       ("gae", lambda: figure_gae(args, generator)[:2]),
                       ("exploration", lambda: figure_exploration(args)[:2]),
                       ("regulator", lambda: figure_regulator(args))):
        start = time.process_time()
        fig, results[name] = draw()
        fig.savefig(os.path.join(args.out_dir, f"chapter_{name}.png"), dpi=100)
        plt.close(fig)
        seconds[name] = round(time.process_time() - start, 2)
    results["cpu_seconds"] = seconds
    with open(os.path.join(args.out_dir, "chapter_figures.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    results = main(tyro.cli(Args))
    print(f"{'':30s} {'sampled':>9s} {'closed form':>12s}")
    rows = [(f"{name} {stat}", r, stat) for name, r in results["td_vs_return"].items() for stat in ("mean", "std")]
    rows += [(f"GAE lambda {lam} {stat}", r, stat) for lam, r in results["gae"].items() for stat in ("mean", "std")]
    rows += [(f"{name} lag-1 autocorrelation", r, "lag1") for name, r in results["exploration"].items()]
    for label, r, stat in rows:
        sampled = r["lag1_autocorrelation"] if stat == "lag1" else r[stat]
        print(f"{label:30s} {sampled:9.3f} {r[f'closed_form_{stat}']:12.3f}")
    print("regulator:", ", ".join(f"{k} {v:.4f}" for k, v in results["regulator"].items() if isinstance(v, float)))
    print("CPU seconds:", results["cpu_seconds"])
