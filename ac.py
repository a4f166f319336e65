"""The chapter's basic one-step actor-critic ("Basic AC"): the TD residual is the advantage.

A separate actor pi_theta(a|s) (Categorical over logits for Discrete actions, Gaussian with a
state-independent log-std for Box actions) and critic V_phi(s), both 64x64 tanh MLPs, each with its own
optimizer. Every step of the `--num-envs` environments gives one batch of transitions
(s_t, a_t, r_t, s_{t+1}, terminated_t), and each batch is one update of both networks: no replay, no
rollout, no entropy bonus.

The chapter's equations, and the line that realises each (search for the tag):
    [policy]      pi_theta(a|s): Categorical(logits) or N(mu_theta(s), exp(log_std)^2)   Actor.forward
    [critic]      V_phi(s)                                                                 Critic.forward
    [td]          delta_t = r_t + gamma V_phi(s_{t+1}) (1 - terminated_t) - V_phi(s_t)     td_target, train
    [actor]       loss_actor = -E[log pi_theta(a_t|s_t) * delta_t], delta detached         train
    [critic-loss] loss_critic = 1/2 E[(V_phi(s_t) - (r_t + gamma V_phi(s_{t+1}) (1 - terminated_t)))^2]  train
Worked example (chapter): V(s) = -2, r = +1, V(s') = -1.5, gamma = 0.99 gives delta = 1.515.

Time limits: the vector env uses gymnasium's SAME_STEP autoreset, so when an episode ends the step returns
the first observation of the next episode and the true last one in infos["final_obs"]. `final_observations`
puts that true s_{t+1} back, and `td_target` bootstraps from it when a time limit truncated the episode,
never when the task terminated it (then V(s_{t+1}) = 0).
Box actions: the sample a_t ~ N(mu, sigma^2) is clipped to the action bounds only to step the env; its
log-probability is that of the unclipped sample.

Run:  python ac.py                                                       # CartPole-v1, 300k steps, ~35 CPU s
      python ac.py --env-id InvertedPendulum-v4 --total-timesteps 100000     # Gaussian actions, ~15 CPU s
      tensorboard --logdir runs
"""

import os
import random
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass

import gymnasium as gym
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
    capture_video: bool = False
    """record the evaluation episodes to runs/<run>/videos"""
    save_model: bool = False
    """save a checkpoint (networks, optimizers, Args) to runs/<run>/ac.pt"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (flat Box observations; Discrete or Box actions)"""
    total_timesteps: int = 300_000
    """environment steps in total, all environments together"""
    num_envs: int = 16
    """environments stepped together; each step of all of them is one batch and one update"""
    gamma: float = 0.99
    """the discount factor gamma"""
    eval_every: int = 50_000
    """evaluate the deterministic policy (argmax / mean action) every this many environment steps"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    async_envs: bool = False
    """step the environments in subprocesses (gym.vector.AsyncVectorEnv) instead of in this one"""
    actor_lr: float = 5e-4
    """the actor's Adam step size"""
    critic_lr: float = 1e-3
    """the critic's Adam step size"""
    log_every: int = 100
    """write losses and SPS to TensorBoard every this many updates"""

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "threads", "actor_lr", "critic_lr", "eval_every",
                     "eval_episodes", "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1:
            sys.exit(f"error: --gamma must be in (0, 1], got {self.gamma}")
        if self.env_id not in gym.registry:
            sys.exit(f"error: unknown --env-id {self.env_id!r}: not in gymnasium's registry")
        if self.total_timesteps < self.num_envs:
            sys.exit(f"error: --total-timesteps ({self.total_timesteps}) must be at least --num-envs ({self.num_envs})")


def make_env(env_id: str, video_folder: str | None = None):
    def thunk() -> gym.Env:
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda e: True, disable_logger=True)

    return thunk


def check_spaces(env: gym.Env | gym.vector.VectorEnv) -> None:
    """One line on stderr and exit status 1 for the spaces this script cannot handle."""
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    action_space = getattr(env, "single_action_space", env.action_space)
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        sys.exit(f"error: ac.py needs a flat Box observation space, got {obs_space}")
    if not (isinstance(action_space, gym.spaces.Discrete) or
            (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        sys.exit(f"error: unsupported action space {action_space}: ac.py handles Discrete and flat Box actions")


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The chapter's network: two hidden layers of 64 tanh units."""
    return nn.Sequential(nn.Linear(in_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, out_dim))


class Actor(nn.Module):
    """Categorical over logits for Discrete actions; for Box actions a Gaussian whose mean is the net's output
    and whose log-std is one free parameter per action dimension (state-independent)."""

    def __init__(self, obs_dim: int, action_space: gym.Space):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        act_dim = action_space.shape[0] if self.continuous else int(action_space.n)
        self.net = mlp(obs_dim, act_dim)
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(act_dim))

    def forward(self, s: torch.Tensor) -> torch.distributions.Distribution:
        out = self.net(s)  # [policy]
        if self.continuous:  # a multivariate Gaussian with diagonal covariance: log-probs and entropies sum over dims
            return torch.distributions.Independent(
                torch.distributions.Normal(out, self.log_std.exp(), validate_args=False), 1, validate_args=False)
        return torch.distributions.Categorical(logits=out, validate_args=False)


class Critic(nn.Module):
    def __init__(self, obs_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s).squeeze(-1)  # [critic] V(s), shape [batch]


def env_actions(action: torch.Tensor, action_space: gym.Space) -> np.ndarray:
    """The actions to step the envs with: Box samples clipped to the bounds (their log-prob stays unclipped)."""
    action = action.cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(action, action_space.low, action_space.high)
    return action


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """s_{t+1} of every env's transition: `next_obs`, except where an episode ended at this step (SAME_STEP
    autoreset puts the next episode's first observation there): the true final observation from infos."""
    if "final_obs" not in infos:
        return next_obs
    ended = infos["_final_obs"]
    s_next = next_obs.copy()
    s_next[ended] = np.stack(infos["final_obs"][ended])
    return s_next


def td_target(critic: Critic, reward: torch.Tensor, s_next: torch.Tensor, terminated: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """r_t + gamma V(s_{t+1}) (1 - terminated_t): bootstraps through truncation, never through termination."""
    with torch.no_grad():
        return reward + gamma * critic(s_next) * (1.0 - terminated)  # [td]


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (argmax / mean action) over `episodes` episodes,
    episode k seeded with seed + k. `actor` may be a checkpoint path written by --save-model."""
    env = make_env(env_id, video_folder)()
    if isinstance(actor, str):
        checkpoint = torch.load(actor, weights_only=True, map_location="cpu")
        actor = Actor(env.observation_space.shape[0], env.action_space)
        actor.load_state_dict(checkpoint["actor"])
    device = next(actor.parameters()).device
    returns = np.zeros(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device)).mode
            obs, reward, terminated, truncated, _ = env.step(env_actions(action, env.action_space))
            returns[k] += reward
            done = terminated or truncated
    env.close()
    return returns


def train(args: Args) -> dict:
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    print(f"device: {device}")

    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_env([make_env(args.env_id) for _ in range(args.num_envs)],
                      autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    check_spaces(envs)
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    obs_dim, action_space = envs.single_observation_space.shape[0], envs.single_action_space
    actor, critic = Actor(obs_dim, action_space).to(device), Critic(obs_dim).to(device)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)

    num_updates = args.total_timesteps // args.num_envs
    next_obs, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    obs = as_tensor(next_obs)
    recent_returns, eval_return = deque(maxlen=20), float("nan")
    start_time = time.time()
    progress = tqdm(total=num_updates * args.num_envs, disable=None, unit="step")
    for update in range(1, num_updates + 1):
        global_step = update * args.num_envs
        dist = actor(obs)
        action = dist.sample()
        next_obs, reward, terminated, truncated, infos = envs.step(env_actions(action, action_space))
        s_next = as_tensor(final_observations(next_obs, infos))

        target = td_target(critic, as_tensor(reward), s_next, as_tensor(terminated), args.gamma)
        delta = target - critic(obs)  # [td] delta_t, with gradient for the critic
        actor_loss = -(dist.log_prob(action) * delta.detach()).mean()  # [actor] delta detached: a fixed weight
        critic_loss = 0.5 * (delta**2).mean()  # [critic-loss]
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        obs = as_tensor(next_obs)

        progress.update(args.num_envs)
        if "episode" in infos:
            for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                recent_returns.append(float(r))
                writer.add_scalar("charts/episodic_return", r, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
        if update % args.log_every == 0:
            sps = global_step / (time.time() - start_time)
            writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
            writer.add_scalar("losses/critic_loss", critic_loss.item(), global_step)
            writer.add_scalar("losses/entropy", dist.entropy().mean().item(), global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            progress.set_postfix(sps=f"{sps:.0f}", ret=f"{np.mean(recent_returns) if recent_returns else 0:.1f}")
        if global_step % args.eval_every < args.num_envs or update == num_updates:
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, seed=args.seed + 10_000).mean()
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
    progress.close()
    envs.close()

    metrics = {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
               "eval/episodic_return": float(eval_return), "charts/SPS": global_step / (time.time() - start_time),
               "global_step": global_step, "run_dir": f"runs/{run_name}"}
    if args.capture_video:
        evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video_folder=f"runs/{run_name}/videos")
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
