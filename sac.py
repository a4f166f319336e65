"""Soft Actor-Critic (Haarnoja et al., 2018): a squashed-Gaussian actor, twin critics, automatic temperature.

SAC maximises the entropy-augmented return sum_t E[r_t + alpha H(pi(.|s_t))] (chapter: "SAC maximizes
entropy-augmented return"). Off-policy: transitions go to a replay buffer on the training device, and every
environment step (after `--learning-starts` uniform-random steps) is followed by `--updates-per-step`
gradient updates on uniformly sampled minibatches.

The chapter's equations, and the line that realises each (search for the tag):
    [reparam]      u = mu(s) + sigma(s) * eps, eps ~ N(0, I);  a = tanh(u) * scale + bias         Actor.get_action
    [tanh-logprob] log pi(a|s) = sum_i [log N(u_i; mu_i, sigma_i) - log(1 - tanh(u_i)^2) - log scale_i]
                   with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|  Actor.get_action
    [twin-q]       two critics Q_1, Q_2 and two targets, stacked into one batched module            Critic.forward
    [soft-target]  y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
                   the clipped double-Q soft Bellman target                                        soft_q_target
    [critic-loss]  J_Q = sum_j 1/2 E[(Q_j(s, a) - y)^2]                                           update_critic
    [actor-loss]   J_pi = E[alpha log pi(a|s) - min_j Q_j(s, a)],  a reparameterised              update_actor
    [alpha-loss]   J(alpha) = E[-alpha (log pi(a|s) + H_target)],  H_target = -|A|                update_temperature
    [polyak]       phi'_j <- tau phi_j + (1 - tau) phi'_j                                          update_targets

Conventions of this file:
- log pi is the density of the action in the ENVIRONMENT's units: it includes the Jacobian of the affine map
  from (-1, 1) to [low, high] (the "- log scale" term). This shifts log pi by a constant, sum_i log scale_i
  (zero where the bounds are [-1, 1], as on the MuJoCo tasks), and the critics take env-unit actions, the
  units the replay buffer stores.
- Vector envs use gymnasium's SAME_STEP autoreset: the step that ends an episode returns the next episode's
  first observation, and the true last observation in infos["final_obs"]. The buffer stores that true s'
  (`env_step`), and `terminated`, never `truncated`, stops the bootstrap: at a time limit the
  target still bootstraps from Q'(s_final, a'). No reset step is ever stored as a transition.
- charts/SPS counts the learning phase only: (global_step - learning_starts) / seconds since the first update.

Speed (one update = the same maths as the paper, done with less overhead): both critics are one module of
stacked weights run with torch.baddbmm; the target critic and the actor on s' run once per update; the actor
update calls the critics with detached weights (no weight gradients are computed for them); the temperature
loss reuses the actor update's log-probabilities; targets move with one torch._foreach_lerp_; alpha stays a
tensor and scalars are read (a host sync) only every --log-every updates; Adam is the fused kernel. --compile
runs the update functions through torch.compile; --cudagraphs (GPU only) also replays them as CUDA graphs (fused
Adam keeps its step count on the device, so a graph can replay it). Measured on one CPU thread (Hopper shapes),
an eager update takes about 2x the time of its bare matrix products; benchmarks/offpolicy_sac.py measures it.

Run:  python sac.py --env-id Pendulum-v1 --total-timesteps 10000   # ~1 CPU-minute; evaluation return about -140
      python sac.py --env-id Hopper-v4 --cuda                       # the headline run (1M steps)
      tensorboard --logdir runs
"""

import math
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
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    """Soft Actor-Critic. Step counts are environment steps, all envs together. charts/SPS counts the learning
    phase only: (global_step - learning_starts) / seconds since the first update."""

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
    """record the evaluation episodes to runs/<run>/videos/<global_step>/"""
    save_model: bool = False
    """save a checkpoint (networks, optimizers, log alpha, Args) to runs/<run>/<exp_name>.pt"""
    env_id: str = "Hopper-v4"
    """the gymnasium environment id (continuous actions only)"""
    total_timesteps: int = 1_000_000
    """environment steps in total, all envs together"""
    num_envs: int = 1
    """parallel environments (SyncVectorEnv); each vector step adds num_envs transitions"""
    gamma: float = 0.99
    """the discount factor gamma"""
    eval_every: int = 5_000
    """evaluate the deterministic policy (the squashed mean action) every this many environment steps"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded seed + 10000 + k"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (preallocated on the training device; the oldest are overwritten)"""
    tau: float = 0.005
    """target smoothing coefficient: phi' <- tau phi + (1 - tau) phi' after every update"""
    batch_size: int = 256
    """transitions per minibatch"""
    learning_starts: int = 5_000
    """environment steps of uniform-random actions before the first update (CleanRL's SAC default)"""
    updates_per_step: float = 1.0
    """gradient updates per environment step, all envs together: with --num-envs 4 the default does 4 updates
    per vector step; 0.5 does one update every two environment steps"""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor (the SAC paper's 3e-4)"""
    q_lr: float = 3e-4
    """Adam learning rate of the two critics (the SAC paper's 3e-4)"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log alpha with --autotune (the SAC paper's 3e-4)"""
    policy_frequency: int = 1
    """update the actor and the temperature once every this many critic updates (1 in the SAC paper)"""
    autotune: bool = True
    """learn the temperature alpha so that the policy's entropy tracks -|A| (alpha starts at 1)"""
    alpha: float = 0.2
    """the fixed temperature with --no-autotune"""
    log_every: int = 100
    """write losses to TensorBoard every this many updates (each write reads the device: a host sync)"""
    compile: bool = False
    """torch.compile the update functions (the first updates wait for it to compile; on a CPU with torch 2.13 the
    compiled update measured slower than eager: see benchmarks/offpolicy_sac.py)"""
    cudagraphs: bool = False
    """with CUDA: also capture the compiled updates as CUDA graphs (torch.compile mode "reduce-overhead")"""

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "eval_every", "eval_episodes", "buffer_size", "batch_size",
                     "updates_per_step", "policy_lr", "q_lr", "alpha_lr", "policy_frequency", "alpha", "threads",
                     "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.learning_starts < 0:
            sys.exit(f"error: --learning-starts must be non-negative, got {self.learning_starts}")
        if -(-self.learning_starts // self.num_envs) >= self.total_timesteps // self.num_envs:  # in vector steps
            sys.exit(f"error: --learning-starts ({self.learning_starts}) must be smaller than --total-timesteps "
                     f"({self.total_timesteps})")
        if not 0 < self.gamma <= 1:
            sys.exit(f"error: --gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.tau <= 1:
            sys.exit(f"error: --tau must be in (0, 1], got {self.tau}")
        if self.buffer_size < self.num_envs:
            sys.exit(f"error: --buffer-size ({self.buffer_size}) must hold one vector step ({self.num_envs} envs)")
        if self.env_id not in gym.registry:
            sys.exit(f"error: unknown --env-id {self.env_id!r}")
        if self.cudagraphs and not (self.cuda and torch.cuda.is_available()):
            sys.exit("error: --cudagraphs needs a CUDA device (and --cuda)")


def make_env(env_id: str, video_folder: str | None = None):
    def thunk():
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda e: True, disable_logger=True)

    return thunk


class Actor(nn.Module):
    """Squashed Gaussian policy: a 256x256 MLP gives mean and log std of u; a = tanh(u) rescaled to the bounds."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, hidden: int = 256):
        super().__init__()
        act_dim = action_space.shape[0]
        self.backbone = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.mean_layer = nn.Linear(hidden, act_dim)
        self.log_std_layer = nn.Linear(hidden, act_dim)
        low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (action_space.low, action_space.high))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(obs)
        return self.mean_layer(h), self.log_std_layer(h).clamp(-20, 2)  # the chapter's clamp, for stability

    def get_action(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sampled action [B, A], its log-probability [B], deterministic action [B, A]), in the env's units."""
        mean, log_std = self(obs)
        normal = torch.distributions.Normal(mean, log_std.exp(), validate_args=False)
        u = normal.rsample()  # [reparam] u = mu + sigma * eps: differentiable in the actor's parameters
        action = torch.tanh(u) * self.action_scale + self.action_bias
        log_tanh_jacobian = 2 * (math.log(2) - u - F.softplus(-2 * u))  # log(1 - tanh(u)^2)
        log_prob = (normal.log_prob(u) - log_tanh_jacobian - self.action_scale.log()).sum(-1)  # [tanh-logprob]
        return action, log_prob, torch.tanh(mean) * self.action_scale + self.action_bias


class Critic(nn.Module):
    """`n` Q-networks (256x256 MLPs on [s, a]) as one module: layer weights stacked on a leading axis of size n
    and applied with torch.baddbmm, so both critics cost one batched matrix product per layer. Each critic is
    initialised exactly as nn.Linear layers would be. forward returns Q_j(s, a) for every j, shaped [n, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 256, n: int = 2):
        super().__init__()
        sizes = [obs_dim + act_dim, hidden, hidden, 1]
        layers = [[nn.Linear(i, o) for _ in range(n)] for i, o in zip(sizes[:-1], sizes[1:])]
        self.weights = nn.ParameterList([torch.stack([lin.weight.T for lin in layer]) for layer in layers])  # [n,i,o]
        self.biases = nn.ParameterList([torch.stack([lin.bias[None] for lin in layer]) for layer in layers])  # [n,1,o]

    def forward(self, obs: torch.Tensor, actions: torch.Tensor, detach_weights: bool = False) -> torch.Tensor:
        """detach_weights: gradients flow to the inputs (the actions) but no weight gradients are computed."""
        x = torch.cat([obs, actions], -1).expand(len(self.weights[0]), -1, -1)  # [n, B, obs_dim + act_dim]
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            if detach_weights:
                w, b = w.detach(), b.detach()
            x = torch.baddbmm(b, x, w)  # [twin-q] x_j @ W_j + b_j for every critic j at once
            if k < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)


class ReplayBuffer:
    """Preallocated float32 tensors on `device`; `add` writes a vector step of transitions at once (wrapping
    around to overwrite the oldest), `sample` draws uniform indices with torch.randint on the same device."""

    def __init__(self, size: int, obs_dim: int, act_dim: int, device: torch.device):
        self.size, self.device, self.pos, self.count = size, device, 0, 0
        self.obs = torch.zeros(size, obs_dim, device=device)
        self.next_obs = torch.zeros(size, obs_dim, device=device)
        self.actions = torch.zeros(size, act_dim, device=device)
        self.rewards = torch.zeros(size, device=device)
        self.terminations = torch.zeros(size, device=device)

    def add(self, obs, next_obs, actions, rewards, terminations):
        """Each argument holds one entry per env (numpy arrays from the vector env)."""
        n = len(obs)
        index = torch.arange(self.pos, self.pos + n, device=self.device) % self.size
        for name, value in (("obs", obs), ("next_obs", next_obs), ("actions", actions), ("rewards", rewards),
                            ("terminations", terminations)):
            getattr(self, name)[index] = torch.as_tensor(value, dtype=torch.float32, device=self.device)
        self.pos = (self.pos + n) % self.size
        self.count = min(self.count + n, self.size)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """(obs, next_obs, actions, rewards, terminations) of `batch_size` uniformly drawn stored transitions."""
        index = torch.randint(0, self.count, (batch_size,), device=self.device)
        return self.obs[index], self.next_obs[index], self.actions[index], self.rewards[index], self.terminations[index]


def env_step(envs, rb: ReplayBuffer, obs: np.ndarray, actions: np.ndarray):
    """One vector step, its transitions stored. SAME_STEP autoreset: where an episode ended (terminated or truncated)
    next_obs already holds the next episode's first observation, and the true s' is in infos["final_obs"]."""
    next_obs, rewards, terminations, truncations, infos = envs.step(actions)
    real_next_obs = next_obs.copy()
    for i in np.flatnonzero(infos.get("_final_obs", [])):
        real_next_obs[i] = infos["final_obs"][i]
    rb.add(obs, real_next_obs, actions, rewards, terminations)  # terminated, not truncated, ends the bootstrap
    return next_obs, rewards, terminations, truncations, infos


def soft_q_target(rewards, terminations, next_q, next_log_prob, alpha, gamma: float) -> torch.Tensor:
    """next_q: [n, B] target-critic values at (s', a'), a' ~ pi(.|s'); terminations: 1.0 where s' is terminal."""
    # [soft-target] y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s'))
    return rewards + gamma * (1 - terminations) * (next_q.min(0).values - alpha * next_log_prob)


def update_critic(batch, actor: Actor, qf: Critic, qf_target: Critic, q_optimizer, log_alpha, gamma: float):
    obs, next_obs, actions, rewards, terminations = batch
    with torch.no_grad():  # the actor and the target critics run once, on s'
        next_actions, next_log_prob, _ = actor.get_action(next_obs)
        target = soft_q_target(rewards, terminations, qf_target(next_obs, next_actions), next_log_prob,
                               log_alpha.exp(), gamma)
    qf_loss = 0.5 * ((qf(obs, actions) - target) ** 2).mean(1).sum()  # [critic-loss], summed over both critics
    q_optimizer.zero_grad()
    qf_loss.backward()
    q_optimizer.step()
    return qf_loss.detach()


def update_actor(obs, actor: Actor, qf: Critic, actor_optimizer, log_alpha):
    """Returns the actor loss and the (detached) log-probabilities of its actions, for the temperature loss."""
    actions, log_prob, _ = actor.get_action(obs)
    q = qf(obs, actions, detach_weights=True).min(0).values  # the critics' weights get no gradient
    actor_loss = (log_alpha.exp().detach() * log_prob - q).mean()  # [actor-loss]
    actor_optimizer.zero_grad()
    actor_loss.backward()
    actor_optimizer.step()
    return actor_loss.detach(), log_prob.detach()


def update_temperature(log_prob, log_alpha, alpha_optimizer, target_entropy: float):
    alpha_loss = -(log_alpha.exp() * (log_prob + target_entropy)).mean()  # [alpha-loss]
    alpha_optimizer.zero_grad()
    alpha_loss.backward()
    alpha_optimizer.step()
    return alpha_loss.detach()


def update_targets(qf: Critic, qf_target: Critic, tau: float):
    with torch.no_grad():
        torch._foreach_lerp_(list(qf_target.parameters()), list(qf.parameters()), tau)  # [polyak]


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (the squashed mean action), episode k seeded seed + k.

    `actor` may be a checkpoint path written by --save-model."""
    env = make_env(env_id, video_folder)()
    if isinstance(actor, str):
        checkpoint = torch.load(actor, weights_only=True, map_location="cpu")
        loaded = Actor(env.observation_space.shape[0], env.action_space)
        loaded.load_state_dict(checkpoint["actor"])
        actor = loaded
    device = actor.action_scale.device
    returns = np.zeros(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            with torch.no_grad():
                _, _, action = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device)[None])
            obs, reward, terminated, truncated, _ = env.step(action[0].cpu().numpy())
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

    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    if not isinstance(envs.single_action_space, gym.spaces.Box):
        sys.exit(f"error: sac.py needs a continuous (Box) action space; {args.env_id} has {envs.single_action_space}")
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]

    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    actor = Actor(obs_dim, envs.single_action_space).to(device)
    qf = Critic(obs_dim, act_dim).to(device)
    qf_target = Critic(obs_dim, act_dim).to(device)
    qf_target.load_state_dict(qf.state_dict())
    # fused Adam: one kernel per step (2.5x faster than the default on a CPU), and its step count lives on the device,
    # so a CUDA graph can replay it (--cudagraphs)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    q_optimizer = torch.optim.Adam(qf.parameters(), lr=args.q_lr, fused=True)
    target_entropy = -float(act_dim)  # H_target = -|A|
    log_alpha = torch.tensor(0.0 if args.autotune else math.log(args.alpha), device=device,
                             requires_grad=args.autotune)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.alpha_lr, fused=True) if args.autotune else None
    rb = ReplayBuffer(args.buffer_size, obs_dim, act_dim, device)

    critic_step, actor_step, temperature_step = update_critic, update_actor, update_temperature
    if args.compile or args.cudagraphs:
        mode = "reduce-overhead" if args.cudagraphs else None
        critic_step, actor_step, temperature_step = (torch.compile(f, mode=mode) for f in
                                                     (update_critic, update_actor, update_temperature))

    num_iterations = args.total_timesteps // args.num_envs
    random_iterations = -(-args.learning_starts // args.num_envs)  # learning_starts rounded up to whole vector steps
    obs, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    recent_returns, eval_return, num_updates, sps = deque(maxlen=20), float("nan"), 0, float("nan")
    progress = tqdm(total=num_iterations * args.num_envs, disable=None, unit="step")
    for iteration in range(num_iterations):
        global_step = (iteration + 1) * args.num_envs
        if iteration < random_iterations:
            actions = envs.action_space.sample()
        else:
            with torch.no_grad():
                actions, _, _ = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))
            actions = actions.cpu().numpy()
        obs, _, _, _, infos = env_step(envs, rb, obs, actions)
        if "episode" in infos:
            for r, length in zip(infos["episode"]["r"][infos["_episode"]], infos["episode"]["l"][infos["_episode"]]):
                recent_returns.append(float(r))
                writer.add_scalar("charts/episodic_return", r, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)
            progress.set_postfix(ret=f"{np.mean(recent_returns):.1f}", sps=f"{sps:.0f}")
        progress.update(args.num_envs)

        if iteration >= random_iterations:
            if iteration == random_iterations:
                start_time, start_step = time.time(), global_step - args.num_envs
            # updates_per_step updates per env step, counted over the learning phase
            while num_updates < int((global_step - start_step) * args.updates_per_step):
                num_updates += 1
                if args.cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the last update's graph outputs may be overwritten
                batch = rb.sample(args.batch_size)
                qf_loss = critic_step(batch, actor, qf, qf_target, q_optimizer, log_alpha, args.gamma)
                if num_updates % args.policy_frequency == 0:  # the actor learns on the same minibatch's states
                    actor_loss, log_prob = actor_step(batch[0], actor, qf, actor_optimizer, log_alpha)
                    if args.autotune:
                        alpha_loss = temperature_step(log_prob, log_alpha, alpha_optimizer, target_entropy)
                update_targets(qf, qf_target, args.tau)
                if num_updates % args.log_every == 0:
                    sps = (global_step - start_step) / (time.time() - start_time)
                    writer.add_scalar("losses/qf_loss", qf_loss.item(), global_step)
                    writer.add_scalar("losses/alpha", log_alpha.exp().item(), global_step)
                    writer.add_scalar("charts/SPS", sps, global_step)
                    if num_updates >= args.policy_frequency:  # the actor has been updated
                        writer.add_scalar("losses/actor_loss", actor_loss.item(), global_step)
                        writer.add_scalar("losses/entropy", -log_prob.mean().item(), global_step)
                        if args.autotune:
                            writer.add_scalar("losses/alpha_loss", alpha_loss.item(), global_step)
        if global_step % args.eval_every < args.num_envs or iteration == num_iterations - 1:
            video_folder = f"runs/{run_name}/videos/{global_step}" if args.capture_video else None
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video_folder).mean()
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
    progress.close()
    envs.close()

    metrics = {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
               "eval/episodic_return": float(eval_return), "global_step": global_step,
               "charts/SPS": (global_step - start_step) / (time.time() - start_time),
               "alpha": log_alpha.exp().item(), "num_updates": num_updates, "run_dir": f"runs/{run_name}"}
    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        checkpoint = {"actor": actor.state_dict(), "qf": qf.state_dict(), "qf_target": qf_target.state_dict(),
                      "actor_optimizer": actor_optimizer.state_dict(), "q_optimizer": q_optimizer.state_dict(),
                      "log_alpha": log_alpha.detach().cpu(), "args": asdict(args)}
        if alpha_optimizer is not None:
            checkpoint["alpha_optimizer"] = alpha_optimizer.state_dict()
        torch.save(checkpoint, path)
        print(f"model saved to {path}")
        metrics["model_path"] = path
    writer.close()
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


if __name__ == "__main__":
    train(tyro.cli(Args))
