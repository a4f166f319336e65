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
For the Gaussian actor below, a ~ N(theta1 s, exp(theta2)), g = (1 + theta1)^2, gamma < 1 and gamma g < 1,
    V^pi(s) = -k s^2 - c,   k = 1 / (1 - gamma g),   c = gamma k exp(theta2) / (1 - gamma).
The chapter's critic V(s) = phi1 s + phi2 s^2 has no constant feature, so it cannot hold -c: TD's fixed point
puts part of c into phi2 instead. With the states s symmetric about 0, phi1 -> 0 and
    phi2 = -E[s^4] / (E[s^4] - gamma E[s^2 s'^2]),
a little below -1 once the exploration is small (the default run ends at phi2 = -1.004, theta2 = -4.6).
If alpha_actor is too large, theta1 overshoots -1 and the closed loop s' = (1 + theta1) s oscillates or
diverges: try `--actor-lr 3`.

The chapter's equations, and the line that realises each (search for the tag):
    [policy]     pi_theta(a|s) = N(theta1 s, exp(theta2))                      Actor.forward
    [critic]     V_phi(s) = phi1 s + phi2 s^2                                   Critic.forward
    [td]         delta_t = r_t + gamma V_phi(s_{t+1}) - V_phi(s_t)              td_losses
    [actor]      loss_actor = -E[log pi_theta(a_t|s_t) * delta_t], delta detached    td_losses
    [critic-loss] loss_critic = 1/2 E[(V_phi(s_t) - (r_t + gamma V_phi(s_{t+1})))^2]  td_losses
    plain gradient steps: theta += alpha_actor grad U, phi -= alpha_critic grad loss (SGD)

Run:  python regulator_1d.py                # seconds on a CPU; panels in runs/<run>/panels.png
      python regulator_1d.py --actor-lr 3   # the chapter's "try large alpha_actor"
      tensorboard --logdir runs
"""

import contextlib
import datetime
import math
import os
import random
import signal
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
    """The chapter's 1-D regulator: a one-step actor-critic that learns mu(s) = -s in seconds on a CPU."""

    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of the experiment, in [0, 2**32 - 1]: the same seed on the same machine gives the same run"""
    torch_deterministic: bool = True
    """torch.use_deterministic_algorithms(True, warn_only=True), cudnn.deterministic, deterministic cuBLAS"""
    cuda: bool = True
    """use CUDA when it is available (falls back to the CPU otherwise)"""
    threads: int = 1
    """torch CPU threads (1 keeps runs side by side from fighting over cores)"""
    env_id: str = "Regulator1D"
    """the environment: this script has exactly one, the chapter's 1-D regulator"""
    total_timesteps: int = 64_000
    """regulator steps in total, all regulators together (rounded down to whole steps of --num-envs)"""
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
    """write scalars to TensorBoard every this many updates (charts/SPS: training steps per second)"""

    def __post_init__(self):  # argument checks: one line on stderr and exit status 1 for each
        for name in ("total_timesteps", "num_envs", "episode_length", "actor_lr", "critic_lr", "threads",
                     "eval_every", "eval_episodes", "log_every"):
            if not getattr(self, name) > 0:
                fail(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            fail(f"--seed must be in [0, 2**32 - 1], got {self.seed}")
        if not 0 < self.gamma <= 1:
            fail(f"--gamma must be in (0, 1], got {self.gamma}")
        if self.env_id != "Regulator1D":
            fail(f"unknown --env-id {self.env_id!r}: this script has only 'Regulator1D'")
        if self.total_timesteps < self.num_envs:
            fail(f"--total-timesteps ({self.total_timesteps}) must be at least --num-envs "
                     f"({self.num_envs})")


class Regulator:
    """`num_envs` scalar regulators as one tensor: s' = s + a, r = -s^2, truncated after `episode_length`."""

    def __init__(self, num_envs: int, episode_length: int, generator: torch.Generator, device: torch.device):
        self.num_envs, self.episode_length, self.generator = num_envs, episode_length, generator
        self.device = device

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
        obs = self.reset() if truncated else next_s  # restart; next_s stays the true s'
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
        # [policy]; no argument checks: a diverging run (large --actor-lr) is reported, not a traceback
        return torch.distributions.Normal(self.theta1 * s, torch.exp(0.5 * self.theta2), validate_args=False)


class Critic(nn.Module):
    """V(s) = phi1 * s + phi2 * s^2."""

    def __init__(self):
        super().__init__()
        self.phi1 = nn.Parameter(torch.tensor(0.0))
        self.phi2 = nn.Parameter(torch.tensor(0.0))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.phi1 * s + self.phi2 * s**2  # [critic]


def td_losses(actor: Actor, critic: Critic, s: torch.Tensor, a: torch.Tensor, reward: torch.Tensor,
              next_s: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(actor loss, critic loss) of one batch; no termination here: always bootstrap, truncated or not."""
    with torch.no_grad():
        target = reward + gamma * critic(next_s)
    delta = target - critic(s)  # [td] delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
    actor_loss = -(actor(s).log_prob(a) * delta.detach()).mean()  # [actor] delta detached: a fixed weight
    return actor_loss, 0.5 * (delta**2).mean()  # [critic-loss]


def evaluate(actor: Actor | str, episodes: int, episode_length: int, seed: int) -> np.ndarray:
    """Undiscounted returns of the deterministic policy a = theta1 s from `episodes` seeded start states.

    `actor` may be a checkpoint path (runs/<run>/checkpoint.pt). The best possible return is -s_0^2."""
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
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on a GPU
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    print(f"device: {device}")
    num_updates = args.total_timesteps // args.num_envs
    if num_updates * args.num_envs != args.total_timesteps:
        print(f"note: --total-timesteps {args.total_timesteps:,} rounded to {num_updates * args.num_envs:,} "
              f"(whole steps of {args.num_envs} regulators)")

    env = make_env(args, torch.Generator(device).manual_seed(args.seed), device)
    actor, critic = Actor(args.init_log_var).to(device), Critic().to(device)
    actor_optimizer = torch.optim.SGD(actor.parameters(), lr=args.actor_lr)
    critic_optimizer = torch.optim.SGD(critic.parameters(), lr=args.critic_lr)
    optimizers = actor_optimizer, critic_optimizer

    with signals_caught() as caught:
        run_dir = new_folder("runs", f"{args.env_id}__{args.exp_name}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}")
        checkpoint_path = f"{run_dir}/checkpoint.pt"
        writer = SummaryWriter(run_dir)
        table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        s = env.reset()
        episode_return, last_return = torch.zeros(args.num_envs, device=device), math.nan
        eval_return, eval_time, sps, start_time = math.nan, 0.0, 0.0, time.time()
        progress = tqdm(total=num_updates * args.num_envs, disable=None, unit="step")
        for update in range(1, num_updates + 1):
            a = actor(s).sample()
            reward, next_s, truncated, next_obs = env.step(a)
            episode_return += reward
            actor_loss, critic_loss = td_losses(actor, critic, s, a, reward, next_s, args.gamma)
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            critic_optimizer.zero_grad()
            critic_loss.backward()
            critic_optimizer.step()
            s = next_obs

            global_step = update * args.num_envs
            # A check per update: cheap for four scalar parameters, and it ends a diverged run with a message.
            diverged = not torch.isfinite(torch.stack([*actor.parameters(), *critic.parameters()])).all()
            if diverged:
                progress.close()
                print(f"diverged at step {global_step:,}: the actor's step size is too large (see the module "
                      "docstring); no checkpoint written")
                break
            progress.update(args.num_envs)
            if truncated:
                last_return = episode_return.mean().item()
                writer.add_scalar("charts/episodic_return", last_return, global_step)
                writer.add_scalar("charts/episodic_length", args.episode_length, global_step)
                progress.set_postfix(ret=f"{last_return:.3f}", theta1=f"{actor.theta1.item():.3f}")
                episode_return.zero_()
            sps = global_step / (time.time() - start_time - eval_time)
            if update % args.log_every == 0 or update == num_updates:
                for name, value in (("theta1", actor.theta1), ("theta2", actor.theta2), ("phi1", critic.phi1),
                                    ("phi2", critic.phi2)):
                    writer.add_scalar(f"params/{name}", value.item(), global_step)
                writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                writer.add_scalar("losses/critic_loss", critic_loss.item(), global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
            if global_step % args.eval_every < args.num_envs or update == num_updates:
                eval_start = time.time()
                eval_return = evaluate(actor, args.eval_episodes, args.episode_length, args.seed + 10_000)
                eval_return = eval_return.mean()
                writer.add_scalar("eval/episodic_return", eval_return, global_step)
                eval_time += time.time() - eval_start
            if caught:
                break
        progress.close()

        if not diverged:
            save_checkpoint(checkpoint_path, args, global_step, actor, critic, *optimizers)
        if caught:
            writer.close()
            print(f"interrupted at step {global_step:,}: checkpoint {checkpoint_path}")
            sys.exit(128 + caught[0])
        metrics = {name: p.item() for name, p in (*actor.named_parameters(), *critic.named_parameters())}
        checkpoint_path = None if diverged else checkpoint_path
        metrics |= {"diverged": bool(diverged), "charts/episodic_return": last_return,
                    "eval/episodic_return": math.nan if diverged else float(eval_return), "charts/SPS": sps,
                    "global_step": global_step, "run_dir": run_dir, "checkpoint": checkpoint_path}
        fig = plot_panels(actor, critic)
        fig.savefig(f"{run_dir}/panels.png", dpi=100)
        writer.add_figure("panels", fig, global_step)
        writer.close()
    elapsed = datetime.timedelta(seconds=round(time.time() - start_time))
    print(f"finished {global_step:,} steps in {elapsed} ({sps:,.0f} steps/s); final evaluation return "
          f"{metrics['eval/episodic_return']:.3f}; theta1 {metrics['theta1']:.3f} phi2 {metrics['phi2']:.3f}")
    print(f"run folder: {run_dir}   (tensorboard --logdir runs)")
    print(f"checkpoint: {checkpoint_path or 'none (the parameters are not finite)'}")
    return metrics


# === Run harness: the parts of the other scripts' shared run harness that a run of seconds needs, same names. ===
def fail(message: str):
    """One line on stderr and exit status 1."""
    sys.exit(f"error: {message}")


def new_folder(base: str, name: str) -> str:
    """base/name, or base/name-2, -3, ... where it exists: never write into another run's folder."""
    for k in range(1, 10_000):
        path = os.path.join(base, name if k == 1 else f"{name}-{k}")
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            fail(f"cannot make the folder {path}: {e.strerror}")


@contextlib.contextmanager
def signals_caught():
    """The first SIGINT / SIGTERM is noted (the loop stops after its step); a second one exits at once."""
    caught = []

    def handler(signum, frame):
        if caught:
            os._exit(128 + signum)
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def save_checkpoint(path: str, args: Args, global_step: int, actor: Actor, critic: Critic,
                    actor_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer) -> None:
    """Atomically: a crash while writing leaves the previous file whole."""
    torch.save({"script": "regulator_1d", "args": asdict(args), "global_step": global_step,
                "actor": actor.state_dict(), "critic": critic.state_dict(),
                "actor_optimizer": actor_optimizer.state_dict(),
                "critic_optimizer": critic_optimizer.state_dict()}, path + ".tmp")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    train(tyro.cli(Args))
