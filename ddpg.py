"""DDPG (Lillicrap et al., 2015) with the settings of Fujimoto et al.'s "OurDDPG" (2018): 256-256 networks, Adam 3e-4,
batch 256, tau 5e-3, Gaussian noise 0.1 (Lillicrap's: 400-300 networks, 1e-4/1e-3, batch 64, tau 1e-3, OU noise).

The chapter's equations, and the line that realises each (search for the tag):
  [explore]     a = clip(mu_theta(s) + half-width * eps, low, high), eps ~ N(0, sigma^2) or the env's OU state x   train
  [ou]          x <- x + theta_ou (0 - x) dt + sigma_ou sqrt(dt) N(0, I); x <- 0 when an episode ends            OUNoise
  [target]      y = r + gamma (1 - terminated) Q_phi'(s', mu_theta'(s')), never (1 - truncated)                td_target
  [critic-loss] L(phi) = E[(Q_phi(s, a) - y)^2]                                                            update_critic
  [dpg]         grad_theta J = E[grad_a Q_phi(s, a)|a=mu(s) grad_theta mu_theta(s)]: minimise -Q(s, mu(s))  update_actor
  [polyak]      theta' <- tau theta + (1 - tau) theta',  phi' <- tau phi + (1 - tau) phi'                  polyak_update
Run:  python ddpg.py --env-id Pendulum-v1 --total-timesteps 10000 --learning-starts 1000  # a minute or two
"""

import copy
import math
import os
import random
import signal
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Literal

if not os.environ.get("DISPLAY"):  # headless video: MuJoCo renders with EGL, SDL with its dummy driver
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._functorch.config  # noqa: E402
import torch.distributed  # noqa: E402
import torch.nn as nn  # noqa: E402
import tyro  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402

warnings.filterwarnings("ignore", message=".*is out of date")  # v4 MuJoCo ids are deliberate: published v4


@dataclass
class Args:
    """DDPG on a gymnasium env with continuous actions. Steps count all envs together."""

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
    """record the final evaluation to <run folder>/videos (with --evaluate: a new videos-eval folder)"""
    checkpoint_every: int = 50_000
    """write <run folder>/checkpoint.pt every this many env steps (0: at the end and on Ctrl-C/SIGTERM)"""
    resume: str | None = None
    """(none: a new run) continue a checkpoint's run in its folder; --cuda, --threads, --checkpoint-every may differ"""
    evaluate: str | None = None
    """load this checkpoint and print the mean return of --eval-episodes episodes on its env (or --env-id)"""
    env_id: str = "Hopper-v4"
    """the gymnasium environment id (flat Box observations, bounded Box actions)"""
    total_timesteps: int = 1_000_000
    """environment steps in total, all envs together (a larger one on --resume trains the run longer)"""
    num_envs: int = 1
    """parallel environments (SyncVectorEnv); each vector step adds num_envs transitions"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (preallocated on the device; the oldest are overwritten)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 0.005
    """target smoothing coefficient: theta' <- tau theta + (1 - tau) theta'"""
    batch_size: int = 256
    """transitions per gradient update, sampled uniformly from the replay buffer"""
    learning_starts: int = 25_000
    """env steps (all envs together) of uniformly random actions before learning starts (Fujimoto's: 25k)"""
    updates_per_step: float = 1.0
    """critic updates per env step, all envs together (--num-envs 4: 4 updates per vector step at 1.0)"""
    policy_lr: float = 3e-4
    """Adam learning rate of the actor"""
    q_lr: float = 3e-4
    """Adam learning rate of the critic"""
    policy_frequency: int = 1
    """update the actor and the targets once every this many critic updates (DDPG: every update)"""
    noise: Literal["gaussian", "ou"] = "gaussian"
    """exploration noise: independent Gaussian, or a temporally correlated Ornstein-Uhlenbeck process per env"""
    exploration_noise: float = 0.1
    """std of the Gaussian exploration noise (--noise gaussian), as a fraction of the action half-width"""
    ou_theta: float = 0.15
    """OU mean-reversion rate theta (--noise ou; the DDPG paper's 0.15)"""
    ou_sigma: float = 0.2
    """OU volatility sigma, as a fraction of the action half-width (--noise ou; the DDPG paper's 0.2)"""
    ou_dt: float = 1.0
    """OU time step dt (--noise ou): 1 is one env step, as in the DDPG paper; baselines used 0.01"""
    eval_every: int = 5_000
    """evaluate the deterministic policy mu(s) every this many env steps and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded seed + 10000 + k"""
    log_every: int = 100
    """write losses and SPS to TensorBoard every this many env steps (the only host syncs of the updates)"""
    compile: bool = False
    """torch.compile the update functions (the first updates wait ~30 s; on a CPU no faster than eager)"""
    cudagraphs: bool = False
    """with CUDA: also replay the compiled updates as CUDA graphs (torch.compile mode "reduce-overhead")"""

    def __post_init__(self):  # each failed check is one line on stderr and exit status 1
        for failed, message in (
            *((not vars(self)[k] > 0, f"--{k.replace('_', '-')} must be positive, got {vars(self)[k]}") for k in (
                "total_timesteps", "num_envs", "buffer_size", "batch_size", "updates_per_step", "policy_lr", "q_lr",
                "policy_frequency", "ou_theta", "ou_dt", "threads", "eval_every", "eval_episodes", "log_every")),
            *((vars(self)[k] < 0, f"--{k.replace('_', '-')} must not be negative, got {vars(self)[k]}") for k in (
                "learning_starts", "exploration_noise", "ou_sigma", "checkpoint_every")),
            (not 0 <= self.seed < 2**32, f"--seed must be in [0, 2**32 - 1], got {self.seed}"),
            *((not 0 < vars(self)[k] <= 1, f"--{k} must be in (0, 1], got {vars(self)[k]}") for k in ("gamma", "tau")),
            (self.ou_theta * self.ou_dt >= 1, "--ou-theta times --ou-dt must be below 1 (a stable OU step)"),
            (math.ceil(self.learning_starts / max(self.num_envs, 1)) >= self.total_timesteps // max(self.num_envs, 1),
             f"--learning-starts ({self.learning_starts}) must be below --total-timesteps ({self.total_timesteps})"),
            (self.buffer_size < self.num_envs, f"--buffer-size must hold one step of {self.num_envs} envs"),
            (self.cudagraphs and not (self.cuda and torch.cuda.is_available()), "--cudagraphs needs a CUDA device"),
        ):
            if failed:
                fail(message)
        check_env_id(self.env_id)


class Actor(nn.Module):
    """mu_theta(s): a 256x256 MLP with a tanh output in [-1, 1], rescaled to the action bounds."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        super().__init__()
        obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
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
        sizes = [observation_space.shape[0] + action_space.shape[0], 256, 256, 1]
        self.layers = nn.ModuleList(nn.Linear(n_in, n_out) for n_in, n_out in zip(sizes[:-1], sizes[1:]))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Q_phi(s, a); `detach` takes the weights as constants (the actor update's gradient is in a only)."""
        x = torch.cat([obs, action], -1)
        for k, layer in enumerate(self.layers):
            weight, bias = (layer.weight.detach(), layer.bias.detach()) if detach else (layer.weight, layer.bias)
            x = nn.functional.linear(x, weight, bias)
            x = torch.relu(x) if k < len(self.layers) - 1 else x.squeeze(-1)
        return x


def make_env(env_id: str, video_folder: str | None = None):
    def thunk():
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, lambda _: True, disable_logger=True)

    return thunk


def env_spaces(env_id: str) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """The env's observation and action spaces; where ddpg.py cannot run it, one line on stderr and exit 1."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        hint = str(e).split("`")[-2:][0]  # the last `pip install ...` the message names (or all of it)
        fail(f"{env_id} needs an optional package: {hint}")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        fail(f"ddpg.py needs a 1-D Box observation space, {env_id} has {obs_space}")
    if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1
            and np.isfinite([action_space.low, action_space.high]).all()):
        fail(f"ddpg.py needs a bounded 1-D Box action space, {env_id} has {action_space}")
    return obs_space, action_space


def check_buffer_fits(size: int, obs_space: gym.spaces.Box, action_space: gym.spaces.Box, device: torch.device):
    """A replay buffer too big for the free memory (MemAvailable, or the GPU's): one line, exit 1."""
    nbytes = ReplayBuffer.bytes_needed(size, obs_space.shape[0], action_space.shape[0])
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    elif os.path.exists("/proc/meminfo"):  # Linux
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    else:
        return
    if nbytes > available:
        fail(f"a replay buffer of {size:,} transitions needs {nbytes:,} bytes; {available:,} are available on the "
             f"{device.type}: lower --buffer-size")


class ReplayBuffer:
    """Transitions in tensors preallocated once on the training device; uniform sampling (torch.randint)."""

    FIELDS = ("obs", "actions", "rewards", "next_obs", "terminations")  # the order of add, sample and batches

    def __init__(self, size: int, observation_space: gym.spaces.Box, action_space: gym.spaces.Box,
                 device: torch.device):
        obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
        self.size, self.pos, self.count, self.device = size, 0, 0, device
        for name, shape in zip(self.FIELDS, ((obs_dim,), (act_dim,), (), (obs_dim,), ())):
            setattr(self, name, torch.zeros(size, *shape, device=device))

    @staticmethod
    def bytes_needed(size: int, obs_dim: int, act_dim: int) -> int:
        return size * (2 * obs_dim + act_dim + 2) * 4  # float32 rows

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

    def state_dict(self) -> dict:  # copies of the filled rows only (a view would save the whole storage)
        rows = {name: getattr(self, name)[: self.count].to("cpu", copy=True) for name in self.FIELDS}
        return {"pos": self.pos, "count": self.count} | rows

    def load_state_dict(self, state: dict):
        self.pos, self.count = state["pos"], state["count"]
        for name in self.FIELDS:
            getattr(self, name)[: self.count] = state[name].to(self.device)


class OUNoise:
    """One Ornstein-Uhlenbeck process per environment, state x of shape [num_envs, act_dim], started at mu."""

    def __init__(self, num_envs: int, act_dim: int, theta: float, sigma: float, dt: float,
                 device: torch.device, mu: float = 0.0):
        self.theta, self.sigma, self.dt, self.mu = theta, sigma, dt, mu
        self.x = torch.full((num_envs, act_dim), mu, device=device)

    def sample(self) -> torch.Tensor:
        """Advance every process by one step of dt and return the new state."""
        drift = self.theta * (self.mu - self.x) * self.dt
        self.x += drift + self.sigma * math.sqrt(self.dt) * torch.randn_like(self.x)  # [ou]
        return self.x.clone()

    def reset(self, ended: np.ndarray | torch.Tensor):
        """Restart the processes of the envs whose episode just ended (their next action starts a new one)."""
        self.x.masked_fill_(torch.as_tensor(ended, device=self.x.device).unsqueeze(1), self.mu)


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true next states s': where an episode ended at this step (SAME_STEP autoreset), next_obs already
    holds the next episode's first observation, and the true last one is in infos["final_obs"]."""
    real_next_obs = next_obs.copy()
    if "_final_obs" in infos:
        ended = infos["_final_obs"]
        real_next_obs[ended] = np.stack(infos["final_obs"][ended])
    return real_next_obs


def td_target(rewards: torch.Tensor, terminations: torch.Tensor, next_q: torch.Tensor, gamma: float
              ) -> torch.Tensor:
    """y from the rewards [B], the done flags [B] (1 where terminated, 0 at a time limit or mid-episode) and
    the target critic's Q_phi'(s', mu_theta'(s')) [B]."""
    return rewards + gamma * (1 - terminations) * next_q  # [target]


def update_critic(batch: tuple[torch.Tensor, ...], actor_target: Actor, critic: Critic, critic_target: Critic,
                  critic_optimizer: torch.optim.Optimizer, args: Args) -> torch.Tensor:
    obs, actions, rewards, next_obs, terminations = batch
    with torch.no_grad():  # the target actor and the target critic, once each
        y = td_target(rewards, terminations, critic_target(next_obs, actor_target(next_obs)), args.gamma)
    qf_loss = ((critic(obs, actions) - y) ** 2).mean()  # [critic-loss]
    critic_optimizer.zero_grad()
    qf_loss.backward()
    critic_optimizer.step()
    return qf_loss.detach()


def update_actor(obs: torch.Tensor, actor: Actor, critic: Critic, actor_optimizer: torch.optim.Optimizer
                 ) -> torch.Tensor:
    # [dpg] through Q_phi, its weights detached: no gradient is computed for the critic here
    policy_loss = -critic(obs, actor(obs), detach=True).mean()
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


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, video_folder: str | None = None) -> np.ndarray:
    """Undiscounted returns of the deterministic policy a = mu(s) on a separate env, episode k seeded seed + k."""
    env = make_env(env_id, video_folder)()
    returns = np.zeros(episodes)
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        done = False
        while not done:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=actor.action_scale.device)[None])
            obs, reward, terminated, truncated, _ = env.step(action[0].cpu().numpy())
            returns[k] += reward
            done = terminated or truncated
    env.close()
    return returns


def evaluate_saved(checkpoint: dict, env_id: str, episodes: int, video_folder: str | None) -> np.ndarray:
    """--evaluate: the checkpoint's actor on `env_id`, seeded as the run's evaluations."""
    actor = Actor(*env_spaces(env_id))
    load_weights(actor, checkpoint["actor"], env_id)
    return evaluate(actor, env_id, episodes, checkpoint["args"]["seed"] + 10_000, video_folder)


def train(args: Args) -> dict:
    run = Run(args)  # the run to resume (its Args), seeds, device
    args, device = run.args, run.device
    obs_space, action_space = env_spaces(args.env_id)
    check_buffer_fits(args.buffer_size, obs_space, action_space, device)
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    actor = Actor(obs_space, action_space).to(device)
    critic = Critic(obs_space, action_space).to(device)
    actor_target = copy.deepcopy(actor).requires_grad_(False)
    critic_target = copy.deepcopy(critic).requires_grad_(False)
    # fused Adam: one kernel for all weights, its step count on the device (a CUDA graph can replay it)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=True)
    rb = ReplayBuffer(args.buffer_size, obs_space, action_space, device)
    ou = OUNoise(args.num_envs, action_space.shape[0], args.ou_theta, args.ou_sigma, args.ou_dt, device)
    critic_step, actor_step = compiled(args, device, update_critic, update_actor)
    envs.action_space.seed(args.seed)
    num_updates = run.restore(actor=actor, critic=critic, actor_target=actor_target, critic_target=critic_target,
                              actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer, replay_buffer=rb,
                              action_space_rng=envs.action_space.np_random).get("num_updates", 0)
    num_iterations = args.total_timesteps // args.num_envs
    random_iterations = math.ceil(args.learning_starts / args.num_envs)  # in whole vector steps
    learn_from = random_iterations * args.num_envs  # updates are counted from this env step on
    global_step = run.begin(total=num_iterations * args.num_envs, stride=args.num_envs)
    evaluate_now = lambda video: evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video)
    obs, _ = envs.reset(seed=args.seed + global_step)  # on resume, the episodes in progress restart
    qf_loss = policy_loss = None
    for iteration in range(global_step // args.num_envs, num_iterations):
        global_step = (iteration + 1) * args.num_envs
        if iteration < random_iterations:  # act: uniformly at random, then mu(s) plus noise
            actions = envs.action_space.sample()
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
                noise = ou.sample() if args.noise == "ou" else torch.randn_like(action) * args.exploration_noise
                actions = actor.clip(action + noise * actor.action_scale).cpu().numpy()  # [explore]
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)  # step
        # store: the true s' (not the reset observation), terminations only, never truncations
        rb.add(obs, actions, rewards, final_observations(next_obs, infos), terminations)
        ou.reset(terminations | truncations)  # [ou] a new episode starts a new process
        obs = next_obs
        run.episodes(infos, global_step)
        if iteration == random_iterations:  # charts/SPS: the learning phase only
            run.restart_clock(global_step - args.num_envs)
        while num_updates < int((global_step - learn_from) * args.updates_per_step):  # update
            num_updates += 1
            batch = rb.sample(args.batch_size)
            qf_loss = critic_step(batch, actor_target, critic, critic_target, critic_optimizer, args)
            if num_updates % args.policy_frequency == 0:  # the actor on the states of the critic's batch
                policy_loss = actor_step(batch[0], actor, critic, actor_optimizer)
                polyak_update(actor, actor_target, args.tau)
                polyak_update(critic, critic_target, args.tau)
        if global_step % args.log_every < args.num_envs and policy_loss is not None:
            run.log(global_step, {"losses/qf_loss": qf_loss, "losses/actor_loss": policy_loss})
        if run.due(args.eval_every, global_step):
            run.evaluate(global_step, evaluate_now)
        run.end_step(global_step, num_updates=num_updates)
    envs.close()
    return run.finish(global_step, evaluate_now, num_updates=num_updates)


# === Run harness: run folder, TensorBoard, progress, checkpoints, resume, signals, NaN, closing lines. ===
# The same text in ac.py, a2c.py, a3c.py, ddpg.py, td3.py and sac.py (tests/test_harness.py compares them). It
# knows no algorithm: train() hands it the things to save (state_dict/load_state_dict, a tensor, a numpy Generator)
# and the scalars to log. Under torchrun, rank 0 alone makes the folder, writes, evaluates and prints.
SCRIPT = os.path.basename(__file__)[: -len(".py")]
MAY_CHANGE = ("cuda", "threads", "checkpoint_every", "resume", "total_timesteps")  # on --resume
GIVEN: set[str] = set()  # the Args fields named on the command line


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # torchrun's, else 0 and 1


def fail(message: str):
    """One line on stderr (rank 0's alone) and exit status 1."""
    sys.exit(f"error: {message}" if rank_world()[0] == 0 else 1)


def check_env_id(env_id: str):
    if env_id not in gym.registry:
        hint = "; ALE ids come with `pip install ale-py`" if env_id.startswith("ALE/") else (
            f"; {env_id.split('/')[0]} ids come with the package that registers them" if "/" in env_id else "")
        fail(f"unknown --env-id {env_id!r} (not in gymnasium's registry{hint})")


def load_checkpoint(path: str, flag: str) -> dict:
    if not os.path.isfile(path):
        fail(f"{flag} {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (whatever torch.load says, the file is not one of ours)
        fail(f"{flag} {path}: not a duet checkpoint (torch.load failed: {type(e).__name__})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        fail(f"{flag} {path}: not a duet checkpoint (no 'script' entry)")
    if checkpoint["script"] != SCRIPT:
        fail(f"{flag} {path}: a checkpoint of {checkpoint['script']}.py, not {SCRIPT}.py")
    return Checkpoint(checkpoint, f"{flag} {path}")


class Checkpoint(dict):
    """A loaded checkpoint, whose entry that is not there (another version of the script wrote it) is one line."""

    def __init__(self, entries: dict, source: str):
        super().__init__(entries)
        self.source = source

    def __missing__(self, key):
        fail(f"{self.source}: no {key!r} entry: another version of {SCRIPT}.py wrote it; use that version")


def load_weights(net: nn.Module, state: dict, env_id: str):
    try:
        net.load_state_dict(state)
    except RuntimeError:  # the shapes differ
        fail(f"--evaluate: the checkpoint's networks do not fit {env_id}'s observation and action spaces")


def new_folder(base: str, name: str, make: bool = True) -> str:
    """base/name, or base/name-2, -3, ... where it exists: never write into another run's folder."""
    for k in range(1, 10_000):
        path = os.path.join(base, name if k == 1 else f"{name}-{k}")
        try:
            os.makedirs(path) if make else os.path.exists(path) and os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            fail(f"cannot make the folder {path}: {e.strerror}")


def state_of(thing):
    if isinstance(thing, torch.Tensor):
        return thing.detach().cpu().clone()
    return thing.bit_generator.state if isinstance(thing, np.random.Generator) else thing.state_dict()


def load_state(thing, state):
    if isinstance(thing, torch.Tensor):
        with torch.no_grad():
            thing.copy_(state)
    elif isinstance(thing, np.random.Generator):
        thing.bit_generator.state = state
    else:
        thing.load_state_dict(state)


def rng_states() -> dict:  # as lists and ints: weights_only loading refuses numpy arrays
    numpy = np.random.get_state()
    return {"python": random.getstate(), "numpy": [numpy[0], numpy[1].tolist(), *numpy[2:]],
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(rng: dict):
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class NoWriter:  # the TensorBoard writer of ranks other than 0: every call does nothing
    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class Run:
    """One run's bookkeeping, in train()'s order: Run(args) (resume, seeds, device, torchrun), restore(things),
    begin(total, stride) (folder, TensorBoard, progress, signals), then per step episodes(), log(), due() and
    evaluate(), end_step() (checkpoints, Ctrl-C), and finish() (final checkpoint, evaluation, closing lines)."""

    def __init__(self, args):
        self.rank, self.world = rank_world()
        self.checkpoint = load_checkpoint(args.resume, "--resume") if args.resume else None
        self.args = args = self.resumed_args(args) if self.checkpoint else args
        self.step, self.written, self.signals, self.received, self.per_rank = 0, False, [], [], {}
        self.recent_returns, self.eval_return, self.eval_seconds = deque(maxlen=20), math.nan, 0.0
        seed = args.seed + self.rank * args.num_envs  # torchrun: rank r's envs are envs rN .. rN + N - 1 of one run
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on a GPU needs it
        torch.backends.cudnn.deterministic = args.torch_deterministic
        torch.set_num_threads(args.threads)
        self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        if self.world > 1:  # gloo on CPUs, nccl on GPUs: rank r on its machine's GPU number LOCAL_RANK
            if self.device.type == "cuda":
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if self.checkpoint and self.checkpoint["world_size"] != self.world:
            fail(f"--resume {args.resume}: the run used {self.checkpoint['world_size']} processes, this {self.world}")

    def resumed_args(self, args):
        """The run's own Args, but for MAY_CHANGE; another setting that differs is one line, exit 1."""
        saved, given, default = self.checkpoint["args"], asdict(args), {f.name: f.default for f in fields(args)}
        named = lambda k: k in GIVEN or given[k] != default[k]  # on the command line, or in a call to train
        changed = [k for k in saved if k not in MAY_CHANGE and named(k) and given[k] != saved[k]]
        if changed:
            fail(f"--resume {args.resume}: not the run's settings: " + ", ".join(
                f"--{k.replace('_', '-')} {given[k]} (the run's: {saved[k]})" for k in changed))
        budget = args.total_timesteps if named("total_timesteps") else saved["total_timesteps"]
        if budget < saved["total_timesteps"]:
            fail(f"--resume {args.resume}: --total-timesteps {budget} is below the run's {saved['total_timesteps']}")
        if self.checkpoint["finished"] and budget == saved["total_timesteps"]:
            print(f"{args.resume} is finished ({self.checkpoint['global_step']:,} steps); to train it longer: python "
                  f"{SCRIPT}.py --resume {args.resume} --total-timesteps N (N > {saved['total_timesteps']})")
            sys.exit(0)
        args = type(args)(**saved | {k: given[k] for k in MAY_CHANGE} | {"total_timesteps": budget, "resume": None})
        args.resume = given["resume"]  # (Args checks itself only without --resume: here, as the run's own)
        return args

    def restore(self, per_rank: dict | None = None, **things) -> dict:
        """What a checkpoint saves (per_rank: each rank's own); on --resume, loaded. Returns the checkpoint (or {}),
        whose counters train() reads back."""
        self.things, self.per_rank = things, per_rank or {}
        if not self.checkpoint:
            return {}
        mine = self.checkpoint["ranks"][self.rank]
        for name, thing in (*things.items(), *self.per_rank.items()):
            load_state(thing, (self.checkpoint if name in things else mine)[name])
        set_rng_states(mine["rng"])
        self.recent_returns.extend(self.checkpoint["recent_returns"])
        self.step = self.checkpoint["global_step"]
        return self.checkpoint

    def begin(self, total: int, stride: int) -> int:
        """Folder, TensorBoard, progress bar, clock, signal handlers; `stride` steps an iteration, `total` in
        all. Returns the step to start from."""
        self.total, self.stride, folder = total, stride, None
        if self.checkpoint:
            folder = os.path.dirname(self.args.resume) or "."  # the path as the user gave it
            if not os.access(folder, os.W_OK):
                fail(f"--resume {self.args.resume}: cannot write in the run folder {folder}")
            names = [f for f in os.listdir(folder) if f.startswith("events.out.tfevents.")]
            while time.time() < max((int(f.split(".")[3]) for f in names), default=0) + 1:
                time.sleep(0.05)  # TensorBoard reads event files in name order, named by the second of their start
        elif self.rank == 0:
            folder = new_folder("runs", f"{self.args.env_id.replace('/', '-')}__{self.args.exp_name}__"
                                        f"{self.args.seed}__{time.strftime('%Y%m%d-%H%M%S')}")
        if self.world > 1:  # every rank learns rank 0's folder
            box = [folder]
            torch.distributed.broadcast_object_list(box, src=0)
            folder = box[0]
        self.dir, self.path = folder, os.path.join(folder, "checkpoint.pt")
        self.written, self.writer = os.path.exists(self.path), NoWriter()
        if self.rank == 0:
            print(f"device: {self.device}" + (f"; {self.world} processes" if self.world > 1 else "")
                  + (f"; resuming {self.args.resume} at step {self.step:,}" if self.checkpoint else ""))
            if total != self.args.total_timesteps and not self.checkpoint:
                print(f"note: --total-timesteps {self.args.total_timesteps:,} rounded to {total:,} (whole iterations "
                      f"of {stride:,} steps)")
            # on resume, TensorBoard drops what the interrupted run logged after its checkpoint
            self.writer = SummaryWriter(folder, purge_step=self.step + 1 if self.checkpoint else None)
            if not self.checkpoint:
                table = "\n".join(f"|{key}|{value}|" for key, value in asdict(self.args).items())
                self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        self.progress = tqdm(total=total, initial=self.step, unit="step", disable=None if self.rank == 0 else True)
        self.run_start = time.time()
        self.restart_clock(self.step)
        self.old_handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self.step

    def on_signal(self, signum, frame):  # the first Ctrl-C / SIGTERM stops after this step, a second one at once
        if self.world > 1:  # torchrun: pending until the ranks agree in end_step (torchrun passes a Ctrl-C on, too)
            self.received.append(signum)
        elif self.signals:
            os._exit(128 + signum)
        else:
            self.signals.append(signum)

    def restart_clock(self, step: int):  # charts/SPS counts from here (off-policy: from the learning phase on)
        self.clock_step, self.clock_start, self.eval_seconds = step, time.time(), 0.0

    def sps(self) -> float:
        return (self.step - self.clock_step) / max(time.time() - self.clock_start - self.eval_seconds, 1e-9)

    def episodes(self, infos: dict, step: int):  # the episodes that ended at this step (RecordEpisodeStatistics)
        for i in np.flatnonzero(infos.get("_episode", [])):
            self.recent_returns.append(float(infos["episode"]["r"][i]))
            self.writer.add_scalar("charts/episodic_return", infos["episode"]["r"][i], step)
            self.writer.add_scalar("charts/episodic_length", infos["episode"]["l"][i], step)

    def log(self, step: int, scalars: dict, write: bool = True):
        """Scalars (torchrun: the ranks' means) and charts/SPS to TensorBoard; one not finite stops the run."""
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device) for v in scalars.values()])
        if self.world > 1:
            torch.distributed.all_reduce(values)
            values /= self.world
        self.step = step
        for name, value in zip(scalars, values.tolist()):
            if not math.isfinite(value):
                self.stop(f"error: {name} is {value} at step {step:,}; stopped. {self.last_good()}", 1)
            if write:
                self.writer.add_scalar(name, value, step)
        if write:
            self.writer.add_scalar("charts/SPS", self.sps(), step)
            self.progress.set_postfix(sps=f"{self.sps():.0f}", ret=f"{np.mean(self.recent_returns or [np.nan]):.1f}")

    def due(self, every: int, step: int) -> bool:  # this iteration crossed a multiple of `every`, not the last
        return every > 0 and step % every < self.stride and step < self.total

    def evaluate(self, step: int, evaluate_now):
        """evaluate_now(video_folder) -> episode returns, by rank 0, timed out of charts/SPS."""
        start = time.time()
        if self.rank == 0:
            self.eval_return = float(np.mean(evaluate_now(None)))
            self.writer.add_scalar("eval/episodic_return", self.eval_return, step)
        self.eval_seconds += time.time() - start

    def end_step(self, step: int, **counters):
        """A checkpoint when one is due or a signal came; after a signal, the run stops (exit 128 + signal)."""
        self.step = step
        self.progress.update(self.stride)
        if self.world > 1:  # a signal to any rank stops all of them after this step
            signum = torch.tensor(self.received[:1] or [0], device=self.device)
            torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
            self.signals[:] = [int(signum)] if signum else []
        if self.signals or self.due(self.args.checkpoint_every, step):
            self.save(counters)
        if self.signals:
            how = "torchrun (same options)" if self.world > 1 else "python"
            self.stop(f"interrupted at step {step:,}: checkpoint {self.path}; resume with: {how} {SCRIPT}.py "
                      f"--resume {self.path}", 128 + self.signals[0])

    def last_good(self) -> str:
        return f"The last good checkpoint: {self.path}" if self.written else "No checkpoint was written yet."

    def save(self, counters: dict, finished: bool = False):
        """Every registered thing, each rank's own and its random states, the counters; atomic (a .tmp file, then
        os.replace): a crash or a full disk leaves the last checkpoint whole. Never one with a NaN."""
        params = [p for t in self.things.values() for p in (t.parameters() if isinstance(t, nn.Module) else
                  [t] if isinstance(t, torch.Tensor) else [])]
        if not all(torch.isfinite(p).all() for p in params):
            self.stop(f"error: a parameter is not finite at step {self.step:,}; stopped. {self.last_good()}", 1)
        ranks = [{"rng": rng_states()} | {name: state_of(t) for name, t in self.per_rank.items()}]
        if self.world > 1:
            ranks = ranks * self.world
            torch.distributed.all_gather_object(ranks, ranks[0])
        if self.rank > 0:
            return
        self.writer.flush()  # the curves up to the checkpoint survive a crash with it
        checkpoint = {"script": SCRIPT, "args": asdict(self.args), "global_step": self.step, "finished": finished,
                      "recent_returns": list(self.recent_returns), "world_size": self.world, "ranks": ranks} | \
            counters | {name: state_of(t) for name, t in self.things.items()}
        try:
            torch.save(checkpoint, self.path + ".tmp")
            os.replace(self.path + ".tmp", self.path)
        except (OSError, RuntimeError) as e:  # a full disk, a read-only folder
            self.stop(f"error: cannot write {self.path} ({e}); stopped. {self.last_good()}", 1)
        self.written = True

    def stop(self, message: str, code: int):  # every rank calls it at the same step (NaN and signals are agreed)
        self.progress.close()
        self.writer.close()
        for s, handler in self.old_handlers.items():
            signal.signal(s, handler)
        if self.rank == 0:
            print(message, file=sys.stderr if code == 1 else sys.stdout, flush=True)
        if self.world > 1:  # (a process group left open ends the process in C++'s "terminate called ...")
            torch.distributed.destroy_process_group()
        sys.exit(code)

    def finish(self, step: int, evaluate_now, **counters) -> dict:
        """The final checkpoint (before anything optional), the final evaluation (with --capture-video, its
        videos), the closing lines; returns the run's metrics."""
        self.step = step
        self.progress.close()
        sps, seconds = self.sps(), round(time.time() - self.run_start)
        self.save(counters, finished=True)
        video = new_folder(self.dir, "videos", make=False) if self.args.capture_video and self.rank == 0 else None
        if self.rank == 0:
            try:
                self.eval_return = float(np.mean(evaluate_now(video)))
            except Exception as e:  # noqa: BLE001 (no renderer, no encoder: a video must not cost the run)
                print(f"warning: video not recorded: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                      file=sys.stderr)
                video, self.eval_return = None, float(np.mean(evaluate_now(None)))
            self.writer.add_scalar("eval/episodic_return", self.eval_return, step)
        self.writer.close()
        for s, handler in self.old_handlers.items():
            signal.signal(s, handler)
        if self.world > 1:
            torch.distributed.destroy_process_group()
        if self.rank == 0:
            print(f"finished {step:,} steps in {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} "
                  f"({sps:,.0f} steps/s learning); final evaluation return {self.eval_return:.1f}\n"
                  f"run folder: {self.dir}   (tensorboard --logdir {os.path.dirname(self.dir) or '.'})\n"
                  f"checkpoint: {self.path}" + (f"\nvideos: {video}" if video else ""))
        return {"charts/episodic_return": float(np.mean(self.recent_returns)) if self.recent_returns else math.nan,
                "eval/episodic_return": self.eval_return, "charts/SPS": sps, "global_step": step,
                "run_dir": self.dir, "checkpoint": self.path} | counters


def evaluate_checkpoint(args, env_id: str | None = None) -> np.ndarray:
    """--evaluate PATH: the script's evaluate_saved(checkpoint, env_id, episodes, video folder) on the run's env
    (or --env-id), printed in one line."""
    checkpoint = load_checkpoint(args.evaluate, "--evaluate")
    env_id = env_id or (args.env_id if "env_id" in GIVEN else checkpoint["args"]["env_id"])
    check_env_id(env_id)
    video = new_folder(os.path.dirname(args.evaluate) or ".", "videos-eval", make=False) if args.capture_video \
        else None
    returns = evaluate_saved(checkpoint, env_id, args.eval_episodes, video)
    print(f"evaluation of {args.evaluate} on {env_id}: mean return {returns.mean():.1f} ± {returns.std():.1f} "
          f"over {len(returns)} episodes" + (f"\nvideos: {video}" if video else ""))
    return returns


def main(args_class):
    """The command line: train(args), or with --evaluate PATH, evaluate_checkpoint(args)."""
    GIVEN.update(a[2:].split("=")[0].replace("-", "_") for a in sys.argv[1:] if a.startswith("--"))
    args = tyro.cli(args_class)
    if args.resume and args.evaluate:
        fail("--resume and --evaluate exclude each other: resume to train on, evaluate to watch")
    evaluate_checkpoint(args) if args.evaluate else train(args)


if __name__ == "__main__":
    main(Args)
