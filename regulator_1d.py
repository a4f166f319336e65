"""The chapter's 1-D regulator: a one-step actor-critic you can watch converge.

The problem (chapter: "watch an actor-critic method learn on a simple 1D regulator")
    state s in R, action a in R, `--num-envs` regulators stepped together as one tensor
    dynamics    s' = s + a                                              (Regulator.step)
    reward      r  = -s^2                                               (Regulator.step)
    start       s_0 ~ N(0, 1); after `--episode-length` steps a regulator is truncated (a time
                limit, so the update still bootstraps from V(s')) and restarted from a new s_0.

Closed-form optimum, for every gamma in (0, 1]: r_0 = -s_0^2 is paid whatever we do, and a = -s
puts the regulator at 0 where every later reward is 0. Hence
    mu*(s) = -s   (theta1* = -1)            V*(s) = -s^2   (phi1* = 0, phi2* = -1).
For the Gaussian actor below, a ~ N(theta1 s, exp(theta2)), with g = (1 + theta1)^2 and gamma g < 1,
    V^pi(s) = -k s^2 - c,   k = 1 / (1 - gamma g),   c = gamma k exp(theta2) / (1 - gamma).
The chapter's critic V(s) = phi1 s + phi2 s^2 has no constant, so it fits V^pi up to c: phi2 < 0 and
phi1 -> 0 by symmetry. If alpha_actor is too large, theta1 overshoots -1 and the closed loop
s' = (1 + theta1) s oscillates or diverges: try `--actor-lr 3`.

The chapter's equations, and the line that realises each (search for the tag):
    [policy]     pi_theta(a|s) = N(theta1 s, exp(theta2))                      Actor.forward
    [critic]     V_phi(s) = phi1 s + phi2 s^2                                   Critic.forward
    [td]         delta_t = r_t + gamma V_phi(s_{t+1}) - V_phi(s_t)              train
    [actor]      loss_actor = -E[log pi_theta(a_t|s_t) * delta_t], delta detached    train
    [critic-loss] loss_critic = 1/2 E[(V_phi(s_t) - (r_t + gamma V_phi(s_{t+1})))^2]  train
    plain gradient steps: theta += alpha_actor grad U, phi -= alpha_critic grad loss (SGD)

Run:  python regulator_1d.py                # seconds on a CPU; panels in runs/<run>/panels.png
      python regulator_1d.py --actor-lr 3   # the chapter's "try large alpha_actor"
      tensorboard --logdir runs
"""

import os
import random
import sys
import time
from dataclasses import asdict, dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of the experiment: the same seed on the same machine gives the same run"""
    torch_deterministic: bool = True
    """make torch pick deterministic algorithms"""
    cuda: bool = True
    """use CUDA when it is available (falls back to the CPU otherwise)"""
    threads: int = 1
    """torch CPU threads (1 keeps runs side by side from fighting over cores)"""
    save_model: bool = False
    """save a checkpoint (networks, optimizers, Args) to runs/<run>/regulator_1d.pt"""
    env_id: str = "Regulator1D"
    """the environment: this script has exactly one, the chapter's 1-D regulator"""
    total_timesteps: int = 64_000
    """regulator steps in total, all regulators together"""
    num_envs: int = 32
    """regulators run in parallel as one tensor; each step is one update on that batch"""
    episode_length: int = 10
    """steps before a regulator is truncated (time limit) and restarted from s_0 ~ N(0, 1)"""
    gamma: float = 0.9
    """the discount factor gamma"""
    actor_lr: float = 0.05
    """alpha_actor: step size of the actor's gradient ascent (large values show the instability)"""
    critic_lr: float = 0.05
    """alpha_critic: step size of the critic's gradient descent"""
    init_log_var: float = -1.0
    """theta2 at the start: the log-variance of the actor's exploration"""
    eval_every: int = 8_000
    """evaluate the deterministic policy a = theta1 s every this many regulator steps"""
    eval_episodes: int = 100
    """regulators (start states) per evaluation"""
    log_every: int = 20
    """write scalars to TensorBoard every this many updates"""

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "episode_length", "actor_lr", "critic_lr", "threads",
                     "eval_every", "eval_episodes", "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1:
            sys.exit(f"error: --gamma must be in (0, 1], got {self.gamma}")
        if self.env_id != "Regulator1D":
            sys.exit(f"error: unknown --env-id {self.env_id!r}: this script has only 'Regulator1D'")


class Regulator:
    """`num_envs` scalar regulators as one tensor: s' = s + a, r = -s^2, truncated every `episode_length` steps."""

    def __init__(self, num_envs: int, episode_length: int, generator: torch.Generator, device: torch.device):
        self.num_envs, self.episode_length, self.generator, self.device = num_envs, episode_length, generator, device

    def reset(self) -> torch.Tensor:
        self.t = 0
        self.s = torch.randn(self.num_envs, generator=self.generator, device=self.device)
        return self.s

    def step(self, a: torch.Tensor):
        """Returns (reward, true next state, truncated, observation to act on next)."""
        reward = -self.s**2  # r = -s^2
        next_s = self.s + a  # s' = s + a
        self.t += 1
        truncated = self.t == self.episode_length
        self.s = next_s
        obs = self.reset() if truncated else next_s  # the next episode starts where an ended one would have gone on
        return reward, next_s, truncated, obs


def make_env(args: Args, generator: torch.Generator, device: torch.device) -> Regulator:
    return Regulator(args.num_envs, args.episode_length, generator, device)


class Actor(nn.Module):
    """mu(s) = theta1 * s, log-variance theta2."""

    def __init__(self, init_log_var: float):
        super().__init__()
        self.theta1 = nn.Parameter(torch.tensor(0.0))
        self.theta2 = nn.Parameter(torch.tensor(init_log_var))

    def forward(self, s: torch.Tensor) -> torch.distributions.Normal:
        # [policy]; no argument checks, so that a diverging run (large --actor-lr) is reported, not a traceback
        return torch.distributions.Normal(self.theta1 * s, torch.exp(0.5 * self.theta2), validate_args=False)


class Critic(nn.Module):
    """V(s) = phi1 * s + phi2 * s^2."""

    def __init__(self):
        super().__init__()
        self.phi1 = nn.Parameter(torch.tensor(0.0))
        self.phi2 = nn.Parameter(torch.tensor(0.0))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.phi1 * s + self.phi2 * s**2  # [critic]


def evaluate(actor: Actor | str, episodes: int, episode_length: int, seed: int) -> np.ndarray:
    """Undiscounted returns of the deterministic policy a = theta1 s from `episodes` seeded start states.

    `actor` may be a checkpoint path written by --save-model. The best possible return is -s_0^2."""
    if isinstance(actor, str):
        checkpoint = torch.load(actor, weights_only=True, map_location="cpu")
        loaded = Actor(checkpoint["args"]["init_log_var"])
        loaded.load_state_dict(checkpoint["actor"])
        actor = loaded
    device = actor.theta1.device
    env = Regulator(episodes, episode_length, torch.Generator(device).manual_seed(seed), device)
    s, returns = env.reset(), torch.zeros(episodes, device=device)
    with torch.no_grad():
        for _ in range(episode_length):
            reward, _, _, s = env.step(actor(s).mean)
            returns += reward
    return returns.cpu().numpy()


def plot_panels(actor: Actor, critic: Critic) -> plt.Figure:
    """The chapter's two panels: policy mean vs optimal (top), critic vs optimal (bottom)."""
    s = torch.linspace(-2, 2, 101)
    with torch.no_grad():
        mu, v = actor(s).mean, critic(s)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    top.plot(s, mu, color="tab:blue", label=f"actor mean theta1 s (theta1 = {actor.theta1.item():.3f})")
    top.plot(s, -s, "k--", label="optimal -s")
    top.set_ylabel("action")
    top.legend()
    phi = f"phi1 = {critic.phi1.item():.3f}, phi2 = {critic.phi2.item():.3f}"
    bottom.plot(s, v, color="tab:green", label=f"critic ({phi})")
    bottom.plot(s, -(s**2), "k--", label="optimal -s^2")
    bottom.set_xlabel("state s")
    bottom.set_ylabel("value")
    bottom.legend()
    fig.tight_layout()
    return fig


def train(args: Args) -> dict:
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    print(f"device: {device}")

    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    env = make_env(args, torch.Generator(device).manual_seed(args.seed), device)
    actor, critic = Actor(args.init_log_var).to(device), Critic().to(device)
    actor_optimizer = torch.optim.SGD(actor.parameters(), lr=args.actor_lr)
    critic_optimizer = torch.optim.SGD(critic.parameters(), lr=args.critic_lr)

    num_updates = args.total_timesteps // args.num_envs
    s = env.reset()
    episode_return, last_return, eval_return = torch.zeros(args.num_envs, device=device), float("nan"), float("nan")
    start_time = time.time()
    progress = tqdm(total=num_updates * args.num_envs, disable=None, unit="step")
    for update in range(1, num_updates + 1):
        dist = actor(s)
        a = dist.sample()
        reward, next_s, truncated, next_obs = env.step(a)
        episode_return += reward

        v = critic(s)
        with torch.no_grad():
            td_target = reward + args.gamma * critic(next_s)  # no termination here: always bootstrap, truncated or not
        delta = td_target - v  # [td] delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
        actor_loss = -(dist.log_prob(a) * delta.detach()).mean()  # [actor] delta detached: a fixed weight for the actor
        critic_loss = 0.5 * (delta**2).mean()  # [critic-loss]

        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        s = next_obs

        global_step = update * args.num_envs
        # A scalar check per update: cheap for two scalar parameters, and it ends a diverged run with a message.
        diverged = not torch.isfinite(torch.stack([*actor.parameters(), *critic.parameters()])).all().item()
        if diverged:
            print(f"diverged at step {global_step}: the actor's step size is too large (see the module docstring)")
            break
        progress.update(args.num_envs)
        if truncated:
            last_return = episode_return.mean().item()
            writer.add_scalar("charts/episodic_return", last_return, global_step)
            writer.add_scalar("charts/episodic_length", args.episode_length, global_step)
            progress.set_postfix(ret=f"{last_return:.3f}", theta1=f"{actor.theta1.item():.3f}")
            episode_return.zero_()
        if update % args.log_every == 0 or update == num_updates:
            for name, value in (("theta1", actor.theta1), ("theta2", actor.theta2), ("phi1", critic.phi1),
                                ("phi2", critic.phi2)):
                writer.add_scalar(f"params/{name}", value.item(), global_step)
            writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
            writer.add_scalar("losses/critic_loss", critic_loss.item(), global_step)
            writer.add_scalar("charts/SPS", global_step / (time.time() - start_time), global_step)
        if global_step % args.eval_every < args.num_envs or update == num_updates:
            eval_return = evaluate(actor, args.eval_episodes, args.episode_length, seed=args.seed + 10_000).mean()
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
    progress.close()

    metrics = {name: p.item() for name, p in (*actor.named_parameters(), *critic.named_parameters())}
    metrics["diverged"] = diverged
    metrics["charts/episodic_return"] = last_return
    metrics["global_step"] = global_step
    metrics["eval/episodic_return"] = float("nan") if diverged else float(eval_return)
    metrics["charts/SPS"] = global_step / (time.time() - start_time)
    metrics["run_dir"] = f"runs/{run_name}"
    fig = plot_panels(actor, critic)
    fig.savefig(f"runs/{run_name}/panels.png", dpi=100)
    writer.add_figure("panels", fig, global_step)
    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(), "args": asdict(args),
                    "actor_optimizer": actor_optimizer.state_dict(),
                    "critic_optimizer": critic_optimizer.state_dict()}, path)
        print(f"model saved to {path}")
        metrics["model_path"] = path
    writer.close()
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


if __name__ == "__main__":
    train(tyro.cli(Args))
