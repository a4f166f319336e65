"""The chapter's A2C: synchronous advantage actor-critic with N parallel envs, T-step rollouts and GAE(lambda).

`--num-envs` environments step together (gym.vector.SyncVectorEnv, or AsyncVectorEnv with --async-envs)
for `--num-steps` steps; the N x T transitions give the advantages by one backward GAE pass, and one
gradient step of one optimizer over the actor's and the critic's parameters, with the gradient norm
clipped. The actor and the critic are separate 64x64 tanh MLPs (Categorical over logits for Discrete
actions, Gaussian with a state-independent log-std for Box actions).

The chapter's equations, and the line that realises each (search for the tag):
    [policy]  pi_theta(a|s): Categorical(logits) or N(mu_theta(s), exp(log_std)^2)       Actor.forward
    [critic]  V_phi(s)                                                                     Critic.forward
    [td]      delta_t = r_t + gamma V(s_{t+1}) (1 - done_t) - V(s_t)                      compute_gae
    [gae]     A_t = sum_l (gamma lambda)^l delta_{t+l} = delta_t + gamma lambda (1 - done_t) A_{t+1}  compute_gae
    [returns] G_t = A_t + V(s_t), the critic's target                                      compute_gae
    [loss]    L = -E[log pi(a_t|s_t) A_t] + c1 * 1/2 E[(V(s_t) - G_t)^2] - c2 * E[H(pi(.|s_t))]   train
              (c1 = --vf-coef, c2 = --ent-coef; A_t and G_t are constants in L)

Time limits: the vector env uses gymnasium's SAME_STEP autoreset: the step at which an episode ends
returns the first observation of the next episode, and the true last one in infos["final_obs"]. Every
episode end is a `done` for compute_gae (no bootstrap across two episodes); where a time limit truncated
the episode (and the task did not terminate it), `time_limit_rewards` folds the value the episode would
have gone on to earn into that step's reward, r_t + gamma V(final obs), so compute_gae stays as the
chapter writes it.
Box actions: the sample a_t ~ N(mu, sigma^2) is clipped to the action bounds only to step the env.

Observation normalisation (--normalize-obs): gymnasium's NormalizeObservation wrapper on every
sub-env (its vector version refuses SAME_STEP autoreset); each sub-env keeps running statistics, so the
final observations in infos are normalised like the others. Evaluation and checkpoints use those
statistics merged over the envs (`merged_obs_stats`), frozen: the checkpoint stores them under "obs_rms"
and `evaluate(path, ...)` applies them, so a loaded actor sees what it was trained on.

Run:  python a2c.py                                                      # CartPole-v1, 100k steps, ~11 CPU s
      python a2c.py --env-id InvertedPendulum-v4                              # Gaussian actions, ~12 CPU s
      python a2c.py --num-envs 32 --async-envs --normalize-obs                # envs in subprocesses, normalised obs
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
    """save a checkpoint (networks, optimizer, Args, observation statistics) to runs/<run>/a2c.pt"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (flat Box observations; Discrete or Box actions)"""
    total_timesteps: int = 100_000
    """environment steps in total, all environments together"""
    num_envs: int = 8
    """N: environments stepped together"""
    gamma: float = 0.99
    """the discount factor gamma"""
    eval_every: int = 20_000
    """evaluate the deterministic policy (argmax / mean action) every this many environment steps"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    async_envs: bool = False
    """step the environments in subprocesses (gym.vector.AsyncVectorEnv) instead of in this one"""
    num_steps: int = 5
    """T: steps per environment in each rollout (one update per N x T transitions)"""
    gae_lambda: float = 0.95
    """lambda of GAE: 0 gives the TD residual, 1 the Monte Carlo return minus V"""
    learning_rate: float = 3e-3
    """Adam's step size for the actor and the critic together"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the run"""
    vf_coef: float = 0.5
    """c1: weight of the value loss"""
    ent_coef: float = 0.01
    """c2: weight of the entropy bonus"""
    max_grad_norm: float = 10.0
    """clip the global norm of the gradient (actor and critic together) to this"""
    normalize_obs: bool = False
    """normalise observations by running statistics (gymnasium's NormalizeObservation on each env)"""
    log_every: int = 10
    """write losses and SPS to TensorBoard every this many updates"""

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "threads", "eval_every", "eval_episodes", "num_steps",
                     "learning_rate", "max_grad_norm", "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("vf_coef", "ent_coef"):
            if getattr(self, name) < 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be non-negative, got {getattr(self, name)}")
        if not 0 < self.gamma <= 1:
            sys.exit(f"error: --gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.gae_lambda <= 1:
            sys.exit(f"error: --gae-lambda must be in [0, 1], got {self.gae_lambda}")
        if self.env_id not in gym.registry:
            sys.exit(f"error: unknown --env-id {self.env_id!r}: not in gymnasium's registry")
        if self.total_timesteps < self.num_envs * self.num_steps:
            sys.exit(f"error: --total-timesteps ({self.total_timesteps}) must be at least --num-envs x --num-steps "
                     f"({self.num_envs * self.num_steps})")


def make_env(env_id: str, video_folder: str | None = None, normalize_obs: bool = False):
    def thunk() -> gym.Env:
        env = gym.make(env_id, render_mode=None if video_folder is None else "rgb_array")
        if video_folder is not None:
            env = gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda e: True, disable_logger=True)
        if normalize_obs:
            env = gym.wrappers.NormalizeObservation(env)
        return env

    return thunk


def check_spaces(env: gym.Env | gym.vector.VectorEnv) -> None:
    """One line on stderr and exit status 1 for the spaces this script cannot handle."""
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    action_space = getattr(env, "single_action_space", env.action_space)
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        sys.exit(f"error: a2c.py needs a flat Box observation space, got {obs_space}")
    if not (isinstance(action_space, gym.spaces.Discrete) or
            (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        sys.exit(f"error: unsupported action space {action_space}: a2c.py handles Discrete and flat Box actions")


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


def time_limit_rewards(critic: Critic, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                       infos: dict, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards, dones) of one vector step for compute_gae: done where the episode ended either way, and where
    a time limit truncated it (the task did not terminate), r_t + gamma V(true final observation)."""
    device = next(critic.parameters()).device
    reward = torch.as_tensor(reward, dtype=torch.float32, device=device)
    cut = truncated & ~terminated
    if cut.any():
        final_obs = torch.as_tensor(np.stack(infos["final_obs"][cut]), dtype=torch.float32, device=device)
        with torch.no_grad():
            reward[torch.as_tensor(cut, device=device)] += gamma * critic(final_obs)
    return reward, torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The chapter's backward GAE pass, vectorised over the N envs. rewards, values (V(s_t)), dones: [T, N];
    last_value: [N], V of the state after the rollout. dones[t] = 1: the episode ended after a_t, so no
    bootstrap from step t + 1. Returns (advantages, returns), both [T, N]. O(T), no network calls."""
    advantages = torch.zeros_like(rewards)
    gae, next_value = torch.zeros_like(last_value), last_value
    for t in reversed(range(rewards.shape[0])):
        mask = 1.0 - dones[t]  # 0 at an episode boundary
        delta = rewards[t] + gamma * next_value * mask - values[t]  # [td]
        gae = delta + gamma * lam * mask * gae  # [gae]
        advantages[t] = gae
        next_value = values[t]
    return advantages, advantages + values  # [returns]


def merged_obs_stats(envs: gym.vector.VectorEnv) -> dict:
    """The sub-envs' NormalizeObservation statistics pooled into one mean, variance and count (as tensors).
    `envs` is the Sync/AsyncVectorEnv itself (vector wrappers do not pass get_attr on)."""
    stats = envs.get_attr("obs_rms")
    counts = np.array([s.count for s in stats])
    means, variances = np.stack([s.mean for s in stats]), np.stack([s.var for s in stats])
    weights = (counts / counts.sum())[:, None]
    mean = (weights * means).sum(0)
    var = (weights * (variances + (means - mean) ** 2)).sum(0)
    return {"mean": torch.as_tensor(mean), "var": torch.as_tensor(var), "count": float(counts.sum())}


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None,
             obs_rms: dict | None = None) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (argmax / mean action) over `episodes` episodes,
    episode k seeded with seed + k. `actor` may be a checkpoint path written by --save-model (its observation
    statistics come with it); otherwise `obs_rms` (from merged_obs_stats) when the actor was trained on
    normalised observations. The statistics stay frozen during evaluation."""
    if isinstance(actor, str):
        checkpoint = torch.load(actor, weights_only=True, map_location="cpu")
        obs_rms = checkpoint["obs_rms"]
    env = make_env(env_id, video_folder, normalize_obs=obs_rms is not None)()
    if obs_rms is not None:
        env.update_running_mean = False
        env.obs_rms.mean, env.obs_rms.var = obs_rms["mean"].numpy(), obs_rms["var"].numpy()
        env.obs_rms.count = obs_rms["count"]
    if isinstance(actor, str):
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
    envs = vector_env([make_env(args.env_id, normalize_obs=args.normalize_obs) for _ in range(args.num_envs)],
                      autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    check_spaces(envs)
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    obs_dim, action_space = envs.single_observation_space.shape[0], envs.single_action_space
    actor, critic = Actor(obs_dim, action_space).to(device), Critic(obs_dim).to(device)
    params = [*actor.parameters(), *critic.parameters()]
    optimizer = torch.optim.Adam(params, lr=args.learning_rate)
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)

    T, N = args.num_steps, args.num_envs
    observations = torch.zeros((T, N, obs_dim), device=device)
    actions = torch.zeros((T, N, *action_space.shape), device=device,
                          dtype=torch.float32 if actor.continuous else torch.long)
    rewards, dones, values = (torch.zeros((T, N), device=device) for _ in range(3))

    num_updates = args.total_timesteps // (T * N)
    next_obs, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    obs = as_tensor(next_obs)
    recent_returns, eval_return, global_step = deque(maxlen=20), float("nan"), 0
    obs_rms = lambda: merged_obs_stats(envs.unwrapped) if args.normalize_obs else None
    start_time = time.time()
    progress = tqdm(total=num_updates * T * N, disable=None, unit="step")
    for update in range(1, num_updates + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1 - (update - 1) / num_updates)
        for t in range(T):  # the rollout: T steps of the N envs with the current policy
            global_step += N
            with torch.no_grad():
                action = actor(obs).sample()
                values[t] = critic(obs)
            observations[t], actions[t] = obs, action
            next_obs, reward, terminated, truncated, infos = envs.step(env_actions(action, action_space))
            rewards[t], dones[t] = time_limit_rewards(critic, reward, terminated, truncated, infos, args.gamma)
            obs = as_tensor(next_obs)
            if "episode" in infos:
                for r, length in zip(infos["episode"]["r"][infos["_episode"]],
                                     infos["episode"]["l"][infos["_episode"]]):
                    recent_returns.append(float(r))
                    writer.add_scalar("charts/episodic_return", r, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)
        with torch.no_grad():
            advantages, returns = compute_gae(rewards, values, dones, critic(obs), args.gamma, args.gae_lambda)

        dist = actor(observations.flatten(0, 1))
        actor_loss = -(dist.log_prob(actions.flatten(0, 1)) * advantages.flatten()).mean()
        value_loss = 0.5 * ((critic(observations.flatten(0, 1)) - returns.flatten()) ** 2).mean()
        entropy = dist.entropy().mean()
        loss = actor_loss + args.vf_coef * value_loss - args.ent_coef * entropy  # [loss]
        optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()

        progress.update(T * N)
        if update % args.log_every == 0:
            sps = global_step / (time.time() - start_time)
            for name, value in (("actor_loss", actor_loss), ("value_loss", value_loss), ("entropy", entropy),
                                ("grad_norm", grad_norm)):
                writer.add_scalar(f"losses/{name}", value.item(), global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
            writer.add_scalar("charts/SPS", sps, global_step)
            progress.set_postfix(sps=f"{sps:.0f}", ret=f"{np.mean(recent_returns) if recent_returns else 0:.1f}")
        if global_step % args.eval_every < T * N or update == num_updates:
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, obs_rms=obs_rms()).mean()
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
    progress.close()

    metrics = {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
               "eval/episodic_return": float(eval_return), "charts/SPS": global_step / (time.time() - start_time),
               "global_step": global_step, "run_dir": f"runs/{run_name}"}
    if args.capture_video:
        evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video_folder=f"runs/{run_name}/videos",
                 obs_rms=obs_rms())
    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(), "optimizer": optimizer.state_dict(),
                    "args": asdict(args), "obs_rms": obs_rms()}, path)
        print(f"model saved to {path}")
        metrics["model_path"] = path
    envs.close()
    writer.close()
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


if __name__ == "__main__":
    train(tyro.cli(Args))
