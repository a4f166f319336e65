"""The chapter's A2C: synchronous advantage actor-critic, N parallel envs, T-step rollouts and GAE(lambda).

`--num-envs` environments step together (gym.vector.SyncVectorEnv, or AsyncVectorEnv with --async-envs)
for `--num-steps` steps; the N x T transitions give the advantages by one backward GAE pass, and one
gradient step of one optimizer over the actor's and the critic's parameters, with the gradient norm
clipped. The actor and the critic are separate 64x64 tanh MLPs (Categorical over logits for Discrete
actions, Gaussian with a state-independent log-std for Box actions).

The chapter's equations, and the line that realises each (search for the tag):
    [policy]  pi_theta(a|s): Categorical(logits) or N(mu_theta(s), exp(log_std)^2)       Actor.forward
    [critic]  V_phi(s)                                                                     Critic.forward
    [td]      delta_t = r_t + gamma V(s_{t+1}) (1 - done_t) - V(s_t)                      compute_gae
    [gae]     A_t = sum_l (gamma lambda)^l delta_{t+l} = delta_t + gamma lambda (1 - done_t) A_{t+1}
                                                                                           compute_gae
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
final observations in infos are normalised like the others. Evaluation uses those statistics merged over
the envs (`merged_obs_stats`), frozen; the checkpoint stores them ("obs_rms", and each env's for a resume).

Several processes (torch.distributed, started by torchrun; the lines under `if world > 1`): K copies of
this script (ranks) each step their own --num-envs envs, seeded apart; all start from rank 0's weights, and
each update's gradient is averaged over the ranks (one all-reduce) before the clipping and the step: the
chapter's synchronous A2C with N = K x --num-envs. --total-timesteps counts the steps of all ranks. Rank 0
alone makes the run folder, writes TensorBoard, evaluates, checkpoints (with every rank's env statistics,
merged for evaluation) and prints; its last-20 returns are its own envs'. A Ctrl-C or SIGTERM to any rank
stops all after that update (checkpoint, exit 128 + signal); a NaN stops all (the ranks average their losses);
a resume needs the same K. Backend: gloo on CPUs, nccl with --cuda (rank r on its machine's GPU LOCAL_RANK).
Without torchrun: K = 1, one process as before.

Run:  python a2c.py                                                      # CartPole-v1, 100k steps, ~11 CPU s
      python a2c.py --env-id InvertedPendulum-v4                              # Gaussian actions, ~12 CPU s
      python a2c.py --num-envs 32 --async-envs --normalize-obs          # envs in subprocesses, normalised obs
      python a2c.py --evaluate runs/<run>/checkpoint.pt --capture-video       # watch a saved agent
      torchrun --standalone --nproc-per-node 2 a2c.py --num-envs 4         # 2 processes x 4 envs (N = 8)
      tensorboard --logdir runs
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
from dataclasses import asdict, dataclass, replace
from datetime import timedelta

if not os.environ.get("DISPLAY"):  # headless: MuJoCo renders video with EGL, SDL draws to no window
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed  # noqa: E402
import torch.nn as nn  # noqa: E402
import tyro  # noqa: E402
from gymnasium.wrappers.utils import RunningMeanStd  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402

warnings.filterwarnings("ignore", message=".*is out of date.*")  # -v4 MuJoCo ids are deliberate (see README)


@dataclass
class Args:
    """A2C with GAE on a gymnasium env. The defaults are tuned for CartPole-v1 and differ from the common \
A2C settings (RMSprop 7e-4, clip 0.5, entropy 0, lambda 1): see each. charts/SPS counts training only \
(env steps over wall time without the evaluations)."""

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
    """record the final evaluation to <run folder>/videos (--evaluate: <checkpoint's folder>/videos-eval)"""
    checkpoint_every: int = 20_000
    """write <run folder>/checkpoint.pt every this many env steps (0: only at the end and on Ctrl-C or \
SIGTERM); each takes ~5 ms, 0.1% of a default CartPole run"""
    resume: str | None = None
    """(none: a new run) continue the run of this checkpoint in its folder to its --total-timesteps; \
restores networks, optimizer, step-size schedule, counters, RNGs, observation statistics; not the envs: \
episodes in progress restart (envs reset, seeded seed + step); all values but --cuda, --threads, \
--checkpoint-every come from the checkpoint"""
    evaluate: str | None = None
    """(none: train) load this checkpoint, run --eval-episodes deterministic episodes on its env (or \
--env-id's if given), print the mean return"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (flat Box observations; Discrete or Box actions)"""
    total_timesteps: int = 100_000
    """environment steps in total, all environments (of all torchrun ranks) together (rounded down to whole \
N x T rollouts)"""
    num_envs: int = 8
    """N: environments stepped together (under torchrun: by each rank)"""
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
    """lambda of GAE (0: TD residual, 1: Monte Carlo; the common 1 did as well on CartPole, 3 seeds at \
100k: README)"""
    learning_rate: float = 3e-3
    """Adam's step size, actor and critic together (the common RMSprop 7e-4: a return of 26-67 at 100k \
steps, not 500)"""
    anneal_lr: bool = True
    """decay the step size linearly to 0 over the run"""
    vf_coef: float = 0.5
    """c1: weight of the value loss"""
    ent_coef: float = 0.01
    """c2: weight of the entropy bonus (the common 0: no measurable difference on CartPole, 3 seeds at \
100k)"""
    max_grad_norm: float = 10.0
    """clip the global gradient norm (actor and critic together) to this (the common 0.5: last-20 returns \
257-500 at 100k steps, not 498-500)"""
    normalize_obs: bool = False
    """normalise observations by running statistics (gymnasium's NormalizeObservation on each env)"""
    log_every: int = 10
    """write losses and SPS to TensorBoard every this many updates"""

    def __post_init__(self):  # the argument checks: each failure is one line on stderr and exit status 1
        rules = [(name, getattr(self, name) > 0, "positive") for name in (
            "total_timesteps", "num_envs", "threads", "eval_every", "eval_episodes", "num_steps",
            "learning_rate", "max_grad_norm", "log_every")]
        rules += [(name, getattr(self, name) >= 0, "non-negative")
                  for name in ("vf_coef", "ent_coef", "checkpoint_every")]
        rules += [("seed", 0 <= self.seed <= 2**32 - 1, "in [0, 2**32 - 1]"), ("gamma", 0 < self.gamma <= 1,
                  "in (0, 1]"), ("gae_lambda", 0 <= self.gae_lambda <= 1, "in [0, 1]")]
        for name, ok, rule in rules:
            if not ok:
                sys.exit(f"error: --{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        if self.env_id not in gym.registry:
            sys.exit(f"error: unknown --env-id {self.env_id!r}: not in gymnasium's registry")
        if self.total_timesteps < self.num_envs * self.num_steps:
            sys.exit(f"error: --total-timesteps ({self.total_timesteps}) must be at least --num-envs x "
                     f"--num-steps ({self.num_envs * self.num_steps})")


def make_env(env_id: str, video_folder: str | None = None, normalize_obs: bool = False, worker: bool = False):
    def thunk() -> gym.Env:
        if worker:  # an AsyncVectorEnv subprocess: Ctrl-C is for the main process, which stops cleanly
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            env = gym.make(env_id, render_mode=None if video_folder is None else "rgb_array")
        except gym.error.DependencyNotInstalled as error:
            extra = re.search(r"gymnasium\[\w+\]", str(error))
            sys.exit(f"error: {env_id} needs an optional package: "
                     + (f'pip install "{extra.group()}"' if extra else str(error)))
        if video_folder is not None:
            env = gym.wrappers.RecordVideo(env, video_folder, episode_trigger=lambda e: True,
                                           disable_logger=True)
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
        sys.exit(f"error: unsupported action space {action_space}: a2c.py handles Discrete and flat Box "
                 "actions")


def mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """The chapter's network: two hidden layers of 64 tanh units."""
    return nn.Sequential(nn.Linear(in_dim, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                         nn.Linear(64, out_dim))


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


def env_obs_stats(envs: gym.vector.VectorEnv) -> list[dict]:
    """Each sub-env's NormalizeObservation statistics as tensors (`envs`: the Sync/AsyncVectorEnv itself)."""
    return [{"mean": torch.as_tensor(s.mean), "var": torch.as_tensor(s.var), "count": float(s.count)}
            for s in envs.get_attr("obs_rms")]


def merged_obs_stats(stats: list[dict]) -> dict:
    """The sub-envs' statistics (env_obs_stats) pooled into one mean, variance and count."""
    counts = np.array([s["count"] for s in stats])
    means, variances = (np.stack([s[key].numpy() for s in stats]) for key in ("mean", "var"))
    weights = (counts / counts.sum())[:, None]
    mean = (weights * means).sum(0)
    var = (weights * (variances + (means - mean) ** 2)).sum(0)
    return {"mean": torch.as_tensor(mean), "var": torch.as_tensor(var), "count": float(counts.sum())}


def gathered(items: list, world: int) -> list:
    """torchrun: every rank's `items`, concatenated in rank order (each rank must call it); else `items`."""
    if world == 1:
        return items
    per_rank = [None] * world
    torch.distributed.all_gather_object(per_rank, items)
    return [item for rank_items in per_rank for item in rank_items]


def broadcast(value, src: int = 0):
    """torchrun: rank `src`'s `value` on every rank (each rank must call it)."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


class NoWriter:
    """The TensorBoard writer of the ranks other than 0 under torchrun: every call does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def running_mean_std(stats: dict) -> RunningMeanStd:
    rms = RunningMeanStd(shape=tuple(stats["mean"].shape), dtype=stats["mean"].numpy().dtype)
    rms.mean, rms.var, rms.count = stats["mean"].numpy().copy(), stats["var"].numpy().copy(), stats["count"]
    return rms


def save_checkpoint(path: str | None, args: Args, global_step: int, update: int, actor: Actor, critic: Critic,
                    optimizer: torch.optim.Optimizer, obs_stats: list[dict] | None, recent_returns: deque,
                    world_size: int = 1) -> bool:
    """Everything a resume needs, written atomically (a .tmp file, then os.replace), so that a crash at any
    moment leaves the last complete one. Writes nothing, and returns False, if a parameter is not finite."""
    if not all(torch.isfinite(p).all() for p in (*actor.parameters(), *critic.parameters())):
        return False
    if path is None:  # a rank other than 0 under torchrun: rank 0 writes
        return True
    numpy_state = np.random.get_state()  # as lists and ints, which weights_only loading accepts
    rng = {"python": random.getstate(), "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
           "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available()
           else []}
    torch.save({"script": "a2c", "args": asdict(args), "global_step": global_step, "update": update,
                "actor": actor.state_dict(), "critic": critic.state_dict(),
                "optimizer": optimizer.state_dict(),
                "obs_rms": merged_obs_stats(obs_stats) if obs_stats else None, "env_obs_rms": obs_stats,
                "recent_returns": list(recent_returns), "rng": rng, "world_size": world_size}, path + ".tmp")
    os.replace(path + ".tmp", path)
    return True


def set_rng_states(rng: dict) -> None:
    """Python's, numpy's and torch's random states as save_checkpoint stored them."""
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def load_checkpoint(path: str, flag: str) -> dict:
    """The checkpoint at `path`, or one line on stderr and exit status 1 saying why it cannot be used."""
    if not os.path.exists(path):
        sys.exit(f"error: {flag} {path}: no such file")
    if os.path.isdir(path):
        sys.exit(f"error: {flag} {path}: is a directory")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 (any reason torch cannot read it)
        sys.exit(f"error: {flag} {path}: not a duet checkpoint ({str(error).splitlines()[0][:80]})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (no 'script' entry)")
    if checkpoint["script"] != "a2c":
        sys.exit(f"error: {flag} {path}: a checkpoint of {checkpoint['script']}.py, not a2c.py")
    return checkpoint


def evaluate(actor: Actor | str, env_id: str, episodes: int, seed: int, video_folder: str | None = None,
             obs_rms: dict | None = None) -> np.ndarray:
    """Undiscounted returns of the deterministic policy (argmax / mean action) over `episodes` episodes,
    episode k seeded with seed + k. `actor` may be a checkpoint path (its observation statistics come with
    it); otherwise `obs_rms` (from merged_obs_stats) when the actor was trained on normalised observations.
    The statistics stay frozen. A video that cannot be recorded is a warning; the episodes run without it."""
    checkpoint = load_checkpoint(actor, "--evaluate") if isinstance(actor, str) else None
    obs_rms = checkpoint["obs_rms"] if checkpoint else obs_rms
    try:
        env = make_env(env_id, video_folder, normalize_obs=obs_rms is not None)()
        check_spaces(env)
        if obs_rms is not None:
            env.update_running_mean = False
            env.obs_rms = running_mean_std(obs_rms)
        if checkpoint:
            actor = Actor(env.observation_space.shape[0], env.action_space)
            shapes = lambda state: {k: v.shape for k, v in state.items()}
            if shapes(actor.state_dict()) != shapes(checkpoint["actor"]):
                trained_on = checkpoint["args"]["env_id"]
                sys.exit(f"error: the checkpoint's actor (trained on {trained_on}) does not fit {env_id}'s "
                         "observation and action spaces")
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
    except Exception as error:  # noqa: BLE001 (no renderer, no encoder: a video must not cost the run)
        if video_folder is None:
            raise
        print(f"warning: video not recorded: {str(error).splitlines()[0] if str(error) else repr(error)}",
              file=sys.stderr)
        return evaluate(actor, env_id, episodes, seed, None, obs_rms)


def train(args: Args) -> dict:
    checkpoint = load_checkpoint(args.resume, "--resume") if args.resume else None
    if checkpoint:  # every value but these three comes from the checkpoint
        args = replace(Args(**checkpoint["args"]), resume=args.resume, cuda=args.cuda, threads=args.threads,
                       checkpoint_every=args.checkpoint_every)
    # torchrun starts K copies of this script (ranks), each with its own N envs: the chapter's N is K x N.
    # Without torchrun K = 1, rank 0, and every `if world > 1` below is skipped.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if checkpoint and checkpoint.get("world_size", 1) != world:
        sys.exit(f"error: --resume {args.resume}: the run used {checkpoint.get('world_size', 1)} processes, "
                 f"this one {world}")
    T, N = args.num_steps, args.num_envs
    num_updates = args.total_timesteps // (T * N * world)  # the budget counts the steps of all ranks
    global_step, start_update = (checkpoint["global_step"], checkpoint["update"]) if checkpoint else (0, 0)
    checkpoint_step = global_step
    seed = args.seed + rank * N  # rank r's envs are seeded as envs rN .. rN + N - 1 of one process would be
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on a GPU
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    if world > 1:  # gloo on CPUs, nccl on GPUs: rank r on its machine's GPU number LOCAL_RANK
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
    envs = vector_env([make_env(args.env_id, normalize_obs=args.normalize_obs, worker=args.async_envs)
                       for _ in range(N)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    check_spaces(envs)  # the last check: the run folder is made only after it
    if num_updates * T * N * world != args.total_timesteps and not checkpoint and rank == 0:
        print(f"note: --total-timesteps {args.total_timesteps:,} rounded to {num_updates * T * N * world:,} "
              f"(whole rollouts of {world * N} envs x {T} steps)")
    if checkpoint:
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    elif rank > 0:  # rank 0 makes the run folder and writes in it
        run_dir = None
    else:
        run_dir = base = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
        for k in range(2, 1000):  # two runs started in the same second never share a folder
            try:
                os.makedirs(run_dir)
                break
            except FileExistsError:
                run_dir = f"{base}-{k}"
    if world > 1:
        run_dir = broadcast(run_dir)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    if rank == 0:
        print(f"device: {device}" + (f"; {world} processes" if world > 1 else "")
              + (f"; resuming {args.resume} at step {global_step:,}" if checkpoint else ""))
    writer = (SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)  # drops later steps
              if rank == 0 else NoWriter())
    if not checkpoint:
        table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    obs_dim, action_space = envs.single_observation_space.shape[0], envs.single_action_space
    actor, critic = Actor(obs_dim, action_space).to(device), Critic(obs_dim).to(device)
    params = [*actor.parameters(), *critic.parameters()]
    if world > 1:  # every rank starts from rank 0's weights
        for p in params:
            torch.distributed.broadcast(p.data, src=0)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate)
    recent_returns, eval_return = deque(maxlen=20), float("nan")
    if checkpoint:
        actor.load_state_dict(checkpoint["actor"])
        critic.load_state_dict(checkpoint["critic"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        recent_returns.extend(checkpoint["recent_returns"])
        if rank == 0:  # the checkpoint holds rank 0's random states; the other ranks go on from their seeds
            set_rng_states(checkpoint["rng"])
        if args.normalize_obs:  # the checkpoint holds the statistics of every rank's envs, rank 0's first
            envs.set_attr("obs_rms", [running_mean_std(stats) for stats in checkpoint["env_obs_rms"]
                                      [rank * N:(rank + 1) * N]])
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)

    observations = torch.zeros((T, N, obs_dim), device=device)
    actions = torch.zeros((T, N, *action_space.shape), device=device,
                          dtype=torch.float32 if actor.continuous else torch.long)
    rewards, dones, values = (torch.zeros((T, N), device=device) for _ in range(3))
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    obs = as_tensor(envs.reset(seed=seed + global_step)[0])
    # the statistics of every rank's envs (torchrun: every rank calls it, as it gathers them), rank 0's first
    obs_stats = lambda: gathered(env_obs_stats(envs.unwrapped), world) if args.normalize_obs else None
    eval_obs_rms = lambda: merged_obs_stats(obs_stats()) if args.normalize_obs else None
    crossed = lambda every: global_step % every < T * N * world  # this update's steps crossed a multiple
    written, stop_signal, received = False, [], []  # torchrun: a signal is `received` until all ranks agree

    def stop(line: str, code: int) -> None:  # close everything, print one line, exit with status `code`
        progress.close()
        writer.close()
        envs.close()
        if rank == 0:
            print(line, file=sys.stderr if code == 1 else sys.stdout, flush=True)
        sys.exit(code)

    def checkpoint_or_stop(problem: str | None = None) -> None:  # never overwrite a good checkpoint with NaNs
        nonlocal written
        writer.flush()
        stats = obs_stats()  # every rank, then rank 0 writes; the ranks' parameters are the same
        if problem is None and save_checkpoint(ckpt_path if rank == 0 else None, args, global_step, update,
                                               actor, critic, optimizer, stats, recent_returns, world):
            written = True
            return
        stop(f"error: {problem or 'a parameter is not finite'} at step {global_step:,}; stopped. "
             + (f"The last good checkpoint: {ckpt_path}" if written else "No checkpoint was written yet."), 1)

    def on_signal(signum, frame):  # the first Ctrl-C / SIGTERM stops after this update, a second one at once
        if stop_signal and world == 1:  # (torchrun passes its own Ctrl-C on: a second one for each rank)
            os._exit(128 + signum)
        (stop_signal if world == 1 else received).append(signum)

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    start_time, eval_seconds, update = time.time(), 0.0, start_update
    sps = lambda: (global_step - checkpoint_step) / (time.time() - start_time - eval_seconds)  # training only
    progress = tqdm(total=num_updates * T * N * world, initial=global_step, unit="step",
                    disable=None if rank == 0 else True)
    try:
        for update in range(start_update + 1, num_updates + 1):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.learning_rate * (1 - (update - 1) / num_updates)
            for t in range(T):  # the rollout: T steps of the N envs with the current policy
                global_step += N * world
                with torch.no_grad():
                    action = actor(obs).sample()
                    values[t] = critic(obs)
                observations[t], actions[t] = obs, action
                next_obs, reward, terminated, truncated, infos = envs.step(env_actions(action, action_space))
                rewards[t], dones[t] = time_limit_rewards(critic, reward, terminated, truncated, infos,
                                                          args.gamma)
                obs = as_tensor(next_obs)
                if "episode" in infos:
                    for r, length in zip(infos["episode"]["r"][infos["_episode"]],
                                         infos["episode"]["l"][infos["_episode"]]):
                        recent_returns.append(float(r))
                        writer.add_scalar("charts/episodic_return", r, global_step)
                        writer.add_scalar("charts/episodic_length", length, global_step)
            with torch.no_grad():
                advantages, returns = compute_gae(rewards, values, dones, critic(obs), args.gamma,
                                                  args.gae_lambda)

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

            # read back every update (the rollout waits for the envs at each step anyway): a NaN stops the run
            logged = torch.stack([actor_loss, value_loss, entropy, grad_norm]).detach()
            if world > 1:  # torchrun: the ranks' means, and a signal to any rank stops all after this update
                torch.distributed.all_reduce(logged)
                logged /= world
                signum = torch.tensor(received[:1] or [0], device=device)
                torch.distributed.all_reduce(signum, op=torch.distributed.ReduceOp.MAX)
                stop_signal[:] = [int(signum)] if signum else []
            losses = dict(zip(("actor_loss", "value_loss", "entropy", "grad_norm"), logged.tolist()))
            progress.update(T * N * world)
            bad = next((f"losses/{k} is {v}" for k, v in losses.items() if not math.isfinite(v)), None)
            if update % args.log_every == 0 and not bad:
                for name, value in losses.items():
                    writer.add_scalar(f"losses/{name}", value, global_step)
                writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
                writer.add_scalar("charts/SPS", sps(), global_step)
                progress.set_postfix(sps=f"{sps():.0f}",
                                     ret=f"{np.mean(recent_returns) if recent_returns else 0:.1f}")
            due = args.checkpoint_every and crossed(args.checkpoint_every) and update < num_updates
            if bad or stop_signal or due:
                checkpoint_or_stop(bad)
            if stop_signal:
                stop(f"interrupted at step {global_step:,}: checkpoint {ckpt_path}; resume with: "
                     f"{'torchrun (same options)' if world > 1 else 'python'} a2c.py --resume {ckpt_path}",
                     128 + stop_signal[0])
            if crossed(args.eval_every) and update < num_updates:
                eval_start, eval_rms = time.time(), eval_obs_rms()
                if rank == 0:  # torchrun: rank 0 evaluates while the others wait for it at the next update
                    eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000,
                                           obs_rms=eval_rms).mean()
                    writer.add_scalar("eval/episodic_return", eval_return, global_step)
                eval_seconds += time.time() - eval_start
        progress.close()
        train_seconds, sps_final = time.time() - start_time - eval_seconds, sps()
        checkpoint_or_stop()  # the final checkpoint, before anything optional
        eval_rms = eval_obs_rms()
        if rank == 0:  # the final evaluation, the one recorded with --capture-video
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000,
                                   f"{run_dir}/videos" if args.capture_video else None, eval_rms).mean()
            writer.add_scalar("eval/episodic_return", eval_return, global_step)
    finally:
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    envs.close()
    writer.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank == 0:
        print(f"finished {global_step:,} steps in {timedelta(seconds=round(train_seconds))} "
              f"({sps_final:,.0f} steps/s, evaluations excluded); final evaluation return {eval_return:.1f}")
        print(f"run folder: {run_dir}   (tensorboard --logdir {os.path.dirname(run_dir)})")
        print(f"checkpoint: {ckpt_path}")
    return {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
            "eval/episodic_return": float(eval_return), "charts/SPS": sps_final, "global_step": global_step,
            "run_dir": run_dir, "checkpoint": ckpt_path}


if __name__ == "__main__":
    cli = tyro.cli(Args)
    if cli.evaluate is None:
        train(cli)
    else:  # the checkpoint's env, unless --env-id is on the command line
        saved_args = load_checkpoint(cli.evaluate, "--evaluate")["args"]
        given = any(a.split("=")[0] == "--env-id" for a in sys.argv[1:])
        env_id = cli.env_id if given else saved_args["env_id"]
        folder = os.path.join(os.path.dirname(cli.evaluate), "videos-eval") if cli.capture_video else None
        returns = evaluate(cli.evaluate, env_id, cli.eval_episodes, cli.seed + 10_000, folder)
        print(f"evaluation of {cli.evaluate} on {env_id}: mean return {returns.mean():.1f} "
              f"± {returns.std():.1f} over {len(returns)} episodes")
