"""TD3: twin delayed deep deterministic policy gradient (Fujimoto et al., 2018), for continuous actions.

DDPG with three fixes against overestimation: two critics and the smaller of their targets (clipped double-Q),
noise on the target action (target policy smoothing), and an actor and targets updated only every
`policy_frequency` critic updates (delayed updates).

The chapter's equations, and the line that realises each (search for the tag):
    [explore]     a = clip(mu_theta(s) + eps, low, high),  eps ~ N(0, (sigma * scale)^2)        train
    [smoothing]   a' = clip(mu_theta'(s') + clip(eps, -c, c) * scale, low, high),  eps ~ N(0, sigma'^2)
                                                                                   smoothed_target_action
    [target]      y = r + gamma (1 - terminated) min_{i=1,2} Q_phi'_i(s', a')  (clipped double-Q)   td_target
    [critic-loss] L(phi_1, phi_2) = sum_i E[(Q_phi_i(s, a) - y)^2]                            update_critic
    [dpg]         grad_theta J = E[grad_a Q_phi_1(s, a)|_{a = mu_theta(s)} grad_theta mu_theta(s)]: the actor
                  minimises -Q_phi_1(s, mu_theta(s)), the chain rule runs through the critic      update_actor
    [delayed]     the actor and all targets are updated once every `policy_frequency` critic updates    train
    [polyak]      theta' <- tau theta + (1 - tau) theta',  phi'_i <- tau phi_i + (1 - tau) phi'_i  polyak_update
"scale" and "low, high" are the action space's half-width and bounds: the actor's tanh output in [-1, 1] is
rescaled to them, and both noises are multiplied by the half-width, so --exploration-noise 0.1 means 10% of it.

Replay and time limits: the vector envs use gymnasium's SAME_STEP autoreset. When an episode ends, the step
returns the first observation of the next episode and the true last one in infos["final_obs"]; the buffer
stores that true last observation as s' (final_observations), and `terminated` (never `truncated`) as the done
flag, so a time limit still bootstraps from Q(s', a'). No reset step is ever stored as a transition.

Speed (one update per env step costs a few matrix products of 256 x 256; the rest is overhead):
  - both critics (and both targets) are ONE module with stacked weights: a torch.baddbmm per layer (Critic);
  - the target actor and the target critics run once per update; the actor update runs only the first critic,
    with its weights detached, so no weight gradients are computed for the critics there;
  - Adam is `fused` (one kernel for all weights); target updates are one torch._foreach_lerp_ per network;
  - --compile runs the update functions (losses, backward and optimizer step) through torch.compile; with
    --cudagraphs (GPU only) they are also replayed as CUDA graphs (fused Adam keeps its step count on the device);
  - the replay buffer lives on the training device; losses are read back (a host sync) only every --log-every
    env steps. benchmarks/speed.py measures all of it.

Run:  python td3.py --env-id Hopper-v4                  # the 1M-step MuJoCo benchmark (hours on a CPU)
      python td3.py --env-id Pendulum-v1 --total-timesteps 15000 --learning-starts 1000   # minutes on a CPU
      tensorboard --logdir runs
charts/SPS counts learning-phase steps only: (global_step - learning_starts) / seconds since learning started.
"""

import copy
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
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


@dataclass
class Args:
    """TD3 on a gymnasium env with continuous actions. charts/SPS counts learning-phase env steps only:
    (global_step - learning_starts) / seconds since learning started (evaluations included)."""

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
    """save a checkpoint (networks, targets, optimizers, Args) to runs/<run>/<exp-name>.pt"""
    env_id: str = "Hopper-v4"
    """the gymnasium environment id (continuous, Box action space)"""
    total_timesteps: int = 1_000_000
    """environment steps in total, all envs together"""
    num_envs: int = 1
    """parallel environments (SyncVectorEnv); each vector step adds num_envs transitions"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (preallocated on the training device)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: theta' <- tau theta + (1 - tau) theta'"""
    batch_size: int = 256
    """transitions per gradient update, sampled uniformly from the replay buffer"""
    learning_starts: int = 25_000
    """env steps (all envs together) of uniformly random actions before learning starts (Fujimoto's TD3: 25k)"""
    updates_per_step: float = 1.0
    """critic updates per environment step, all envs together: --num-envs 4 does 4 updates per vector step at
    the default 1.0 (TD3's one update per env step); 0.5 does one every second env step"""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor"""
    q_lr: float = 3e-4
    """Adam learning rate of the critics"""
    policy_frequency: int = 2
    """update the actor and the targets once every this many critic updates (TD3's delayed updates)"""
    exploration_noise: float = 0.1
    """std of the Gaussian exploration noise, as a fraction of the action half-width"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise, as a fraction of the action half-width"""
    noise_clip: float = 0.5
    """the target smoothing noise is clipped to +-noise_clip (a fraction of the action half-width)"""
    eval_every: int = 5_000
    """evaluate the deterministic policy mu(s) every this many env steps (and at the end)"""
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
                     "q_lr", "policy_frequency", "threads", "eval_every", "eval_episodes",
                     "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("learning_starts", "exploration_noise", "policy_noise", "noise_clip"):
            if getattr(self, name) < 0:
                sys.exit(f"error: --{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
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
    def thunk() -> gym.Env:
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda e: True, disable_logger=True)

    return thunk


class Actor(nn.Module):
    """mu_theta(s): a 256x256 MLP with a tanh output in [-1, 1], rescaled to the action bounds."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        self.net = nn.Sequential(nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, act_dim), nn.Tanh())
        low, high = (torch.as_tensor(b, dtype=torch.float32) for b in (action_space.low, action_space.high))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs) * self.action_scale + self.action_bias

    def clip(self, action: torch.Tensor) -> torch.Tensor:
        """Clip an action (with noise added) to the action bounds [low, high]."""
        return torch.clamp(action, self.action_bias - self.action_scale, self.action_bias + self.action_scale)


class Critic(nn.Module):
    """`num_critics` Q_phi_i(s, a) MLPs (256x256) as one module: the weights of each layer are stacked, and one
    torch.baddbmm per layer computes every critic. Each critic is initialised as separate nn.Linear layers
    would be."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box, num_critics: int = 2):
        super().__init__()
        sizes = [int(np.prod(observation_space.shape)) + int(np.prod(action_space.shape)), 256, 256, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers = [nn.Linear(fan_in, fan_out) for _ in range(num_critics)]
            with torch.no_grad():
                self.weights.append(torch.stack([layer.weight.T for layer in layers]))  # [n, in, out]
                self.biases.append(torch.stack([layer.bias for layer in layers]).unsqueeze(1))  # [n, 1, out]

    def forward(self, obs: torch.Tensor, action: torch.Tensor, first_only: bool = False,
                detach: bool = False) -> torch.Tensor:
        """Q_phi_i(s, a) of every critic, or of Q_phi_1 alone (`first_only`, shape [1, batch]). `detach` takes
        the weights as constants: the actor update needs the gradient with respect to the action only."""
        x = torch.cat([obs, action], -1)
        for k, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if first_only:
                weight, bias = weight[:1], bias[:1]
            if detach:
                weight, bias = weight.detach(), bias.detach()
            x = torch.baddbmm(bias, x.expand(len(weight), -1, -1), weight)  # x W_i + b_i for every critic i
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


def smoothed_target_action(actor_target: Actor, next_obs: torch.Tensor, policy_noise: float,
                           noise_clip: float) -> torch.Tensor:
    action = actor_target(next_obs)
    noise = (torch.randn_like(action) * policy_noise).clamp(-noise_clip, noise_clip) * actor_target.action_scale
    return actor_target.clip(action + noise)  # [smoothing]


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y from the rewards [B], the done flags [B] (1 where terminated, 0 at a time limit or mid-episode) and the
    target critics' Q_phi'_i(s', a') [num_critics, B]."""
    return rewards + gamma * (1 - terminations) * next_q.min(0).values  # [target]


def update_critic(batch: tuple[torch.Tensor, ...], actor_target: Actor, critic: Critic, critic_target: Critic,
                  critic_optimizer: torch.optim.Optimizer, args: Args) -> torch.Tensor:
    obs, actions, rewards, next_obs, terminations = batch
    with torch.no_grad():  # the target actor and both target critics, once each
        next_actions = smoothed_target_action(actor_target, next_obs, args.policy_noise, args.noise_clip)
        y = td_target(rewards, terminations, critic_target(next_obs, next_actions), args.gamma)
    qf_loss = ((critic(obs, actions) - y) ** 2).mean(1).sum()  # [critic-loss]: both critics in one pass
    critic_optimizer.zero_grad()
    qf_loss.backward()
    critic_optimizer.step()
    return qf_loss.detach()


def update_actor(obs: torch.Tensor, actor: Actor, critic: Critic, actor_optimizer: torch.optim.Optimizer
                 ) -> torch.Tensor:
    # [dpg] through Q_phi_1 only, its weights detached: no gradient is computed for the critics here
    policy_loss = -critic(obs, actor(obs), first_only=True, detach=True).mean()
    actor_optimizer.zero_grad()
    policy_loss.backward()
    actor_optimizer.step()
    return policy_loss.detach()


@torch.no_grad()
def polyak_update(net: nn.Module, target: nn.Module, tau: float):
    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)  # [polyak] t + tau (p - t)


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None
             ) -> np.ndarray:
    """Undiscounted returns of the deterministic policy a = mu(s) on a separate env, episode k seeded seed + k.

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
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0))[0]
            obs, reward, terminated, truncated, _ = env.step(action.cpu().numpy())
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
        sys.exit(f"error: td3.py needs a bounded 1-D Box action space, {args.env_id} has {space}")
    writer = SummaryWriter(f"runs/{run_name}")
    table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    actor = Actor(envs.single_observation_space, envs.single_action_space).to(device)
    critic = Critic(envs.single_observation_space, envs.single_action_space).to(device)
    actor_target = copy.deepcopy(actor).requires_grad_(False)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    # fused: one kernel per step for all weights (2.5x faster than the default on a CPU), and its step count lives
    # on the device, so a CUDA graph can replay it (--cudagraphs)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=True)
    rb = ReplayBuffer(args.buffer_size, envs.single_observation_space, envs.single_action_space, device)
    critic_step, actor_step = update_critic, update_actor
    if args.compile or args.cudagraphs:
        # recompute ReLU masks for the backward pass: saved as bool tensors, they are slow on a CPU (speed.py relu_mask)
        torch._functorch.config.activation_memory_budget = 0.99 if device.type == "cpu" else 1.0
        mode = "reduce-overhead" if args.cudagraphs else None
        critic_step, actor_step = (torch.compile(f, mode=mode) for f in (update_critic, update_actor))

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
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
                action += torch.randn_like(action) * args.exploration_noise * actor.action_scale  # [explore]
                actions = actor.clip(action).cpu().numpy()
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
                qf_loss = critic_step(batch, actor_target, critic, critic_target, critic_optimizer, args)
                if num_updates % args.policy_frequency == 0:  # [delayed]
                    # on the critic's batch's states; cloned, as logging may read it after later updates, whose
                    # CUDA graphs (--cudagraphs) overwrite their outputs
                    policy_loss = actor_step(batch[0], actor, critic, actor_optimizer).clone()
                    polyak_update(actor, actor_target, args.tau)
                    polyak_update(critic, critic_target, args.tau)
            if global_step % args.log_every < args.num_envs and num_updates >= args.policy_frequency:
                sps = (global_step - start_step) / (time.time() - start_time)
                writer.add_scalar("losses/qf_loss", qf_loss.item(), global_step)
                writer.add_scalar("losses/actor_loss", policy_loss.item(), global_step)
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
               "num_updates": num_updates, "run_dir": f"runs/{run_name}"}
    if args.save_model:
        path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save({"actor": actor.state_dict(), "critic": critic.state_dict(),
                    "actor_target": actor_target.state_dict(), "critic_target": critic_target.state_dict(),
                    "actor_optimizer": actor_optimizer.state_dict(),
                    "critic_optimizer": critic_optimizer.state_dict(), "args": asdict(args)}, path)
        print(f"model saved to {path}")
        metrics["model_path"] = path
    writer.close()
    print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics


if __name__ == "__main__":
    train(tyro.cli(Args))
