"""Soft Actor-Critic (Haarnoja et al., 2018): a squashed-Gaussian actor, twin critics, automatic temperature.

SAC maximises the entropy-augmented return sum_t E[r_t + alpha H(pi(.|s_t))] (chapter: "SAC maximizes
entropy-augmented return"). Off-policy: transitions go to a replay buffer on the training device, and every
environment step (after `--learning-starts` uniform-random steps) is followed by `--updates-per-step`
gradient updates on uniformly sampled minibatches.

The chapter's equations, and the line that realises each (search for the tag):
  [reparam]      u = mu(s) + sigma(s) * eps, eps ~ N(0, I);  a = tanh(u) * scale + bias    Actor.get_action
  [tanh-logprob] log pi(a|s) = sum_i [log N(u_i; mu_i, sigma_i) - log(1 - tanh(u_i)^2) - log scale_i]
                 with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|
  [twin-q]       two critics Q_1, Q_2 and two target critics Q'_1, Q'_2                     Critic.forward
  [soft-target]  y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
                 the clipped double-Q soft Bellman target                                   td_target
  [critic-loss]  J_Q = sum_j 1/2 E[(Q_j(s, a) - y)^2]                                      update_critic
  [actor-loss]   J_pi = E[alpha log pi(a|s) - min_j Q_j(s, a)],  a reparameterised         update_actor
  [alpha-loss]   J(alpha) = E[-alpha (log pi(a|s) + H_target)],  H_target = -|A|           update_temperature
  [polyak]       phi'_j <- tau phi_j + (1 - tau) phi'_j                                     polyak_update

Conventions of this file:
- log pi is the density of the action in the ENVIRONMENT's units: it includes the Jacobian of the affine map
  from (-1, 1) to [low, high] (the "- log scale" term), and the critics take env-unit actions, the units the
  replay buffer stores. This shifts log pi by sum_i log scale_i, zero where the bounds are [-1, 1] (the MuJoCo
  tasks), so on envs with other bounds the -|A| entropy target asks for a different spread of tanh(u).
- Vector envs use gymnasium's SAME_STEP autoreset: the step that ends an episode returns the next episode's
  first observation, and the true last observation in infos["final_obs"]. The buffer stores that true s'
  (`final_observations`), and `terminated`, never `truncated`, stops the bootstrap: at a time limit the
  target still bootstraps from Q'(s_final, a'). No reset step is ever stored as a transition.

Run:  python sac.py --env-id Pendulum-v1 --total-timesteps 10000  # ~1 CPU-minute; evaluation about -140
      python sac.py --env-id Hopper-v4 --cuda                      # the 1M-step benchmark (hours on a CPU)
      python sac.py --resume runs/<run>/checkpoint.pt              # continue a run (Ctrl-C writes one)
      python sac.py --evaluate runs/<run>/checkpoint.pt --capture-video  # watch a saved agent
      tensorboard --logdir runs
"""

import copy
import math
import os
import random
import re
import signal
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass

if not os.environ.get("DISPLAY"):  # headless video: MuJoCo renders with EGL, SDL with its dummy driver
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._functorch.config  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import tyro  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402

warnings.filterwarnings("ignore", message=".*is out of date")  # v4 MuJoCo ids are deliberate: published v4


@dataclass
class Args:
    """Soft Actor-Critic on a gymnasium env with continuous actions. Step counts are environment steps, all
    envs together; charts/SPS counts training only: learning-phase env steps per second, evaluations
    excluded."""

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
    capture_video: bool = False
    """record the final evaluation's episodes to <run folder>/videos (with --evaluate: videos-eval)"""
    env_id: str = "Hopper-v4"
    """the gymnasium environment id (flat Box observations, bounded Box actions)"""
    total_timesteps: int = 1_000_000
    """environment steps in total, all envs together"""
    num_envs: int = 1
    """parallel environments (SyncVectorEnv); each vector step adds num_envs transitions"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (preallocated on the device; the oldest are overwritten)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: phi' <- tau phi + (1 - tau) phi' after every update"""
    batch_size: int = 256
    """transitions per gradient update, sampled uniformly from the replay buffer"""
    learning_starts: int = 5_000
    """env steps (all envs together) of uniformly random actions before learning starts (CleanRL's SAC: 5k)"""
    updates_per_step: float = 1.0
    """gradient updates per env step, all envs together (1.0: SAC's one; 0.5: one every second env step)"""
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
    """evaluate the deterministic policy (the squashed mean) every this many env steps and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded seed + 10000 + k"""
    log_every: int = 100
    """write losses and SPS to TensorBoard every this many env steps (the only host syncs of the updates)"""
    checkpoint_every: int = 20_000
    """write <run folder>/checkpoint.pt every this many env steps (0: at the end and on Ctrl-C/SIGTERM)"""
    resume: str | None = None
    """(none: a new run) continue this checkpoint's run in its folder, with its Args (only --cuda, --threads \
and --checkpoint-every may change): networks, optimizers, alpha, replay buffer, counters and RNGs are \
restored; the episodes in progress restart (envs reset with seed + step)"""
    evaluate: str | None = None
    """(none: train) load this checkpoint, run --eval-episodes deterministic episodes on its env (or \
--env-id), print the mean return; no training"""
    compile: bool = False
    """torch.compile the update functions (the first updates wait ~30 s; on a CPU no faster than eager)"""
    cudagraphs: bool = False
    """with CUDA: also replay the compiled updates as CUDA graphs (torch.compile mode "reduce-overhead")"""

    def __post_init__(self):  # argument checks: each failure is one line on stderr and exit status 1
        for name in ("total_timesteps", "num_envs", "buffer_size", "batch_size", "updates_per_step", "q_lr",
                     "policy_lr", "policy_frequency", "alpha", "alpha_lr", "threads", "eval_every",
                     "eval_episodes", "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for failed, message in (
            (not 0 <= self.seed < 2**32, f"--seed must be in [0, 2**32 - 1], got {self.seed}"),
            (self.learning_starts < 0, f"--learning-starts must not be negative, got {self.learning_starts}"),
            (self.checkpoint_every < 0, f"--checkpoint-every must be 0 or more, got {self.checkpoint_every}"),
            (not 0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}"),
            (not 0 < self.tau <= 1, f"--tau must be in (0, 1], got {self.tau}"),
            (math.ceil(self.learning_starts / self.num_envs) >= self.total_timesteps // self.num_envs,
             f"--learning-starts ({self.learning_starts}) must be below --total-timesteps"),
            (self.buffer_size < self.num_envs, f"--buffer-size must hold one step of {self.num_envs} envs"),
            (self.env_id not in gym.registry, f"unknown --env-id {self.env_id!r} (not in gym's registry)"),
            (self.cudagraphs and not (self.cuda and torch.cuda.is_available()), "--cudagraphs needs CUDA"),
        ):
            if failed:
                sys.exit(f"error: {message}")


def make_env(env_id: str, video_folder: str | None = None):
    def thunk():
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, lambda _: True, disable_logger=True)

    return thunk


def env_spaces(env_id: str) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """The env's observation and action spaces; where sac.py cannot run it, one line on stderr and exit 1."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        hint = re.search(r'pip install "gymnasium\[\w+\]"', str(e))
        sys.exit(f"error: {env_id} needs an optional package: {hint.group(0) if hint else e}")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        sys.exit(f"error: sac.py needs flat (1-D Box) observations, {env_id} has {obs_space}")
    if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
            and np.isfinite([action_space.low, action_space.high]).all()):
        sys.exit(f"error: sac.py needs a bounded 1-D Box action space, {env_id} has {action_space}")
    return obs_space, action_space


def check_buffer_fits(size: int, obs_space: gym.spaces.Box, action_space: gym.spaces.Box,
                      device: torch.device):
    """A replay buffer too big for the free memory (MemAvailable, or the GPU's): one line, exit 1."""
    nbytes = size * (2 * obs_space.shape[0] + action_space.shape[0] + 2) * 4  # float32 rows
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    elif os.path.exists("/proc/meminfo"):  # Linux
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    else:
        return
    if nbytes > available:
        sys.exit(f"error: a replay buffer of {size:,} transitions needs {nbytes:,} bytes; {available:,} are "
                 f"available on the {device.type}: lower --buffer-size")


class Actor(nn.Module):
    """Squashed Gaussian policy: a 256x256 MLP gives mean and log std of u; a = tanh(u) scaled to bounds."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
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
        """(sampled action [B, A], its log-probability [B], deterministic action [B, A]), env units."""
        mean, log_std = self(obs)
        normal = torch.distributions.Normal(mean, log_std.exp(), validate_args=False)
        u = normal.rsample()  # [reparam] u = mu + sigma * eps: differentiable in the actor's parameters
        log_tanh_jacobian = 2 * (math.log(2) - u - F.softplus(-2 * u))  # log(1 - tanh(u)^2)
        log_prob = normal.log_prob(u) - log_tanh_jacobian - self.action_scale.log()  # [tanh-logprob]
        log_prob = log_prob.sum(-1)
        return self.squash(u), log_prob, self.squash(mean)


class Critic(nn.Module):
    """The chapter's two critics Q_phi1(s, a), Q_phi2(s, a): two independently initialised 256x256 MLPs."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        n = observation_space.shape[0] + action_space.shape[0]
        self.q1, self.q2 = (nn.Sequential(nn.Linear(n, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                          nn.Linear(256, 1)) for _ in range(2))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q_1(s, a) and Q_2(s, a) stacked: [2, batch]."""
        x = torch.cat([obs, action], -1)
        return torch.stack([self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)])  # [twin-q]


class ReplayBuffer:
    """Transitions in tensors preallocated once on the training device; uniform sampling (torch.randint)."""

    fields = ("obs", "actions", "rewards", "next_obs", "terminations")  # the order of add, sample and batches

    def __init__(self, size: int, observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                 device: torch.device):
        obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
        self.size, self.pos, self.count, self.device = size, 0, 0, device
        for name, shape in zip(self.fields, ((obs_dim,), (act_dim,), (), (obs_dim,), ())):
            setattr(self, name, torch.zeros(size, *shape, device=device))

    def add(self, obs, actions, rewards, next_obs, terminations):
        """Store one vector step: num_envs transitions at once, overwriting the oldest when full."""
        n = len(rewards)
        idx = torch.arange(self.pos, self.pos + n, device=self.device) % self.size
        for name, value in zip(self.fields, (obs, actions, rewards, next_obs, terminations)):
            storage = getattr(self, name)
            value = torch.as_tensor(value, dtype=torch.float32, device=self.device)
            storage[idx] = value.reshape(n, *storage.shape[1:])
        self.pos, self.count = (self.pos + n) % self.size, min(self.count + n, self.size)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """(obs, actions, rewards, next_obs, terminations) of `batch_size` transitions, with replacement."""
        idx = torch.randint(self.count, (batch_size,), device=self.device)
        return tuple(getattr(self, name)[idx] for name in self.fields)

    def state_dict(self) -> dict:  # copies of the filled rows only (a view would save the whole storage)
        rows = {name: getattr(self, name)[: self.count].to("cpu", copy=True) for name in self.fields}
        return {"pos": self.pos, "count": self.count} | rows

    def load_state_dict(self, state: dict):
        self.pos, self.count = state["pos"], state["count"]
        for name in self.fields:
            getattr(self, name)[: self.count] = state[name].to(self.device)


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true next states s': where an episode ended at this step (SAME_STEP autoreset), next_obs already
    holds the next episode's first observation, and the true last one is in infos["final_obs"]."""
    real_next_obs = next_obs.copy()
    if "_final_obs" in infos:
        ended = infos["_final_obs"]
        real_next_obs[ended] = np.stack(infos["final_obs"][ended])
    return real_next_obs


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor,
              next_log_prob: torch.Tensor, alpha: torch.Tensor | float, gamma: float) -> torch.Tensor:
    """y from the rewards [B], the done flags [B] (1 where terminated, 0 at a time limit or mid-episode), the
    target critics' Q'_j(s', a') [2, B] and log pi(a'|s') [B], a' ~ pi(.|s')."""
    soft_value = next_q.min(0).values - alpha * next_log_prob  # min_j Q'_j(s', a') - alpha log pi(a'|s')
    return rewards + gamma * (1 - terminations) * soft_value  # [soft-target]


def update_critic(batch: tuple[torch.Tensor, ...], actor: Actor, critic: Critic, critic_target: Critic,
                  critic_optimizer: torch.optim.Optimizer, log_alpha: torch.Tensor, args: Args
                  ) -> torch.Tensor:
    obs, actions, rewards, next_obs, terminations = batch
    with torch.no_grad():
        next_actions, next_log_prob, _ = actor.get_action(next_obs)  # a' ~ pi(.|s')
        y = td_target(rewards, terminations, critic_target(next_obs, next_actions), next_log_prob,
                      log_alpha.exp(), args.gamma)
    qf_loss = 0.5 * ((critic(obs, actions) - y) ** 2).mean(1).sum()  # [critic-loss]
    critic_optimizer.zero_grad()
    qf_loss.backward()
    critic_optimizer.step()
    return qf_loss.detach()


def update_actor(obs: torch.Tensor, actor: Actor, critic: Critic, actor_optimizer: torch.optim.Optimizer,
                 log_alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns the actor loss and the (detached) log-probabilities of its actions, for the temperature."""
    actions, log_prob, _ = actor.get_action(obs)
    frozen = {name: p.detach() for name, p in critic.named_parameters()}  # gradients reach a, not the critics
    q = torch.func.functional_call(critic, frozen, (obs, actions)).min(0).values
    policy_loss = (log_alpha.exp().detach() * log_prob - q).mean()  # [actor-loss]
    actor_optimizer.zero_grad()
    policy_loss.backward()
    actor_optimizer.step()
    return policy_loss.detach(), log_prob.detach()


def update_temperature(log_prob: torch.Tensor, log_alpha: torch.Tensor,
                       alpha_optimizer: torch.optim.Optimizer, target_entropy: float) -> torch.Tensor:
    alpha_loss = -(log_alpha.exp() * (log_prob + target_entropy)).mean()  # [alpha-loss]
    alpha_optimizer.zero_grad()
    alpha_loss.backward()
    alpha_optimizer.step()
    return alpha_loss.detach()


@torch.no_grad()
def polyak_update(net: nn.Module, target: nn.Module, tau: float):
    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)  # [polyak] t + tau (p - t)


def compiled_updates(args: Args, device: torch.device) -> tuple:
    """update_critic, update_actor, update_temperature; compiled with --compile/--cudagraphs (speed only)."""
    if not (args.compile or args.cudagraphs):
        return update_critic, update_actor, update_temperature
    # recompute ReLU masks in the backward pass: saved as bool tensors, slow on a CPU (speed.py relu_mask)
    torch._functorch.config.activation_memory_budget = 0.99 if device.type == "cpu" else 1.0

    def wrap(update):
        compiled = torch.compile(update, mode="reduce-overhead" if args.cudagraphs else None)

        def step(*inputs):  # a CUDA graph's next replay overwrites its outputs: mark each step, keep copies
            torch.compiler.cudagraph_mark_step_begin()
            out = compiled(*inputs)
            return tuple(x.clone() for x in out) if isinstance(out, tuple) else out.clone()

        return step

    return tuple(wrap(f) for f in (update_critic, update_actor, update_temperature))


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, video_folder: str | None = None
             ) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (the squashed mean action) on a separate env, episode
    k seeded seed + k."""
    env = make_env(env_id, video_folder)()
    returns = np.zeros(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            obs = torch.tensor(obs, dtype=torch.float32, device=actor.action_scale.device)[None]
            with torch.no_grad():  # the squashed mean draws no noise: training's RNG is left alone
                mean, _ = actor(obs)
            obs, reward, terminated, truncated, _ = env.step(actor.squash(mean)[0].cpu().numpy())
            returns[k] += reward
            done = terminated or truncated
    env.close()
    return returns


def save_checkpoint(path: str, state: dict, nets: dict):
    """Counters, Args, networks, optimizers, log alpha, the replay buffer's filled rows and every RNG, written
    atomically (a crash leaves the previous checkpoint whole); loads with torch.load(weights_only=True)."""
    numpy_state = np.random.get_state()  # as lists and ints: torch.load(weights_only=True) refuses ndarrays
    rng = {"python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
           "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    checkpoint = {"script": "sac"} | state | {"rng": rng} | {k: v.state_dict() for k, v in nets.items()}
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


def set_rng_states(rng: dict):
    """Python's, numpy's and torch's random number generators as save_checkpoint stored them."""
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def load_checkpoint(path: str, flag: str) -> dict:
    """The checkpoint at `path` for --resume or --evaluate; a bad path is one line on stderr and exit 1."""
    if not os.path.exists(path) or os.path.isdir(path):
        sys.exit(f"error: {flag} {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (whatever torch.load says, the file is not one of ours)
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (torch.load failed: {type(e).__name__})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (no \"script\" key)")
    if checkpoint["script"] != "sac":
        sys.exit(f"error: {flag} {path}: a checkpoint of {checkpoint['script']}.py, not sac.py")
    return checkpoint


def evaluate_checkpoint(args: Args, env_id: str | None = None) -> np.ndarray:
    """--evaluate: the checkpoint's actor on its env (or `env_id`), --eval-episodes episodes as in train."""
    checkpoint = load_checkpoint(args.evaluate, "--evaluate")
    env_id = env_id or checkpoint["args"]["env_id"]
    actor = Actor(*env_spaces(env_id))
    try:
        actor.load_state_dict(checkpoint["actor"])
    except RuntimeError:  # the shapes differ
        sys.exit(f"error: --evaluate {args.evaluate}: its actor does not fit {env_id}'s spaces")
    video = os.path.join(os.path.dirname(args.evaluate), "videos-eval") if args.capture_video else None
    returns = evaluate(actor, env_id, args.eval_episodes, checkpoint["args"]["seed"] + 10_000, video)
    print(f"evaluation of {args.evaluate} on {env_id}: mean return {returns.mean():.1f} "
          f"± {returns.std():.1f} over {len(returns)} episodes")
    return returns


def make_run_dir(args: Args) -> str:
    """runs/{env}__{exp}__{seed}__{time}, with -2, -3, ... appended when two runs start in the same second."""
    base, k = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}", 1
    while True:
        try:
            path = base if k == 1 else f"{base}-{k}"
            os.makedirs(path)
            return path
        except FileExistsError:
            k += 1


def train(args: Args) -> dict:
    signals = []  # the first SIGINT/SIGTERM stops the run after this step; a second one ends it at once

    def on_signal(signum, frame):
        if signals:
            os._exit(128 + signum)
        signals.append(signum)

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        checkpoint = load_checkpoint(args.resume, "--resume") if args.resume else None
        if checkpoint:  # the run's own Args, but for the three a resume may change
            keep = {"cuda": args.cuda, "threads": args.threads, "checkpoint_every": args.checkpoint_every}
            args = Args(**checkpoint["args"] | keep | {"resume": args.resume})
        obs_space, action_space = env_spaces(args.env_id)
        device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        check_buffer_fits(args.buffer_size, obs_space, action_space, device)
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on a GPU needs it
        torch.backends.cudnn.deterministic = args.torch_deterministic
        torch.set_num_threads(args.threads)
        print(f"device: {device}")
        if args.total_timesteps % args.num_envs:
            rounded = args.total_timesteps // args.num_envs * args.num_envs
            print(f"note: --total-timesteps {args.total_timesteps} rounded to {rounded} "
                  f"(whole steps of {args.num_envs} envs)")

        run_dir = os.path.dirname(args.resume) if checkpoint else make_run_dir(args)
        path = os.path.join(run_dir, "checkpoint.pt")
        global_step = checkpoint["global_step"] if checkpoint else 0
        if checkpoint:  # TensorBoard reads event files in name order, named by the second they were made in
            names = [f for f in os.listdir(run_dir) if f.startswith("events.out.tfevents.")]
            while time.time() < max((int(f.split(".")[3]) for f in names), default=0) + 1:
                time.sleep(0.05)
        # on resume, TensorBoard drops what the interrupted run logged after its checkpoint
        writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
        if not checkpoint:
            table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
            writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
        actor = Actor(obs_space, action_space).to(device)
        critic = Critic(obs_space, action_space).to(device)
        critic_target = copy.deepcopy(critic).requires_grad_(False)
        # fused Adam: one kernel for all weights (2.5x faster on a CPU), its step count on the device
        actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
        critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=True)
        target_entropy = -float(action_space.shape[0])  # H_target = -|A|
        log_alpha = torch.tensor(0.0 if args.autotune else math.log(args.alpha), device=device,
                                 requires_grad=args.autotune)
        alpha_optimizer = torch.optim.Adam([log_alpha], lr=args.alpha_lr, fused=True)
        rb = ReplayBuffer(args.buffer_size, obs_space, action_space, device)
        nets = {"actor": actor, "critic": critic, "critic_target": critic_target, "replay_buffer": rb,
                "actor_optimizer": actor_optimizer, "critic_optimizer": critic_optimizer,
                "alpha_optimizer": alpha_optimizer}
        critic_step, actor_step, temperature_step = compiled_updates(args, device)
        envs.action_space.seed(args.seed)
        num_updates = 0
        if checkpoint:
            for name, net in nets.items():
                net.load_state_dict(checkpoint[name])
            with torch.no_grad():
                log_alpha.copy_(checkpoint["log_alpha"])
            num_updates = checkpoint["num_updates"]
            set_rng_states(checkpoint["rng"])
            envs.action_space.np_random.bit_generator.state = checkpoint["action_space_rng"]
        obs, _ = envs.reset(seed=args.seed + global_step)  # on resume, the episodes in progress restart

        def write_checkpoint():
            params = [*actor.parameters(), *critic.parameters(), *critic_target.parameters(), log_alpha]
            if not all(torch.isfinite(p).all() for p in params):
                stop(f"error: a parameter is not finite at step {global_step:,}; stopped.", 1)
            writer.flush()  # the curves up to the checkpoint survive a crash
            state = {"args": asdict(args), "global_step": global_step, "num_updates": num_updates,
                     "log_alpha": log_alpha.detach().cpu(),
                     "action_space_rng": envs.action_space.np_random.bit_generator.state}
            save_checkpoint(path, state, nets)
            saved.append(global_step)

        def stop(message: str, code: int):
            progress.close()
            writer.close()
            envs.close()
            if code == 1:  # a non-finite value: never overwrite the last good checkpoint
                exists = os.path.exists(path)
                message += f" The last good checkpoint: {path}" if exists else " No checkpoint was written."
            print(message, file=sys.stderr if code == 1 else sys.stdout, flush=True)
            sys.exit(code)

        recent_returns, losses, saved, eval_seconds = deque(maxlen=20), {}, [], 0.0
        num_iterations = args.total_timesteps // args.num_envs
        random_iterations = math.ceil(args.learning_starts / args.num_envs)  # in whole vector steps
        learn_from = random_iterations * args.num_envs  # updates are counted from this env step on
        progress = tqdm(total=num_iterations * args.num_envs, initial=global_step, disable=None, unit="step")
        run_start = start_time = time.time()
        start_step = max(global_step, learn_from)
        for iteration in range(global_step // args.num_envs, num_iterations):
            global_step = (iteration + 1) * args.num_envs
            if iteration < random_iterations:
                actions = envs.action_space.sample()
            else:
                with torch.no_grad():
                    actions = actor.get_action(torch.as_tensor(obs, dtype=torch.float32, device=device))[0]
                actions = actions.cpu().numpy()
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            real_next_obs = final_observations(next_obs, infos)  # s', not the reset observation
            rb.add(obs, actions, rewards, real_next_obs, terminations)  # terminations only, never truncations
            obs = next_obs
            for i in np.flatnonzero(infos.get("_episode", [])):
                recent_returns.append(float(infos["episode"]["r"][i]))
                writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)

            if iteration == random_iterations:  # charts/SPS: the learning phase only, evaluations excluded
                start_time, start_step, eval_seconds = time.time(), global_step - args.num_envs, 0.0
            while num_updates < int((global_step - learn_from) * args.updates_per_step):
                num_updates += 1
                batch = rb.sample(args.batch_size)
                losses["qf_loss"] = critic_step(batch, actor, critic, critic_target, critic_optimizer,
                                                log_alpha, args)
                if num_updates % args.policy_frequency == 0:  # on the states of the critic's batch
                    losses["actor_loss"], log_prob = actor_step(batch[0], actor, critic, actor_optimizer,
                                                                log_alpha)
                    losses["entropy"] = -log_prob.mean()
                    if args.autotune:
                        losses["alpha_loss"] = temperature_step(log_prob, log_alpha, alpha_optimizer,
                                                                target_entropy)
                polyak_update(critic, critic_target, args.tau)
            sps = (global_step - start_step) / max(time.time() - start_time - eval_seconds, 1e-9)
            if global_step % args.log_every < args.num_envs and losses:
                values = {name: x.item() for name, x in losses.items()} | {"alpha": log_alpha.exp().item()}
                for name, value in values.items():
                    if not math.isfinite(value):
                        stop(f"error: losses/{name} is {value} at step {global_step:,}; stopped.", 1)
                    writer.add_scalar(f"losses/{name}", value, global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                progress.set_postfix(sps=f"{sps:.0f}", ret=f"{np.mean(recent_returns or [np.nan]):.1f}")
            progress.update(args.num_envs)
            if global_step % args.eval_every < args.num_envs and iteration < num_iterations - 1:
                eval_start = time.time()
                eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000).mean()
                writer.add_scalar("eval/episodic_return", eval_return, global_step)
                eval_seconds += time.time() - eval_start
            if signals or (args.checkpoint_every and global_step % args.checkpoint_every < args.num_envs):
                write_checkpoint()
            if signals:
                stop(f"interrupted at step {global_step:,}: checkpoint {path}; "
                     f"resume with: python sac.py --resume {path}", 128 + signals[0])
        progress.close()
        envs.close()
        if not saved or saved[-1] != global_step:
            write_checkpoint()  # the final checkpoint comes before anything optional (the video)
        video = os.path.join(run_dir, "videos") if args.capture_video else None
        try:
            returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video)
        except Exception as e:  # noqa: BLE001 (a video that fails must not end the run)
            print(f"warning: video not recorded: {e}", file=sys.stderr)
            returns = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000)
        writer.add_scalar("eval/episodic_return", returns.mean(), global_step)
        writer.close()
    finally:
        for s, handler in old_handlers.items():
            signal.signal(s, handler)

    seconds = round(time.time() - run_start)
    print(f"finished {global_step:,} steps in {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} "
          f"({sps:,.0f} steps/s); final evaluation return {returns.mean():.1f}")
    print(f"run folder: {run_dir}   (tensorboard --logdir runs)")
    print(f"checkpoint: {path}")
    return {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
            "eval/episodic_return": float(returns.mean()), "charts/SPS": sps, "global_step": global_step,
            "num_updates": num_updates, "alpha": log_alpha.exp().item(), "run_dir": run_dir,
            "checkpoint": path}


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    if cli_args.evaluate:
        env_given = any(a == "--env-id" or a.startswith("--env-id=") for a in sys.argv)
        evaluate_checkpoint(cli_args, cli_args.env_id if env_given else None)
    else:
        train(cli_args)
