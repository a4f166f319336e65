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
                   the clipped double-Q soft Bellman target                                        td_target
    [critic-loss]  J_Q = sum_j 1/2 E[(Q_j(s, a) - y)^2]                                           update_critic
    [actor-loss]   J_pi = E[alpha log pi(a|s) - min_j Q_j(s, a)],  a reparameterised              update_actor
    [alpha-loss]   J(alpha) = E[-alpha (log pi(a|s) + H_target)],  H_target = -|A|                update_temperature
    [polyak]       phi'_j <- tau phi_j + (1 - tau) phi'_j                                          polyak_update

Conventions of this file:
- log pi is the density of the action in the ENVIRONMENT's units: it includes the Jacobian of the affine map
  from (-1, 1) to [low, high] (the "- log scale" term). This shifts log pi by a constant, sum_i log scale_i
  (zero where the bounds are [-1, 1], as on the MuJoCo tasks), and the critics take env-unit actions, the
  units the replay buffer stores.
- Vector envs use gymnasium's SAME_STEP autoreset: the step that ends an episode returns the next episode's
  first observation, and the true last observation in infos["final_obs"]. The buffer stores that true s'
  (`final_observations`), and `terminated`, never `truncated`, stops the bootstrap: at a time limit the
  target still bootstraps from Q'(s_final, a'). No reset step is ever stored as a transition.

Speed (one update per env step costs a few matrix products of 256 x 256; the rest is overhead):
  - both critics (and both targets) are ONE module with stacked weights: a torch.baddbmm per layer (Critic);
  - the actor and the target critics run once per update on s'; the actor update runs the critics with their
    weights detached, so no weight gradients are computed for them there; the temperature loss reuses the actor
    update's log-probabilities;
  - Adam is `fused` (one kernel for all weights); target updates are one torch._foreach_lerp_;
  - --compile runs the update functions (losses, backward and optimizer step) through torch.compile; with
    --cudagraphs (GPU only) they are also replayed as CUDA graphs (fused Adam keeps its step count on the device);
  - the replay buffer lives on the training device; alpha stays a tensor, and losses are read back (a host
    sync) only every --log-every env steps. benchmarks/speed.py measures all of it.

Run:  python sac.py --env-id Hopper-v4 --cuda                       # the 1M-step MuJoCo benchmark (hours on a CPU)
      python sac.py --env-id Pendulum-v1 --total-timesteps 10000   # ~1 CPU-minute; evaluation return about -140
      tensorboard --logdir runs
"""

import copy
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
import torch._functorch.config
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    """Soft Actor-Critic on a gymnasium env with continuous actions. Step counts are environment steps, all envs
    together. charts/SPS counts the learning phase only: (global_step - learning_starts) / seconds since learning
    started (evaluations included)."""

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
    """record the final evaluation's episodes to runs/<run>/videos"""
    save_model: bool = False
    """save a checkpoint (networks, target critics, optimizers, log alpha, Args) to runs/<run>/<exp-name>.pt"""
    env_id: str = "Hopper-v4"
    """the gymnasium environment id (continuous, Box action space)"""
    total_timesteps: int = 1_000_000
    """environment steps in total, all envs together"""
    num_envs: int = 1
    """parallel environments (SyncVectorEnv); each vector step adds num_envs transitions"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (preallocated on the training device; the oldest are overwritten)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: phi' <- tau phi + (1 - tau) phi' after every update"""
    batch_size: int = 256
    """transitions per gradient update, sampled uniformly from the replay buffer"""
    learning_starts: int = 5_000
    """env steps (all envs together) of uniformly random actions before learning starts (CleanRL's SAC: 5k)"""
    updates_per_step: float = 1.0
    """gradient updates per environment step, all envs together: --num-envs 4 does 4 updates per vector step at
    the default 1.0 (SAC's one update per env step); 0.5 does one every second env step"""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor (the SAC paper's 3e-4)"""
    q_lr: float = 3e-4
    """Adam learning rate of the two critics (the SAC paper's 3e-4)"""
    policy_frequency: int = 1
    """update the actor and the temperature once every this many critic updates (1 in the SAC paper)"""
    autotune: bool = True
    """learn the temperature alpha so that the policy's entropy tracks -|A| (alpha starts at 1)"""
    alpha: float = 0.2
    """the fixed temperature with --no-autotune"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log alpha with --autotune (the SAC paper's 3e-4)"""
    eval_every: int = 5_000
    """evaluate the deterministic policy (the squashed mean action) every this many env steps (and at the end)"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded seed + 10000 + k"""
    log_every: int = 100
    """write losses and SPS to TensorBoard every this many env steps (the updates sync with the host only then)"""
    compile: bool = False
    """torch.compile the update functions (the first updates wait ~30 s for it; on a CPU, no faster than eager)"""
    cudagraphs: bool = False
    """with CUDA: also replay the compiled updates as CUDA graphs (torch.compile mode "reduce-overhead")"""

    def __post_init__(self):
        for name in ("total_timesteps", "num_envs", "buffer_size", "batch_size", "updates_per_step", "policy_lr",
                     "q_lr", "policy_frequency", "alpha", "alpha_lr", "threads", "eval_every", "eval_episodes",
                     "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.learning_starts < 0:
            sys.exit(f"error: --learning-starts must not be negative, got {self.learning_starts}")
        if not 0 < self.gamma <= 1:
            sys.exit(f"error: --gamma must be in (0, 1], got {self.gamma}")
        if not 0 < self.tau <= 1:
            sys.exit(f"error: --tau must be in (0, 1], got {self.tau}")
        if -(-self.learning_starts // self.num_envs) >= self.total_timesteps // self.num_envs:  # in vector steps
            sys.exit(f"error: --learning-starts ({self.learning_starts}) must be below --total-timesteps "
                     f"({self.total_timesteps}), or no update would run")
        if self.buffer_size < self.num_envs:
            sys.exit(f"error: --buffer-size ({self.buffer_size}) must hold one step of --num-envs ({self.num_envs})")
        if self.env_id not in gym.registry:
            sys.exit(f"error: unknown --env-id {self.env_id!r} (not in gymnasium's registry)")
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

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.backbone = nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.mean_layer = nn.Linear(256, act_dim)
        self.log_std_layer = nn.Linear(256, act_dim)
        low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (action_space.low, action_space.high))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.backbone(obs)
        return self.mean_layer(h), self.log_std_layer(h).clamp(-20, 2)  # the chapter's clamp, for stability

    def squash(self, u: torch.Tensor) -> torch.Tensor:
        """a = tanh(u), rescaled from (-1, 1) to the action bounds."""
        return torch.tanh(u) * self.action_scale + self.action_bias

    def get_action(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sampled action [B, A], its log-probability [B], deterministic action [B, A]), in the env's units."""
        mean, log_std = self(obs)
        normal = torch.distributions.Normal(mean, log_std.exp(), validate_args=False)
        u = normal.rsample()  # [reparam] u = mu + sigma * eps: differentiable in the actor's parameters
        log_tanh_jacobian = 2 * (math.log(2) - u - F.softplus(-2 * u))  # log(1 - tanh(u)^2)
        log_prob = (normal.log_prob(u) - log_tanh_jacobian - self.action_scale.log()).sum(-1)  # [tanh-logprob]
        return self.squash(u), log_prob, self.squash(mean)


class Critic(nn.Module):
    """`num_critics` Q_phi_i(s, a) MLPs (256x256) as one module: the weights of each layer are stacked, and one
    torch.baddbmm per layer computes every critic. Each critic is initialised as separate nn.Linear layers
    would be. forward returns Q_phi_i(s, a) of every critic, shaped [num_critics, batch]."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box, num_critics: int = 2):
        super().__init__()
        sizes = [int(np.prod(observation_space.shape)) + int(np.prod(action_space.shape)), 256, 256, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(num_critics)]
            with torch.no_grad():
                self.weights.append(torch.stack([layer.weight.T for layer in layers]))  # [n, in, out]
                self.biases.append(torch.stack([layer.bias for layer in layers]).unsqueeze(1))  # [n, 1, out]

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """`detach` takes the weights as constants: the actor update needs the gradient with respect to the action
        only."""
        x = torch.cat([obs, action], -1)
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if detach:
                weight, bias = weight.detach(), bias.detach()
            x = torch.baddbmm(bias, x.expand(len(weight), -1, -1), weight)  # [twin-q] x W_i + b_i for every critic i
            x = torch.relu(x) if k < len(self.weights) - 1 else x.squeeze(-1)
        return x


class ReplayBuffer:
    """Transitions in tensors preallocated once on the training device; uniform sampling with torch.randint."""

    def __init__(self, size: int, observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                 device: torch.device):
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.size, self.pos, self.count, self.device = size, 0, 0, device
        self.obs = torch.zeros(size, obs_dim, device=device)
        self.next_obs = torch.zeros(size, obs_dim, device=device)
        self.actions = torch.zeros(size, act_dim, device=device)
        self.rewards = torch.zeros(size, device=device)
        self.terminations = torch.zeros(size, device=device)

    def add(self, obs, next_obs, actions, rewards, terminations):
        """Store one vector step: num_envs transitions at once, overwriting the oldest when full."""
        n = len(rewards)
        idx = torch.arange(self.pos, self.pos + n, device=self.device) % self.size
        for storage, value in ((self.obs, obs), (self.next_obs, next_obs), (self.actions, actions),
                               (self.rewards, rewards), (self.terminations, terminations)):
            value = torch.as_tensor(value, dtype=torch.float32, device=self.device)
            storage[idx] = value.reshape(n, *storage.shape[1:])
        self.pos, self.count = (self.pos + n) % self.size, min(self.count + n, self.size)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """(obs, actions, rewards, next_obs, terminations) of `batch_size` transitions drawn with replacement."""
        idx = torch.randint(self.count, (batch_size,), device=self.device)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminations[idx]


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true next states s': where an episode ended at this step (SAME_STEP autoreset), next_obs already holds
    the next episode's first observation, and the true last one is in infos["final_obs"]."""
    real_next_obs = next_obs.copy()
    if "_final_obs" in infos:
        ended = infos["_final_obs"]
        real_next_obs[ended] = np.stack(infos["final_obs"][ended])
    return real_next_obs


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, next_log_prob: torch.Tensor,
              alpha: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """y from the rewards [B], the done flags [B] (1 where terminated, 0 at a time limit or mid-episode), the target
    critics' Q_phi'_i(s', a') [num_critics, B] and log pi(a'|s') [B], a' ~ pi(.|s')."""
    return rewards + gamma * (1 - terminations) * (next_q.min(0).values - alpha * next_log_prob)  # [soft-target]


def update_critic(batch: tuple[torch.Tensor, ...], actor: Actor, critic: Critic, critic_target: Critic,
                  critic_optimizer: torch.optim.Optimizer, log_alpha: torch.Tensor, args: Args) -> torch.Tensor:
    obs, actions, rewards, next_obs, terminations = batch
    with torch.no_grad():  # the actor and both target critics, once each, on s'
        next_actions, next_log_prob, _ = actor.get_action(next_obs)
        y = td_target(rewards, terminations, critic_target(next_obs, next_actions), next_log_prob, log_alpha.exp(),
                      args.gamma)
    qf_loss = 0.5 * ((critic(obs, actions) - y) ** 2).mean(1).sum()  # [critic-loss]: both critics in one pass
    critic_optimizer.zero_grad()
    qf_loss.backward()
    critic_optimizer.step()
    return qf_loss.detach()


def update_actor(obs: torch.Tensor, actor: Actor, critic: Critic, actor_optimizer: torch.optim.Optimizer,
                 log_alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the actor loss and the (detached) log-probabilities of its actions, for the temperature loss."""
    actions, log_prob, _ = actor.get_action(obs)
    q = critic(obs, actions, detach=True).min(0).values  # the critics' weights get no gradient
    policy_loss = (log_alpha.exp().detach() * log_prob - q).mean()  # [actor-loss]
    actor_optimizer.zero_grad()
    policy_loss.backward()
    actor_optimizer.step()
    return policy_loss.detach(), log_prob.detach()


def update_temperature(log_prob: torch.Tensor, log_alpha: torch.Tensor, alpha_optimizer: torch.optim.Optimizer,
                       target_entropy: float) -> torch.Tensor:
    alpha_loss = -(log_alpha.exp() * (log_prob + target_entropy)).mean()  # [alpha-loss]
    alpha_optimizer.zero_grad()
    alpha_loss.backward()
    alpha_optimizer.step()
    return alpha_loss.detach()


@torch.no_grad()
def polyak_update(net: nn.Module, target: nn.Module, tau: float):
    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)  # [polyak] t + tau (p - t)


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None
             ) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (the squashed mean action) on a separate env, episode k
    seeded seed + k.

    `actor` may be a checkpoint path written by --save-model."""
    env = make_env(env_id, video_folder)()
    if isinstance(actor, str):
        checkpoint = torch.load(actor, weights_only=True, map_location="cpu")
        actor = Actor(env.observation_space, env.action_space)
        actor.load_state_dict(checkpoint["actor"])
    device = actor.action_scale.device
    returns = np.zeros(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            with torch.no_grad():  # the squashed mean: no noise is drawn, so evaluating leaves training's RNG alone
                mean, _ = actor(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0))
            obs, reward, terminated, truncated, _ = env.step(actor.squash(mean)[0].cpu().numpy())
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
    space = envs.single_action_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1 and np.isfinite([space.low, space.high]).all()):
        sys.exit(f"error: sac.py needs a bounded 1-D Box action space, {args.env_id} has {space}")
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    actor = Actor(envs.single_observation_space, envs.single_action_space).to(device)
    critic = Critic(envs.single_observation_space, envs.single_action_space).to(device)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    # fused: one kernel per step for all weights (2.5x faster than the default on a CPU), and its step count lives
    # on the device, so a CUDA graph can replay it (--cudagraphs)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=True)
    target_entropy = -float(space.shape[0])  # H_target = -|A|
    log_alpha = torch.tensor(0.0 if args.autotune else math.log(args.alpha), device=device,
                             requires_grad=args.autotune)
    alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.alpha_lr, fused=True) if args.autotune else None
    rb = ReplayBuffer(args.buffer_size, envs.single_observation_space, envs.single_action_space, device)
    critic_step, actor_step, temperature_step = update_critic, update_actor, update_temperature
    if args.compile or args.cudagraphs:
        # recompute ReLU masks for the backward pass: saved as bool tensors, they are slow on a CPU (speed.py relu_mask)
        torch._functorch.config.activation_memory_budget = 0.99 if device.type == "cpu" else 1.0
        mode = "reduce-overhead" if args.cudagraphs else None
        critic_step, actor_step, temperature_step = (torch.compile(f, mode=mode) for f in
                                                     (update_critic, update_actor, update_temperature))

    obs, _ = envs.reset(seed=args.seed)
    envs.action_space.seed(args.seed)
    recent_returns, eval_return, num_updates = deque(maxlen=20), float("nan"), 0
    num_iterations = args.total_timesteps // args.num_envs
    random_iterations = -(-args.learning_starts // args.num_envs)  # learning_starts rounded up to whole vector steps
    progress = tqdm(total=num_iterations * args.num_envs, disable=None, unit="step")
    for iteration in range(num_iterations):
        global_step = (iteration + 1) * args.num_envs
        if iteration < random_iterations:
            actions = envs.action_space.sample()
        else:
            with torch.no_grad():
                actions, _, _ = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))
            actions = actions.cpu().numpy()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, final_observations(next_obs, infos), actions, rewards, terminations)  # terminated, not truncated
        obs = next_obs
        if "_episode" in infos:
            for i in np.flatnonzero(infos["_episode"]):
                recent_returns.append(float(infos["episode"]["r"][i]))
                writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)

        if iteration >= random_iterations:
            if iteration == random_iterations:
                start_time, start_step = time.time(), global_step - args.num_envs
            # updates_per_step updates per env step, counted over the learning phase
            while num_updates < int((global_step - start_step) * args.updates_per_step):
                num_updates += 1
                if args.cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the last update's graph outputs may be overwritten
                batch = rb.sample(args.batch_size)
                qf_loss = critic_step(batch, actor, critic, critic_target, critic_optimizer, log_alpha, args)
                if num_updates % args.policy_frequency == 0:  # on the critic's batch's states; cloned, as logging
                    # may read them after later updates, whose CUDA graphs (--cudagraphs) overwrite their outputs
                    policy_loss, log_prob = (x.clone() for x in actor_step(batch[0], actor, critic, actor_optimizer,
                                                                           log_alpha))
                    if args.autotune:
                        alpha_loss = temperature_step(log_prob, log_alpha, alpha_optimizer, target_entropy).clone()
                polyak_update(critic, critic_target, args.tau)
            if global_step % args.log_every < args.num_envs and num_updates >= args.policy_frequency:
                sps = (global_step - start_step) / (time.time() - start_time)
                writer.add_scalar("losses/qf_loss", qf_loss.item(), global_step)
                writer.add_scalar("losses/actor_loss", policy_loss.item(), global_step)
                writer.add_scalar("losses/alpha", log_alpha.exp().item(), global_step)
                writer.add_scalar("losses/entropy", -log_prob.mean().item(), global_step)
                if args.autotune:
                    writer.add_scalar("losses/alpha_loss", alpha_loss.item(), global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                progress.set_postfix(sps=f"{sps:.0f}", ret=f"{np.mean(recent_returns):.1f}" if recent_returns else "")
        progress.update(args.num_envs)
        if global_step % args.eval_every < args.num_envs or iteration == num_iterations - 1:
            video = f"runs/{run_name}/videos" if args.capture_video and iteration == num_iterations - 1 else None
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video).mean()
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
    progress.close()
    envs.close()

    sps = (global_step - start_step) / (time.time() - start_time)
    metrics = {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
               "eval/episodic_return": float(eval_return), "charts/SPS": sps, "global_step": global_step,
               "num_updates": num_updates, "alpha": log_alpha.exp().item(), "run_dir": f"runs/{run_name}"}
    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        checkpoint = {"actor": actor.state_dict(), "critic": critic.state_dict(),
                      "critic_target": critic_target.state_dict(), "actor_optimizer": actor_optimizer.state_dict(),
                      "critic_optimizer": critic_optimizer.state_dict(), "log_alpha": log_alpha.detach().cpu(),
                      "args": asdict(args)}
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
