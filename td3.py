"""TD3: twin delayed deep deterministic policy gradient (Fujimoto et al., 2018), for continuous actions.

DDPG with three fixes against overestimation: two critics and the smaller of their targets (clipped double-Q),
noise on the target action (target policy smoothing), and an actor and targets updated only every
`policy_frequency` critic updates (delayed updates).

The chapter's equations, and the line that realises each (search for the tag):
    [explore]     a = clip(mu_theta(s) + eps, low, high),  eps ~ N(0, (sigma * scale)^2)        train
    [smoothing]   a' = clip(mu_theta'(s') + clip(eps, -c, c) * scale, low, high),  eps ~ N(0, sigma'^2)
                                                                                   smoothed_target_action
    [target]      y = r + gamma (1 - terminated) min_{i=1,2} Q_phi'_i(s', a')  (clipped double-Q)  td_target
    [critic-loss] L(phi_1, phi_2) = sum_i E[(Q_phi_i(s, a) - y)^2]                            update_critic
    [dpg]         grad_theta J = E[grad_a Q_phi_1(s, a)|_{a = mu_theta(s)} grad_theta mu_theta(s)]: the actor
                  minimises -Q_phi_1(s, mu_theta(s)), the chain rule runs through the critic      update_actor
    [delayed]     the actor and all targets are updated once every `policy_frequency` critic updates   train
    [polyak]      theta' <- tau theta + (1 - tau) theta',  phi'_i <- tau phi_i + (1 - tau) phi'_i
                                                                                           polyak_update
"scale" and "low, high" are the action space's half-width and bounds: the actor's tanh output in [-1, 1] is
rescaled to them, and both noises are multiplied by the half-width: --exploration-noise 0.1 is 10% of it.

Replay and time limits: the vector envs use gymnasium's SAME_STEP autoreset. When an episode ends, the step
returns the first observation of the next episode and the true last one in infos["final_obs"]; the buffer
stores that true last observation as s' (final_observations), and `terminated` (never `truncated`) as the done
flag, so a time limit still bootstraps from Q(s', a'). No reset step is ever stored as a transition.

Run:  python td3.py --env-id Pendulum-v1 --total-timesteps 10000 --learning-starts 1000    # a minute or two
      python td3.py --env-id Hopper-v4                  # the 1M-step MuJoCo benchmark (hours on a CPU)
      python td3.py --resume runs/<run>/checkpoint.pt   # continue a run;  --evaluate PATH: watch one
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
from dataclasses import asdict, dataclass, replace
from datetime import timedelta

# headless video: EGL for MuJoCo, SDL's dummy driver for classic control, unless a display or a choice exists
if not os.environ.get("DISPLAY"):
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

warnings.filterwarnings("ignore", message=".*is out of date")  # the -v4 MuJoCo tasks are deliberate (README)


@dataclass
class Args:
    """TD3 on a continuous-action env. charts/SPS: learning-phase env steps per second (evaluations not \
counted)."""

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
    """record the final evaluation's episodes to <run folder>/videos (with --evaluate: \
<checkpoint's folder>/videos-eval)"""
    checkpoint_every: int = 50_000
    """write <run folder>/checkpoint.pt every this many env steps (0: only at the end and on Ctrl-C or \
SIGTERM)"""
    resume: str | None = None
    """(none: a new run) continue the run of this checkpoint in its folder: networks, optimizers, replay \
buffer, step counts and RNG states are restored; episodes in progress restart (envs reset, seeded \
seed + step); its settings are used, but for --cuda, --threads and --checkpoint-every"""
    evaluate: str | None = None
    """(none: train) run --eval-episodes deterministic episodes of this checkpoint's actor on its env (or on \
--env-id, if given) and print the mean return; no training"""
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
    """env steps (all envs together) of uniformly random actions before learning starts (Fujimoto's: 25k)"""
    updates_per_step: float = 1.0
    """critic updates per env step, all envs together: --num-envs 4 does 4 updates per vector step at the \
default 1.0"""
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
    """write losses and SPS to TensorBoard every this many env steps (the updates sync with the host only \
then)"""
    compile: bool = False
    """torch.compile the update functions (the first updates wait ~30 s for it; on a CPU, no faster than \
eager)"""
    cudagraphs: bool = False
    """with CUDA: also replay the compiled updates as CUDA graphs (torch.compile mode "reduce-overhead")"""

    def __post_init__(self):  # argument checks: the first failure is one line on stderr, exit status 1
        positive = ("total_timesteps", "num_envs", "buffer_size", "batch_size", "updates_per_step",
                    "policy_lr", "q_lr", "policy_frequency", "threads", "eval_every", "eval_episodes",
                    "log_every")
        problems = [f"--{n.replace('_', '-')} must be positive, got {getattr(self, n)}" for n in positive
                    if not getattr(self, n) > 0] + [f"--{n.replace('_', '-')} must not be negative, got "
                    f"{getattr(self, n)}" for n in ("learning_starts", "exploration_noise", "policy_noise",
                                                    "noise_clip", "checkpoint_every") if getattr(self, n) < 0]
        problems += [message for failed, message in (
            (not 0 <= self.seed < 2**32, f"--seed must be in [0, 2**32 - 1], got {self.seed}"),
            (not 0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}"),
            (not 0 < self.tau <= 1, f"--tau must be in (0, 1], got {self.tau}"),
            (not problems and math.ceil(self.learning_starts / self.num_envs) >= self.total_timesteps
             // self.num_envs, f"--learning-starts ({self.learning_starts}) must be below --total-timesteps "
             f"({self.total_timesteps}), or no update would run"),
            (self.buffer_size < self.num_envs, f"--buffer-size ({self.buffer_size}) must hold one step of "
                                               f"--num-envs ({self.num_envs})"),
            (self.env_id not in gym.registry, f"unknown --env-id {self.env_id!r} (not in gymnasium's "
                                              "registry)"),
            (self.cudagraphs and not (self.cuda and torch.cuda.is_available()),
             "--cudagraphs needs a CUDA device (and --cuda)")) if failed]
        if problems:
            sys.exit(f"error: {problems[0]}")


def make_env(env_id: str, video_folder: str | None = None):
    def thunk() -> gym.Env:
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda e: True,
                                        disable_logger=True)

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
    """Q_phi(s, a): a 256x256 MLP on the concatenated state and action; forward returns Q of shape [batch]."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        sizes = [int(np.prod(observation_space.shape)) + int(np.prod(action_space.shape)), 256, 256, 1]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Q_phi(s, a). `detach` takes the weights as constants: the actor update needs the gradient with
        respect to the action only."""
        x = torch.cat([obs, action], -1)
        for k, layer in enumerate(self.layers):
            weight, bias = layer.weight, layer.bias
            if detach:
                weight, bias = weight.detach(), bias.detach()
            x = F.linear(x, weight, bias)
            x = torch.relu(x) if k < len(self.layers) - 1 else x.squeeze(-1)
        return x


class TwinCritic(nn.Module):
    """The two critics Q_phi_1, Q_phi_2, initialised independently; forward returns both, shape [2, batch]."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        self.q1, self.q2 = Critic(observation_space, action_space), Critic(observation_space, action_space)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.q1(obs, action), self.q2(obs, action)])


class ReplayBuffer:
    """Transitions in tensors preallocated once on the training device; uniform sampling (torch.randint)."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminations")

    def __init__(self, size: int, observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                 device: torch.device):
        obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
        self.size, self.pos, self.count, self.device = size, 0, 0, device
        self.obs = torch.zeros(size, obs_dim, device=device)
        self.actions = torch.zeros(size, act_dim, device=device)
        self.rewards = torch.zeros(size, device=device)
        self.next_obs = torch.zeros(size, obs_dim, device=device)
        self.terminations = torch.zeros(size, device=device)

    @staticmethod
    def bytes_needed(size: int, obs_dim: int, act_dim: int) -> int:
        return size * (2 * obs_dim + act_dim + 2) * 4  # float32 obs, actions, rewards, next_obs, terminations

    def add(self, obs, actions, rewards, next_obs, terminations):
        """Store one vector step: num_envs transitions at once, overwriting the oldest when full."""
        n = len(rewards)
        idx = torch.arange(self.pos, self.pos + n, device=self.device) % self.size
        for name, value in zip(self.FIELDS, (obs, actions, rewards, next_obs, terminations)):
            storage = getattr(self, name)
            value = torch.as_tensor(value, dtype=torch.float32, device=self.device)
            storage[idx] = value.reshape(n, *storage.shape[1:])
        self.pos, self.count = (self.pos + n) % self.size, min(self.count + n, self.size)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """(obs, actions, rewards, next_obs, terminations) of `batch_size` transitions, with replacement."""
        idx = torch.randint(self.count, (batch_size,), device=self.device)
        return tuple(getattr(self, name)[idx] for name in self.FIELDS)

    def state_dict(self) -> dict:  # the filled part only: `count` rows
        rows = {name: getattr(self, name)[: self.count].to("cpu", copy=True) for name in self.FIELDS}
        return {"pos": self.pos, "count": self.count} | rows

    def load_state_dict(self, state: dict):
        self.pos, self.count = state["pos"], state["count"]
        for name in self.FIELDS:
            getattr(self, name)[: self.count] = state[name].to(self.device)


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true next states s': where an episode ended at this step (SAME_STEP autoreset), next_obs already
    holds the next episode's first observation, and the true last one is in infos["final_obs"]."""
    real_next_obs = next_obs.copy()
    if "_final_obs" in infos:
        ended = infos["_final_obs"]
        real_next_obs[ended] = np.stack(infos["final_obs"][ended])
    return real_next_obs


def smoothed_target_action(actor_target: Actor, next_obs: torch.Tensor, policy_noise: float,
                           noise_clip: float) -> torch.Tensor:
    action = actor_target(next_obs)
    noise = (torch.randn_like(action) * policy_noise).clamp(-noise_clip, noise_clip)
    return actor_target.clip(action + noise * actor_target.action_scale)  # [smoothing]


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float
              ) -> torch.Tensor:
    """y from the rewards [B], the done flags [B] (1 where terminated, 0 at a time limit or mid-episode) and
    the target critics' Q_phi'_i(s', a') [2, B]."""
    return rewards + gamma * (1 - terminations) * next_q.min(0).values  # [target]


def update_critic(batch: tuple[torch.Tensor, ...], actor_target: Actor, critic: TwinCritic,
                  critic_target: TwinCritic, critic_optimizer: torch.optim.Optimizer, args: Args
                  ) -> torch.Tensor:
    obs, actions, rewards, next_obs, terminations = batch
    with torch.no_grad():  # the target actor and both target critics, once each
        next_actions = smoothed_target_action(actor_target, next_obs, args.policy_noise, args.noise_clip)
        y = td_target(rewards, terminations, critic_target(next_obs, next_actions), args.gamma)
    qf_loss = ((critic(obs, actions) - y) ** 2).mean(1).sum()  # [critic-loss]: both critics
    critic_optimizer.zero_grad()
    qf_loss.backward()
    critic_optimizer.step()
    return qf_loss.detach()


def update_actor(obs: torch.Tensor, actor: Actor, critic: TwinCritic, actor_optimizer: torch.optim.Optimizer
                 ) -> torch.Tensor:
    # [dpg] through Q_phi_1 only, its weights detached: no gradient is computed for the critics here
    policy_loss = -critic.q1(obs, actor(obs), detach=True).mean()
    actor_optimizer.zero_grad()
    policy_loss.backward()
    actor_optimizer.step()
    return policy_loss.detach()


@torch.no_grad()
def polyak_update(net: nn.Module, target: nn.Module, tau: float):
    torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)  # [polyak] t + tau (p - t)


def compiled(args: Args, device: torch.device, *fns):
    """--compile / --cudagraphs: the update functions through torch.compile (speed only: README, Speed)."""
    if not (args.compile or args.cudagraphs):
        return fns
    # recompute ReLU masks in the backward pass: saved as bools they are slow on a CPU (speed.py relu_mask)
    torch._functorch.config.activation_memory_budget = 0.99 if device.type == "cpu" else 1.0
    if not args.cudagraphs:
        return tuple(torch.compile(f) for f in fns)

    def graphed(f):  # a new step for each call, and a copy of its output, which the next replay overwrites
        f = torch.compile(f, mode="reduce-overhead")
        return lambda *a: (torch.compiler.cudagraph_mark_step_begin(), f(*a).clone())[1]

    return tuple(graphed(f) for f in fns)


def load_checkpoint(path: str, flag: str) -> dict:
    """A checkpoint of this script, or one line on stderr and exit 1."""
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        sys.exit(f"error: {flag} {path}: no such file")
    except IsADirectoryError:
        sys.exit(f"error: {flag} {path}: is a directory")
    except Exception as e:  # noqa: BLE001 (any reason torch cannot read it)
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (torch.load: {type(e).__name__})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (no 'script' entry)")
    if checkpoint["script"] != "td3":
        sys.exit(f"error: {flag} {path}: a checkpoint of {checkpoint['script']}.py, not td3.py")
    return checkpoint


def save_checkpoint(path: str, state: dict, modules: dict):
    """Atomically (a temporary file, then os.replace), and only when every parameter is finite."""
    networks = [m for m in modules.values() if isinstance(m, nn.Module)]
    if not all(torch.isfinite(p).all() for m in networks for p in m.parameters()):
        raise FloatingPointError("a parameter is not finite")
    torch.save(state | {name: m.state_dict() for name, m in modules.items()}, path + ".tmp")
    os.replace(path + ".tmp", path)


def rng_states(envs) -> dict:
    """Python's, numpy's, torch's (and CUDA's) and the action space's RNG states, in weights_only types."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "action_space": envs.action_space.np_random.bit_generator.state}


def set_rng_states(states: dict, envs):
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in states["python"]))
    states["numpy"]["state"]["key"] = np.array(states["numpy"]["state"]["key"], dtype=np.uint32)
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    envs.action_space.np_random.bit_generator.state = states["action_space"]


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None
             ) -> np.ndarray:
    """Undiscounted returns of the deterministic policy a = mu(s) on a separate env, episode k seeded
    seed + k.

    `actor` may be the path of a checkpoint."""
    env = make_env(env_id, video_folder)()
    if isinstance(actor, str):
        state = load_checkpoint(actor, "--evaluate")["actor"]
        actor = Actor(env.observation_space, env.action_space)
        try:
            actor.load_state_dict(state)
        except RuntimeError:
            sys.exit(f"error: the checkpoint's actor does not fit {env_id}'s observation and action spaces")
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


def make_envs(args: Args, device: torch.device):
    """The training envs, after the checks that need them: a missing package, the spaces, the memory."""
    try:
        envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    except gym.error.DependencyNotInstalled as e:
        package = re.search(r'pip install "?([^"`]+)"?`?$', str(e))
        hint = f'pip install "{package.group(1)}"' if package else str(e)
        sys.exit(f"error: {args.env_id} needs an optional package: {hint}")
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        sys.exit(f"error: td3.py needs a 1-D Box observation space, {args.env_id} has {obs_space}")
    if not (isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1
            and np.isfinite([act_space.low, act_space.high]).all()):
        sys.exit(f"error: td3.py needs a bounded 1-D Box action space, {args.env_id} has {act_space}")
    needed = ReplayBuffer.bytes_needed(args.buffer_size, obs_space.shape[0], act_space.shape[0])
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    elif os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            lines = [line.split() for line in f if line.startswith("MemAvailable:")]
        available = int(lines[0][1]) * 1024 if lines else math.inf
    else:
        available = math.inf
    if needed > available:
        sys.exit(f"error: a replay buffer of {args.buffer_size:,} transitions needs {needed:,} bytes "
                 f"({needed / 2**30:.1f} GiB), {available / 2**30:.1f} GiB is available ({device}): lower "
                 "--buffer-size")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def make_run_dir(args: Args) -> str:
    """runs/{env}__{exp}__{seed}__{date-time}, -2, -3, ... appended when one started in the same second."""
    base = path = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    os.makedirs("runs", exist_ok=True)
    for k in range(2, 1000):
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            path = f"{base}-{k}"
    sys.exit(f"error: cannot make a run folder {base}")


def train(args: Args) -> dict:
    checkpoint = None
    if args.resume:  # the checkpoint's settings, but for the few a resume may change
        checkpoint = load_checkpoint(args.resume, "--resume")
        args = replace(Args(**checkpoint["args"]), resume=args.resume, cuda=args.cuda, threads=args.threads,
                       checkpoint_every=args.checkpoint_every)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on a GPU
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    envs = make_envs(args, device)
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    run_dir = (os.path.dirname(args.resume) or ".") if args.resume else make_run_dir(args)
    path = os.path.join(run_dir, "checkpoint.pt")
    print(f"device: {device}")
    if args.total_timesteps % args.num_envs:
        rounded = args.total_timesteps // args.num_envs * args.num_envs
        print(f"note: --total-timesteps {args.total_timesteps} rounded to {rounded} (whole steps of "
              f"{args.num_envs} envs)")

    actor = Actor(obs_space, act_space).to(device)
    critic = TwinCritic(obs_space, act_space).to(device)
    actor_target = copy.deepcopy(actor).requires_grad_(False)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    # fused: one kernel per step for all weights, its step count on the device (a CUDA graph can replay it)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=True)
    modules = {"actor": actor, "critic": critic, "actor_target": actor_target, "critic_target": critic_target,
               "actor_optimizer": actor_optimizer, "critic_optimizer": critic_optimizer}
    rb = ReplayBuffer(args.buffer_size, obs_space, act_space, device)
    critic_step, actor_step = compiled(args, device, update_critic, update_actor)

    global_step = checkpoint["global_step"] if checkpoint else 0
    num_updates = checkpoint["num_updates"] if checkpoint else 0
    obs, _ = envs.reset(seed=args.seed + global_step)  # a resumed run restarts its episodes
    envs.action_space.seed(args.seed)
    if checkpoint:
        for name, module in modules.items():
            module.load_state_dict(checkpoint[name])
        rb.load_state_dict(checkpoint["replay_buffer"])
        set_rng_states(checkpoint["rng"], envs)
        print(f"resumed {args.resume} at step {global_step:,}")
    writer = SummaryWriter(run_dir, purge_step=global_step if checkpoint else None)
    if not checkpoint:
        table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    def stop(message: str, code: int):
        progress.close()
        writer.close()
        envs.close()
        print(message, file=sys.stderr if code == 1 else sys.stdout, flush=True)
        sys.exit(code)

    def non_finite(what: str):
        last = f"The last good checkpoint: {path}" if os.path.exists(path) else None
        last = last or "No checkpoint was written yet."
        stop(f"error: {what} at step {global_step:,}; stopped. {last}", 1)

    def write_checkpoint():
        state = {"script": "td3", "args": asdict(args), "global_step": global_step,
                 "num_updates": num_updates, "replay_buffer": rb.state_dict(), "rng": rng_states(envs)}
        try:
            save_checkpoint(path, state, modules)
        except FloatingPointError as e:
            non_finite(str(e))

    signals = []  # Ctrl-C or SIGTERM: finish the step, write the checkpoint, exit; a second one exits at once
    handlers = {s: signal.signal(s, lambda s, _: os._exit(128 + s) if signals else signals.append(s))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        recent_returns, eval_return, qf_loss, policy_loss = deque(maxlen=20), float("nan"), None, None
        num_iterations = args.total_timesteps // args.num_envs
        random_iterations = math.ceil(args.learning_starts / args.num_envs)  # vector steps of random actions
        first = global_step // args.num_envs
        learn_from = max(first, random_iterations)  # SPS: learning-phase steps of this process
        run_start = start_time = time.time()
        start_step, eval_seconds = learn_from * args.num_envs, 0.0
        progress = tqdm(total=num_iterations * args.num_envs, initial=global_step, disable=None, unit="step")
        for iteration in range(first, num_iterations):
            global_step = (iteration + 1) * args.num_envs
            if iteration == learn_from:
                start_time, eval_seconds = time.time(), 0.0
            if iteration < random_iterations:
                actions = envs.action_space.sample()
            else:
                with torch.no_grad():
                    action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
                    noise = torch.randn_like(action) * args.exploration_noise
                    actions = actor.clip(action + noise * actor.action_scale).cpu().numpy()  # [explore]
            next_obs, rewards, terminations, truncations, infos = envs.step(actions)
            rb.add(obs, actions, rewards, final_observations(next_obs, infos), terminations)  # not truncated
            obs = next_obs
            if "_episode" in infos:
                for i in np.flatnonzero(infos["_episode"]):
                    recent_returns.append(float(infos["episode"]["r"][i]))
                    writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], global_step)

            if iteration >= random_iterations:
                # updates_per_step updates per env step, counted over the learning phase
                learning_steps = global_step - random_iterations * args.num_envs
                while num_updates < int(learning_steps * args.updates_per_step):
                    num_updates += 1
                    batch = rb.sample(args.batch_size)
                    qf_loss = critic_step(batch, actor_target, critic, critic_target, critic_optimizer, args)
                    if num_updates % args.policy_frequency == 0:  # [delayed]
                        policy_loss = actor_step(batch[0], actor, critic, actor_optimizer)  # on the batch's s
                        polyak_update(actor, actor_target, args.tau)
                        polyak_update(critic, critic_target, args.tau)
                if global_step % args.log_every < args.num_envs and policy_loss is not None:
                    sps = (global_step - start_step) / (time.time() - start_time - eval_seconds)
                    for tag, loss in (("losses/qf_loss", qf_loss), ("losses/actor_loss", policy_loss)):
                        loss = loss.item()
                        if not math.isfinite(loss):
                            non_finite(f"{tag} is {loss}")
                        writer.add_scalar(tag, loss, global_step)
                    writer.add_scalar("charts/SPS", sps, global_step)
                    ret = f"{np.mean(recent_returns):.1f}" if recent_returns else ""
                    progress.set_postfix(sps=f"{sps:.0f}", ret=ret)
            progress.update(args.num_envs)
            if global_step % args.eval_every < args.num_envs and iteration < num_iterations - 1:
                eval_start = time.time()
                eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000).mean()
                writer.add_scalar("eval/episodic_return", eval_return, global_step)
                eval_seconds += time.time() - eval_start
            periodic = args.checkpoint_every and global_step % args.checkpoint_every < args.num_envs
            if signals or periodic and iteration < num_iterations - 1:  # (the final one: after the loop)
                write_checkpoint()
            if signals:
                stop(f"interrupted at step {global_step:,}: checkpoint {path}; resume with: python td3.py "
                     f"--resume {path}", 128 + signals[0])
        progress.close()
        envs.close()
        sps = (global_step - start_step) / max(time.time() - start_time - eval_seconds, 1e-9)
        write_checkpoint()  # before anything optional: the video below may fail
        video = os.path.join(run_dir, "videos") if args.capture_video else None
        try:
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video).mean()
        except Exception as e:  # noqa: BLE001 (a video that fails must not lose the run)
            print(f"warning: video not recorded: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000).mean()
        writer.add_scalar("eval/episodic_return", eval_return, global_step)
        writer.close()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)

    elapsed = timedelta(seconds=round(time.time() - run_start))
    print(f"finished {global_step:,} steps in {elapsed} ({sps:,.0f} steps/s learning); final evaluation "
          f"return {eval_return:,.1f}\nrun folder: {run_dir}   (tensorboard --logdir runs)\ncheckpoint: "
          f"{path}")
    return {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
            "eval/episodic_return": float(eval_return), "charts/SPS": sps, "global_step": global_step,
            "num_updates": num_updates, "run_dir": run_dir, "checkpoint": path}


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.evaluate:  # the checkpoint's env and seed; --env-id only when given on the command line
        saved = load_checkpoint(args.evaluate, "--evaluate")["args"]
        env_id = args.env_id if any(a.split("=")[0] == "--env-id" for a in sys.argv[1:]) else saved["env_id"]
        video = os.path.join(os.path.dirname(args.evaluate), "videos-eval") if args.capture_video else None
        returns = evaluate(args.evaluate, env_id, args.eval_episodes, saved["seed"] + 10_000, video)
        print(f"evaluation of {args.evaluate} on {env_id}: mean return {returns.mean():.1f} ± "
              f"{returns.std():.1f} over {len(returns)} episodes")
    else:
        train(args)
