"""The chapter's A2C: synchronous advantage actor-critic, N parallel envs, T-step rollouts and GAE(lambda).

Each rollout's N x T transitions give the advantages in one backward GAE pass, then one clipped gradient step of
one Adam over the actor and the critic (64x64 tanh MLPs). The chapter's equations, and where (search the [tag]):
  [policy]  pi_theta(a|s): Categorical(logits) or N(mu_theta(s), exp(log_std)^2)             Actor.forward
  [critic]  V_phi(s)                                                                           Critic.forward
  [td]      delta_t = r_t + gamma V(s_{t+1}) (1 - done_t) - V(s_t)                            compute_gae
  [gae]     A_t = sum_l (gamma lambda)^l delta_{t+l} = delta_t + gamma lambda (1 - done_t) A_{t+1}   compute_gae
  [returns] G_t = A_t + V(s_t), the critic's target                                            compute_gae
  [loss]    L = -E[log pi(a_t|s_t) A_t] + c1/2 E[(V(s_t) - G_t)^2] - c2 E[H(pi(.|s_t))], A_t, G_t constant   train
Every episode end is a done; where a time limit cut one, r_t + gamma V(true final obs) (time_limit_rewards).
Run:  python a2c.py                                                    # CartPole-v1, 100k steps, ~11 CPU s
      python a2c.py --evaluate runs/<run>/checkpoint.pt --capture-video    # watch a saved agent
      torchrun --standalone --nproc-per-node 2 a2c.py --num-envs 4     # 2 processes x 4 envs (N = 8)
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
from functools import partial

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

warnings.filterwarnings("ignore", message=".*is out of date")  # v4 MuJoCo ids are deliberate: published v4


@dataclass
class Args:
    """A2C with GAE, tuned for CartPole-v1 (not the common RMSprop 7e-4, clip 0.5, entropy 0, lambda 1: see each)."""

    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of the experiment, in [0, 2**32 - 1]: the same seed on the same machine gives the same run"""
    torch_deterministic: bool = True
    """torch.use_deterministic_algorithms(True, warn_only=True), cudnn.deterministic, deterministic cuBLAS"""
    cuda: bool = True
    """use CUDA when it is available (falls back to the CPU otherwise); torchrun: rank r on GPU LOCAL_RANK"""
    threads: int = 1
    """torch CPU threads (1 keeps runs side by side from fighting over cores)"""
    capture_video: bool = False
    """record the final evaluation to <run folder>/videos (with --evaluate: a new videos-eval folder)"""
    checkpoint_every: int = 20_000
    """write <run folder>/checkpoint.pt every this many env steps (0: at the end and on Ctrl-C/SIGTERM)"""
    resume: str | None = None
    """(none: a new run) continue a checkpoint's run (--cuda, --threads, --checkpoint-every, more steps may differ)"""
    evaluate: str | None = None
    """(none: train) print the mean return of --eval-episodes episodes of this checkpoint on its env (or --env-id)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (flat Box observations; Discrete or Box actions)"""
    total_timesteps: int = 100_000
    """env steps, all envs of all ranks, in whole N x T rollouts; a larger one on --resume trains on, and --anneal-lr \
then anneals over the new budget from the resumed update: the step size jumps up at the resume"""
    num_envs: int = 8
    """N: environments stepped together (under torchrun: by each rank)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    eval_every: int = 20_000
    """evaluate the deterministic policy (argmax / mean action) every this many env steps and at the end"""
    eval_episodes: int = 10
    """episodes per evaluation, on a separate env seeded seed + 10000 + k"""
    async_envs: bool = False
    """step the environments in subprocesses (gym.vector.AsyncVectorEnv) instead of in this one"""
    num_steps: int = 5
    """T: steps per environment in each rollout (one update per N x T transitions)"""
    gae_lambda: float = 0.95
    """lambda of GAE (0: TD residual, 1: Monte Carlo; the common 1 did as well on CartPole, 3 seeds at 100k)"""
    learning_rate: float = 3e-3
    """Adam's step size (the common RMSprop 7e-4: a return of 26-67 at 100k steps, not 500)"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over --total-timesteps (a larger one on --resume: see there)"""
    vf_coef: float = 0.5
    """c1: weight of the value loss"""
    ent_coef: float = 0.01
    """c2: weight of the entropy bonus (the common 0: no measurable difference on CartPole, 3 seeds at 100k)"""
    max_grad_norm: float = 10.0
    """clip the gradient norm to this (the common 0.5: last-20 returns 257-500 at 100k steps, not 498-500)"""
    normalize_obs: bool = False
    """normalise observations by running statistics (gymnasium's NormalizeObservation on each env)"""
    log_every: int = 10
    """write losses and SPS to TensorBoard every this many updates"""

    def __post_init__(self):  # each failed check is one line on stderr and exit status 1 (on --resume: the run's)
        if self.resume:
            return
        rules = [(name, getattr(self, name) > 0, "positive") for name in (
            "total_timesteps", "num_envs", "threads", "eval_every", "eval_episodes", "num_steps", "learning_rate",
            "max_grad_norm", "log_every")] + [(name, getattr(self, name) >= 0, "non-negative") for name in (
            "vf_coef", "ent_coef", "checkpoint_every")] + [("seed", 0 <= self.seed <= 2**32 - 1, "in [0, 2**32 - 1]"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"), ("gae_lambda", 0 <= self.gae_lambda <= 1, "in [0, 1]")]
        for name, ok, rule in rules:
            if not ok:
                fail(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        check_env_id(self.env_id)
        if self.total_timesteps < (rollout := self.num_envs * self.num_steps):
            fail(f"--total-timesteps ({self.total_timesteps}) must be at least --num-envs x --num-steps ({rollout})")


def make_env(env_id: str, video_folder: str | None = None, normalize_obs: bool = False, worker: bool = False):
    def thunk() -> gym.Env:
        if worker:  # an AsyncVectorEnv subprocess: Ctrl-C is for the main process, which stops cleanly
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        env = gym.make(env_id) if video_folder is None else gym.wrappers.RecordVideo(
            gym.make(env_id, render_mode="rgb_array"), video_folder, lambda _: True, disable_logger=True)
        return gym.wrappers.NormalizeObservation(env) if normalize_obs else env
    return thunk


mlp = lambda i, o: nn.Sequential(nn.Linear(i, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, o))  # 64x64


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
        if self.continuous:  # a diagonal Gaussian: log-probs and entropies sum over the action dims
            normal = torch.distributions.Normal(out, self.log_std.exp(), validate_args=False)
            return torch.distributions.Independent(normal, 1, validate_args=False)
        return torch.distributions.Categorical(logits=out, validate_args=False)


class Critic(nn.Module):
    def __init__(self, obs_dim: int):
        super().__init__()
        self.net = mlp(obs_dim, 1)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.net(s).squeeze(-1)  # [critic] V(s), shape [batch]


def env_spaces(env_id: str) -> tuple[int, gym.Space]:
    """(observation size, action space) of the env; where a2c.py cannot run it, one line on stderr and exit 1."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as e:
        extra = re.search(r"gymnasium\[\w+\]", str(e))
        fail(f"{env_id} needs an optional package: " + (f'pip install "{extra.group()}"' if extra else str(e)))
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        fail(f"a2c.py needs a flat Box observation space, got {obs_space}")
    if not (isinstance(action_space, gym.spaces.Discrete) or
            (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        fail(f"unsupported action space {action_space}: a2c.py handles Discrete and flat Box actions")
    return obs_space.shape[0], action_space


def env_actions(action: torch.Tensor, action_space: gym.Space) -> np.ndarray:
    """The actions to step the envs with: Box samples clipped to the bounds (the log-prob stays unclipped)."""
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


def running_mean_std(stats: dict) -> gym.wrappers.utils.RunningMeanStd:
    rms = gym.wrappers.utils.RunningMeanStd(shape=tuple(stats["mean"].shape), dtype=stats["mean"].numpy().dtype)
    rms.mean, rms.var, rms.count = stats["mean"].numpy().copy(), stats["var"].numpy().copy(), stats["count"]
    return rms


def merged_obs_stats(stats: list[dict]) -> dict:
    """Envs' statistics ({"mean", "var", "count"} each) pooled into those of all their observations together."""
    counts = np.array([s["count"] for s in stats])
    means, variances = (np.stack([s[key].numpy() for s in stats]) for key in ("mean", "var"))
    weights = (counts / counts.sum())[:, None]
    mean = (weights * means).sum(0)
    var = (weights * (variances + (means - mean) ** 2)).sum(0)
    return {"mean": torch.as_tensor(mean), "var": torch.as_tensor(var), "count": float(counts.sum())}


class ObsStats:
    """--normalize-obs: the running statistics of this process's envs (NormalizeObservation's), saved and restored
    per rank (state_dict, load_state_dict), and merged over every env of every rank for evaluation."""

    def __init__(self, envs: gym.vector.VectorEnv, world: int):
        self.envs, self.world = envs, world

    def state_dict(self) -> list[dict]:
        return [{"mean": torch.as_tensor(s.mean), "var": torch.as_tensor(s.var), "count": float(s.count)}
                for s in self.envs.get_attr("obs_rms")]

    def load_state_dict(self, stats: list[dict]):
        self.envs.set_attr("obs_rms", [running_mean_std(s) for s in stats])

    def merged(self) -> dict:
        """torchrun: every rank must call it (it gathers every rank's statistics, rank 0's first)."""
        stats = [self.state_dict()] * self.world
        if self.world > 1:
            torch.distributed.all_gather_object(stats, stats[0])
        return merged_obs_stats([s for rank in stats for s in rank])


def evaluate(actor: nn.Module, env_id: str, episodes: int, seed: int, video_folder: str | None = None,
             obs_rms: dict | None = None) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (argmax / mean action), episode k seeded seed + k; with
    `obs_rms` (merged_obs_stats), observations normalised by those statistics, frozen."""
    env = make_env(env_id, video_folder, normalize_obs=obs_rms is not None)()
    if obs_rms is not None:
        env.update_running_mean, env.obs_rms = False, running_mean_std(obs_rms)
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
    """--evaluate: the checkpoint's actor on `env_id`, seeded as the run's evaluations, observations normalised
    by the statistics of every env of every rank merged (--normalize-obs)."""
    actor = Actor(*env_spaces(env_id))
    load_weights(actor, checkpoint["actor"], env_id)
    stats = [s for rank in checkpoint["ranks"] for s in rank.get("obs_rms", [])]
    return evaluate(actor, env_id, episodes, checkpoint["args"]["seed"] + 10_000, video_folder,
                    merged_obs_stats(stats) if stats else None)


def train(args: Args) -> dict:
    run = Run(args)  # the run to resume (its Args), seeds, device; torchrun: rank, world, process group
    args, device, world = run.args, run.device, run.world
    T, N = args.num_steps, args.num_envs
    obs_dim, action_space = env_spaces(args.env_id)
    envs = (gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv)(
        [make_env(args.env_id, normalize_obs=args.normalize_obs, worker=args.async_envs) for _ in range(N)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    actor, critic = Actor(obs_dim, action_space).to(device), Critic(obs_dim).to(device)
    params = [*actor.parameters(), *critic.parameters()]
    if world > 1:  # every rank starts from rank 0's weights
        for p in params:
            torch.distributed.broadcast(p.data, src=0)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate)
    obs_stats = ObsStats(envs, world) if args.normalize_obs else None
    start = run.restore(per_rank={"obs_rms": obs_stats} if obs_stats else {}, actor=actor, critic=critic,
                        optimizer=optimizer).get("update", 0)  # the updates done (by a run resumed)
    num_updates = args.total_timesteps // (T * N * world)  # the budget counts the steps of all ranks
    global_step = run.begin(total=num_updates * T * N * world, stride=T * N * world)
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)
    observations = torch.zeros((T, N, obs_dim), device=device)
    actions = torch.zeros((T, N, *action_space.shape), device=device,
                          dtype=torch.float32 if actor.continuous else torch.long)
    rewards, dones, values = (torch.zeros((T, N), device=device) for _ in range(3))
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    # rank r's envs are seeded as envs rN .. rN + N - 1 of one process; a resumed run restarts its episodes
    obs = as_tensor(envs.reset(seed=args.seed + run.rank * N + global_step)[0])
    # evaluate_now(video) for run.evaluate and run.finish: every rank merges the ranks' statistics, rank 0 evaluates
    evaluator = lambda: partial(evaluate, actor, args.env_id, args.eval_episodes, args.seed + 10_000,
                                obs_rms=obs_stats and obs_stats.merged())
    for update in range(start + 1, num_updates + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1 - (update - 1) / num_updates)
        for t in range(T):  # the rollout: T steps of the N envs with the current policy
            global_step += N * world
            with torch.no_grad():  # act
                action = actor(obs).sample()
                values[t] = critic(obs)
            next_obs, reward, terminated, truncated, infos = envs.step(env_actions(action, action_space))  # step
            observations[t], actions[t] = obs, action  # store
            rewards[t], dones[t] = time_limit_rewards(critic, reward, terminated, truncated, infos, args.gamma)
            obs = as_tensor(next_obs)
            run.episodes(infos, global_step)
        with torch.no_grad():
            advantages, returns = compute_gae(rewards, values, dones, critic(obs), args.gamma, args.gae_lambda)
        dist = actor(observations.flatten(0, 1))
        actor_loss = -(dist.log_prob(actions.flatten(0, 1)) * advantages.flatten()).mean()
        value_loss = 0.5 * ((critic(observations.flatten(0, 1)) - returns.flatten()) ** 2).mean()
        entropy = dist.entropy().mean()
        loss = actor_loss + args.vf_coef * value_loss - args.ent_coef * entropy  # [loss]
        optimizer.zero_grad()
        loss.backward()
        if world > 1:  # torchrun: the gradient averaged over the ranks, as one gradient of all K x N envs
            grads = torch.cat([p.grad.flatten() for p in params])
            torch.distributed.all_reduce(grads)
            for p, grad in zip(params, (grads / world).split([p.numel() for p in params])):
                p.grad.copy_(grad.view_as(p))
        grad_norm = nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        optimizer.step()
        run.log(global_step, {"losses/actor_loss": actor_loss.detach(), "losses/value_loss": value_loss.detach(),
                              "losses/entropy": entropy.detach(), "losses/grad_norm": grad_norm,
                              "charts/learning_rate": optimizer.param_groups[0]["lr"]},
                write=update % args.log_every == 0)  # every update: a NaN stops the run at once
        if run.due(args.eval_every, global_step):
            run.evaluate(global_step, evaluator())
        run.end_step(global_step, update=update)
    metrics = run.finish(global_step, evaluator(), update=num_updates)
    envs.close()  # after the final checkpoint, which reads the envs' statistics
    return metrics


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
