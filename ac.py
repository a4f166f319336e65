"""The chapter's basic one-step actor-critic ("Basic AC"): the TD residual is the advantage.

A separate actor pi_theta(a|s) (Categorical over logits for Discrete actions, Gaussian with a state-independent
log-std for Box actions) and critic V_phi(s), both 64x64 tanh MLPs, each with its own Adam. Every step of the
`--num-envs` envs gives one batch (s_t, a_t, r_t, s_{t+1}, terminated_t) and one update of both networks: no
replay, no rollout, no entropy bonus.

The chapter's equations, and the line that realises each (search for the tag):
  [policy]      pi_theta(a|s): Categorical(logits) or N(mu_theta(s), exp(log_std)^2)     Actor.forward
  [critic]      V_phi(s)                                                                   Critic.forward
  [td]          delta_t = r_t + gamma V_phi(s_{t+1}) (1 - terminated_t) - V_phi(s_t)       td_target, train
  [actor]       loss_actor = -E[log pi_theta(a_t|s_t) delta_t], delta detached            train
  [critic-loss] loss_critic = 1/2 E[(V_phi(s_t) - (r_t + gamma V_phi(s_{t+1}) (1 - terminated_t)))^2]   train
Worked example (chapter): V(s) = -2, r = +1, V(s') = -1.5, gamma = 0.99 gives delta = 1.515.
`terminated`, never `truncated`, stops the bootstrap: at a time limit the target uses the true s_{t+1}, which
SAME_STEP autoreset leaves in infos["final_obs"]. Box actions: a sample is clipped to the bounds only to step the
env; its log-probability is the unclipped sample's.

Run:  python ac.py                                                     # CartPole-v1, 300k steps, ~35 CPU s
      python ac.py --env-id InvertedPendulum-v4 --total-timesteps 100000   # Gaussian actions, ~15 CPU s
      python ac.py --resume runs/<run>/checkpoint.pt                        # continue a run (Ctrl-C writes one)
      python ac.py --evaluate runs/<run>/checkpoint.pt --capture-video      # watch a saved agent
"""

import math
import os
import random
import re
import signal
import sys
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, fields

if not os.environ.get("DISPLAY"):  # headless video: MuJoCo renders with EGL, SDL with its dummy driver
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed  # noqa: E402
import torch.nn as nn  # noqa: E402
import tyro  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402

warnings.filterwarnings("ignore", message=".*is out of date")  # v4 MuJoCo ids are deliberate


@dataclass
class Args:
    """The chapter's basic one-step actor-critic: the TD residual is the advantage, one update a step."""

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
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (flat Box observations; Discrete or Box actions)"""
    total_timesteps: int = 300_000
    """environment steps in total, all envs together (rounded down to whole steps of --num-envs)"""
    num_envs: int = 16
    """environments stepped together; each step of all of them is one batch and one update"""
    gamma: float = 0.99
    """the discount factor gamma"""
    eval_every: int = 50_000
    """evaluate the deterministic policy (argmax / mean action) every this many env steps and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded seed + 10000 + k"""
    async_envs: bool = False
    """step the environments in subprocesses (gym.vector.AsyncVectorEnv) instead of in this one"""
    actor_lr: float = 5e-4
    """the actor's Adam step size"""
    critic_lr: float = 1e-3
    """the critic's Adam step size"""
    log_every: int = 100
    """write the losses and charts/SPS (training steps/s, evaluation time excluded) every this many updates"""
    checkpoint_every: int = 50_000
    """write <run folder>/checkpoint.pt every this many env steps (0: at the end and on Ctrl-C/SIGTERM)"""
    resume: str | None = None
    """continue this checkpoint's run in its folder (none: a new run); all but the episodes in progress"""
    evaluate: str | None = None
    """evaluate this checkpoint's deterministic policy over --eval-episodes, no training (none: train)"""

    def __post_init__(self):  # each failed check is one line on stderr and exit status 1 (on --resume: the run's)
        if self.resume:
            return
        for name in ("total_timesteps", "num_envs", "threads", "actor_lr", "critic_lr", "eval_every",
                     "eval_episodes", "log_every"):
            if not getattr(self, name) > 0:
                fail(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for failed, message in (
            (not 0 <= self.seed < 2**32, f"--seed must be in [0, 2**32 - 1], got {self.seed}"),
            (not 0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}"),
            (self.checkpoint_every < 0, f"--checkpoint-every must be >= 0, got {self.checkpoint_every}"),
            (self.total_timesteps < self.num_envs,
             f"--total-timesteps ({self.total_timesteps}) must be at least --num-envs ({self.num_envs})"),
        ):
            if failed:
                fail(message)
        check_env_id(self.env_id)


def make_env(env_id: str, video_folder: str | None = None):
    def thunk() -> gym.Env:
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, lambda _: True, disable_logger=True)

    return thunk


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
        if self.continuous:  # a diagonal Gaussian: log-probs and entropies sum over the action dimensions
            normal = torch.distributions.Normal(out, self.log_std.exp(), validate_args=False)
            return torch.distributions.Independent(normal, 1, validate_args=False)
        return torch.distributions.Categorical(logits=out, validate_args=False)


class Critic(nn.Module):
    def __init__(self, obs_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s).squeeze(-1)  # [critic] V(s), shape [batch]


def check_env(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The env's (observation, action) spaces; where ac.py cannot run it, one line on stderr and exit 1."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        hint = re.search(r'pip install "?gymnasium\[\w+\]"?', str(e))
        fail(f"{env_id} needs an optional package: {hint.group(0) if hint else e}")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        fail(f"ac.py needs a flat Box observation space, got {obs_space}")
    if not (isinstance(action_space, gym.spaces.Discrete) or
            (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        fail(f"unsupported action space {action_space}: ac.py handles Discrete and flat Box")
    return obs_space, action_space


def env_actions(action: torch.Tensor, action_space: gym.Space) -> np.ndarray:
    """The actions to step the envs with: Box samples clipped to the bounds (their log-prob is unclipped)."""
    action = action.cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(action, action_space.low, action_space.high)
    return action


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The true s_{t+1}: where an episode ended at this step (SAME_STEP autoreset), next_obs already holds the
    next episode's first observation, and the true last one is in infos["final_obs"]."""
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


def evaluate(actor: Actor, env_id: str, episodes: int, seed: int, video_folder: str | None = None
             ) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (argmax / mean action) on a separate env, episode k
    seeded seed + k."""
    env = make_env(env_id, video_folder)()
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


def evaluate_saved(checkpoint: dict, env_id: str, episodes: int, video_folder: str | None) -> np.ndarray:
    """--evaluate: the checkpoint's actor on `env_id`, seeded as the run's evaluations."""
    obs_space, action_space = check_env(env_id)
    actor = Actor(obs_space.shape[0], action_space)
    load_weights(actor, checkpoint["actor"], env_id)
    return evaluate(actor, env_id, episodes, checkpoint["args"]["seed"] + 10_000, video_folder)


def train(args: Args) -> dict:
    run = Run(args)  # the run to resume (its Args), seeds, device
    args, device = run.args, run.device
    obs_space, action_space = check_env(args.env_id)
    num_updates = args.total_timesteps // args.num_envs
    actor, critic = Actor(obs_space.shape[0], action_space).to(device), Critic(obs_space.shape[0]).to(device)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    run.restore(actor=actor, critic=critic, actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer)
    global_step = run.begin(total=num_updates * args.num_envs, stride=args.num_envs)
    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_env([make_env(args.env_id) for _ in range(args.num_envs)],
                      autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)
    obs = as_tensor(envs.reset(seed=args.seed + global_step)[0])  # on resume, the episodes in progress restart
    policy_return = lambda video: evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video)
    for update in range(global_step // args.num_envs + 1, num_updates + 1):
        global_step = update * args.num_envs
        dist = actor(obs)  # act: a_t ~ pi(.|s_t)
        action = dist.sample()
        next_obs, reward, terminated, truncated, infos = envs.step(env_actions(action, action_space))  # step
        s_next = as_tensor(final_observations(next_obs, infos))  # the true s_{t+1}, not the reset observation
        target = td_target(critic, as_tensor(reward), s_next, as_tensor(terminated), args.gamma)  # update
        delta = target - critic(obs)  # [td] delta_t, with gradient for the critic
        actor_loss = -(dist.log_prob(action) * delta.detach()).mean()  # [actor] delta a fixed weight
        critic_loss = 0.5 * (delta**2).mean()  # [critic-loss]
        actor_optimizer.zero_grad()
        actor_loss.backward()
        actor_optimizer.step()
        critic_optimizer.zero_grad()
        critic_loss.backward()
        critic_optimizer.step()
        obs = as_tensor(next_obs)
        run.episodes(infos, global_step)
        if update % args.log_every == 0:
            run.log(global_step, {"losses/actor_loss": actor_loss.detach(), "losses/critic_loss": critic_loss.detach(),
                                  "losses/entropy": dist.entropy().mean().detach()})
        if run.due(args.eval_every, global_step):
            run.evaluate(global_step, policy_return)
        run.end_step(global_step)
    envs.close()
    return run.finish(global_step, policy_return)


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
