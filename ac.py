"""The chapter's basic one-step actor-critic ("Basic AC"): the TD residual is the advantage.

A separate actor pi_theta(a|s) (Categorical over logits for Discrete actions, Gaussian with a
state-independent log-std for Box actions) and critic V_phi(s), both 64x64 tanh MLPs, each with its own
optimizer. Every step of the `--num-envs` environments gives one batch of transitions
(s_t, a_t, r_t, s_{t+1}, terminated_t), and each batch is one update of both networks: no replay, no
rollout, no entropy bonus.

The chapter's equations, and the line that realises each (search for the tag):
    [policy]      pi_theta(a|s): Categorical(logits) or N(mu_theta(s), exp(log_std)^2)   Actor.forward
    [critic]      V_phi(s)                                                                 Critic.forward
    [td]          delta_t = r_t + gamma V_phi(s_{t+1}) (1 - terminated_t) - V_phi(s_t)     td_target, train
    [actor]       loss_actor = -E[log pi_theta(a_t|s_t) * delta_t], delta detached         train
    [critic-loss] loss_critic = 1/2 E[(V_phi(s_t) - (r_t + gamma V_phi(s_{t+1}) (1 - terminated_t)))^2]  train
Worked example (chapter): V(s) = -2, r = +1, V(s') = -1.5, gamma = 0.99 gives delta = 1.515.

Time limits: the vector env uses gymnasium's SAME_STEP autoreset, so when an episode ends the step returns
the first observation of the next episode and the true last one in infos["final_obs"]. `final_observations`
puts that true s_{t+1} back, and `td_target` bootstraps from it when a time limit truncated the episode,
never when the task terminated it (then V(s_{t+1}) = 0).
Box actions: the sample a_t ~ N(mu, sigma^2) is clipped to the action bounds only to step the env; its
log-probability is that of the unclipped sample.

Run:  python ac.py                                                       # CartPole-v1, 300k steps, ~35 CPU s
      python ac.py --env-id InvertedPendulum-v4 --total-timesteps 100000     # Gaussian actions, ~15 CPU s
      python ac.py --resume runs/<run>/checkpoint.pt                          # continue a stopped run
      python ac.py --evaluate runs/<run>/checkpoint.pt --capture-video        # watch a saved agent
      tensorboard --logdir runs
"""

import os

if not os.environ.get("DISPLAY"):  # headless video: MuJoCo renders through EGL, pygame without a window
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import contextlib  # noqa: E402
import datetime  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import deque  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import tyro  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402
from tqdm import tqdm  # noqa: E402

warnings.filterwarnings("ignore", message=".*is out of date.*")  # the v4 MuJoCo tasks are deliberate


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
    """record the final evaluation to runs/<run>/videos (--evaluate: to <checkpoint's folder>/videos-eval)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (flat Box observations; Discrete or Box actions)"""
    total_timesteps: int = 300_000
    """environment steps in total, all environments together (rounded down to whole steps of --num-envs)"""
    num_envs: int = 16
    """environments stepped together; each step of all of them is one batch and one update"""
    gamma: float = 0.99
    """the discount factor gamma"""
    eval_every: int = 50_000
    """evaluate the deterministic policy (argmax / mean action) every this many environment steps"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    async_envs: bool = False
    """step the environments in subprocesses (gym.vector.AsyncVectorEnv) instead of in this one"""
    actor_lr: float = 5e-4
    """the actor's Adam step size"""
    critic_lr: float = 1e-3
    """the critic's Adam step size"""
    log_every: int = 100
    """write the losses and charts/SPS (training steps/s, evaluation time excluded) every this many updates"""
    checkpoint_every: int = 50_000
    """write runs/<run>/checkpoint.pt every this many env steps (0: only at the end and when stopped)"""
    resume: str | None = None
    """continue this checkpoint's run (none: a new run); all is restored but the episodes in progress"""
    evaluate: str | None = None
    """evaluate this checkpoint's deterministic policy over --eval-episodes, no training (none: train)"""

    def __post_init__(self):  # argument checks: one line on stderr and exit status 1 for each
        for name in ("total_timesteps", "num_envs", "threads", "actor_lr", "critic_lr", "eval_every",
                     "eval_episodes", "log_every"):
            if not getattr(self, name) > 0:
                sys.exit(f"error: --{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        checks = [
            (0 <= self.seed < 2**32, f"--seed must be in [0, 2**32 - 1], got {self.seed}"),
            (0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}"),
            (self.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {self.checkpoint_every}"),
            (self.env_id in gym.registry, f"unknown --env-id {self.env_id!r}: not in gymnasium's registry"),
            (self.total_timesteps >= self.num_envs,
             f"--total-timesteps ({self.total_timesteps}) must be at least --num-envs ({self.num_envs})"),
            (not (self.resume and self.evaluate), "--resume and --evaluate exclude each other")]
        for ok, message in checks:
            if not ok:
                sys.exit(f"error: {message}")


def make_env(env_id: str, video_folder: str | None = None):
    def thunk() -> gym.Env:
        if video_folder is None:
            return gym.make(env_id)
        env = gym.make(env_id, render_mode="rgb_array")
        return gym.wrappers.RecordVideo(env, video_folder, lambda episode: True, disable_logger=True)

    return thunk


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
    """The env's (observation, action) spaces, or one line on stderr and exit status 1 if ac.py can't."""
    try:
        env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as error:
        package = re.search(r'pip install "?gymnasium\[\w+\]"?', str(error))
        sys.exit(f"error: {env_id} needs an optional package: {package.group(0) if package else error}")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        sys.exit(f"error: ac.py needs a flat Box observation space, got {obs_space}")
    if not (isinstance(action_space, gym.spaces.Discrete) or
            (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1)):
        sys.exit(f"error: unsupported action space {action_space}: ac.py handles Discrete and flat Box")
    return obs_space, action_space


def env_actions(action: torch.Tensor, action_space: gym.Space) -> np.ndarray:
    """The actions to step the envs with: Box samples clipped to the bounds (their log-prob is unclipped)."""
    action = action.cpu().numpy()
    if isinstance(action_space, gym.spaces.Box):
        return np.clip(action, action_space.low, action_space.high)
    return action


def final_observations(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """s_{t+1} of every env's transition: `next_obs`, except where an episode ended at this step (SAME_STEP
    autoreset puts the next episode's first observation there): the true final observation from infos."""
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
    """Undiscounted returns of the deterministic policy (argmax / mean action) over `episodes` episodes,
    episode k seeded with seed + k; each episode recorded to `video_folder` if one is given."""
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


def load_checkpoint(path: str, flag: str) -> dict:
    """The checkpoint at `path`, or one line on stderr and exit status 1 saying why it is not ac.py's."""
    if not os.path.exists(path) or os.path.isdir(path):
        sys.exit(f"error: {flag} {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # a file torch cannot read, or one it refuses to unpickle safely
        sys.exit(f"error: {flag} {path}: not a duet checkpoint ({type(error).__name__})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (no 'script' entry)")
    if checkpoint["script"] != "ac":
        sys.exit(f"error: {flag} {path}: a checkpoint of {checkpoint['script']}.py, not ac.py")
    return checkpoint


def save_checkpoint(path: str, args: Args, global_step: int, actor: Actor, critic: Critic,
                    actor_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer,
                    recent_returns: deque) -> None:
    """All a resume needs but the envs' states, atomically: a crash while writing keeps the old file."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = numpy_state["state"]["key"].tolist()  # weights_only loads lists, not arrays
    torch.save({"script": "ac", "args": asdict(args), "global_step": global_step, "actor": actor.state_dict(),
                "critic": critic.state_dict(), "actor_optimizer": actor_optimizer.state_dict(),
                "critic_optimizer": critic_optimizer.state_dict(), "recent_returns": list(recent_returns),
                "rng": {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}},
               path + ".tmp")
    os.replace(path + ".tmp", path)


def restore_rng(rng: dict) -> None:
    rng["numpy"]["state"]["key"] = np.array(rng["numpy"]["state"]["key"], dtype=np.uint32)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def make_run_dir(args: Args) -> str:
    """runs/{env_id}__{exp_name}__{seed}__{date-time}, with -2, -3, ... appended when it exists already."""
    base = f"runs/{args.env_id}__{args.exp_name}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    for k in itertools.count(1):
        path = base if k == 1 else f"{base}-{k}"
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            continue


@contextlib.contextmanager
def signals_caught():
    """The first SIGINT / SIGTERM is noted (the loop stops after its step); a second one exits at once."""
    caught = []

    def handler(signum, frame):
        if caught:
            os._exit(128 + signum)
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(args: Args) -> dict:
    checkpoint = load_checkpoint(args.resume, "--resume") if args.resume else None
    if checkpoint:  # the saved run's Args, but for the few a resume may change
        keep = {name: getattr(args, name) for name in ("cuda", "threads", "checkpoint_every", "resume")}
        args = Args(**(checkpoint["args"] | keep))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on a GPU
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    print(f"device: {device}")
    obs_space, action_space = check_env(args.env_id)
    num_updates = args.total_timesteps // args.num_envs
    if num_updates * args.num_envs != args.total_timesteps:
        print(f"note: --total-timesteps {args.total_timesteps:,} rounded to {num_updates * args.num_envs:,} "
              f"(whole steps of {args.num_envs} envs)")

    actor, critic = Actor(obs_space.shape[0], action_space).to(device), Critic(obs_space.shape[0]).to(device)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.actor_lr)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.critic_lr)
    optimizers = actor_optimizer, critic_optimizer
    recent_returns, global_step = deque(maxlen=20), 0
    if checkpoint:
        for module, name in ((actor, "actor"), (critic, "critic"), (actor_optimizer, "actor_optimizer"),
                             (critic_optimizer, "critic_optimizer")):
            module.load_state_dict(checkpoint[name])
        recent_returns.extend(checkpoint["recent_returns"])
        global_step = checkpoint["global_step"]
        restore_rng(checkpoint["rng"])
    as_tensor = lambda x: torch.as_tensor(x, dtype=torch.float32, device=device)

    with signals_caught() as caught:
        run_dir = os.path.dirname(args.resume) if args.resume else make_run_dir(args)
        checkpoint_path = f"{run_dir}/checkpoint.pt"
        # a resumed run drops the events the stopped run logged after its checkpoint
        writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
        table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv
        envs = vector_env([make_env(args.env_id) for _ in range(args.num_envs)],
                          autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
        next_obs, _ = envs.reset(seed=args.seed + global_step)  # a resume restarts the episodes in progress
        obs = as_tensor(next_obs)

        def stop_unless_finite(name: str, value: float) -> None:
            """NaN or inf: one line, TensorBoard closed, exit status 1, the last good checkpoint untouched."""
            if not math.isfinite(value):
                progress.close()
                writer.close()
                envs.close()
                last = checkpoint_path if os.path.exists(checkpoint_path) else "no checkpoint was written yet"
                sys.exit(f"error: {name} is {value} at step {global_step:,}; stopped. The last good "
                         f"checkpoint: {last}")

        def write_checkpoint() -> None:
            for name, p in (*actor.named_parameters("actor"), *critic.named_parameters("critic")):
                stop_unless_finite(name, p.sum().item())
            save_checkpoint(checkpoint_path, args, global_step, actor, critic, *optimizers, recent_returns)
            writer.flush()  # the curves up to the checkpoint survive a crash with it

        start_step, eval_time, start_time = global_step, 0.0, time.time()
        progress = tqdm(total=num_updates * args.num_envs, initial=global_step, disable=None, unit="step")
        for update in range(global_step // args.num_envs + 1, num_updates + 1):
            global_step = update * args.num_envs
            dist = actor(obs)
            action = dist.sample()
            next_obs, reward, terminated, truncated, infos = envs.step(env_actions(action, action_space))
            s_next = as_tensor(final_observations(next_obs, infos))

            target = td_target(critic, as_tensor(reward), s_next, as_tensor(terminated), args.gamma)
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

            progress.update(args.num_envs)
            if "episode" in infos:
                ended = infos["_episode"]
                for r, length in zip(infos["episode"]["r"][ended], infos["episode"]["l"][ended]):
                    recent_returns.append(float(r))
                    writer.add_scalar("charts/episodic_return", r, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)
            if update % args.log_every == 0:
                sps = (global_step - start_step) / (time.time() - start_time - eval_time)
                for name, value in (("losses/actor_loss", actor_loss), ("losses/critic_loss", critic_loss),
                                    ("losses/entropy", dist.entropy().mean())):
                    stop_unless_finite(name, value.item())
                    writer.add_scalar(name, value.item(), global_step)
                writer.add_scalar("charts/SPS", sps, global_step)
                progress.set_postfix(sps=f"{sps:.0f}", ret=f"{np.mean(recent_returns or [0]):.1f}")
            if global_step % args.eval_every < args.num_envs and update < num_updates:
                eval_start = time.time()
                eval_return = evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000).mean()
                writer.add_scalar("eval/episodic_return", eval_return, global_step)
                eval_time += time.time() - eval_start
            if caught:
                break
            periodic = args.checkpoint_every and global_step % args.checkpoint_every < args.num_envs
            if periodic and update < num_updates:  # (the last update's checkpoint is written below)
                write_checkpoint()
        progress.close()
        envs.close()
        sps = (global_step - start_step) / (time.time() - start_time - eval_time)
        write_checkpoint()  # before anything optional: a failing video cannot lose the model
        if caught:
            writer.close()
            print(f"interrupted at step {global_step:,}: checkpoint {checkpoint_path}; resume with: "
                  f"python ac.py --resume {checkpoint_path}")
            sys.exit(128 + caught[0])

        video_folder, eval_seed = f"{run_dir}/videos" if args.capture_video else None, args.seed + 10_000
        try:  # the final evaluation, recorded with --capture-video
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, eval_seed, video_folder).mean()
        except Exception as error:
            if video_folder is None:
                raise
            print(f"warning: video not recorded: {(str(error) or type(error).__name__).splitlines()[0]}")
            eval_return = evaluate(actor, args.env_id, args.eval_episodes, eval_seed).mean()
        writer.add_scalar("eval/episodic_return", eval_return, global_step)
        writer.close()
    metrics = {"charts/episodic_return": float(np.mean(recent_returns)) if recent_returns else math.nan,
               "eval/episodic_return": float(eval_return), "charts/SPS": sps, "global_step": global_step,
               "run_dir": run_dir, "checkpoint": checkpoint_path}
    elapsed = datetime.timedelta(seconds=round(time.time() - start_time))
    print(f"finished {global_step:,} steps in {elapsed} ({sps:,.0f} steps/s); final evaluation return "
          f"{eval_return:.1f}")
    print(f"run folder: {run_dir}   (tensorboard --logdir runs)")
    print(f"checkpoint: {checkpoint_path}")
    return metrics


def evaluate_checkpoint(args: Args, env_id_given: bool) -> np.ndarray:
    """--evaluate PATH: the saved deterministic policy on the saved env (or --env-id), seeded as the run's."""
    checkpoint = load_checkpoint(args.evaluate, "--evaluate")
    env_id = args.env_id if env_id_given else checkpoint["args"]["env_id"]
    obs_space, action_space = check_env(env_id)
    actor = Actor(obs_space.shape[0], action_space)
    try:
        actor.load_state_dict(checkpoint["actor"])
    except RuntimeError:
        sys.exit(f"error: --evaluate {args.evaluate}: its actor does not fit {env_id}'s spaces")
    video_folder = os.path.join(os.path.dirname(args.evaluate), "videos-eval") if args.capture_video else None
    returns = evaluate(actor, env_id, args.eval_episodes, checkpoint["args"]["seed"] + 10_000, video_folder)
    print(f"evaluation of {args.evaluate} on {env_id}: mean return {returns.mean():.1f} ± "
          f"{returns.std():.1f} over {args.eval_episodes} episodes")
    return returns


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    if cli_args.evaluate:
        given = any(a.split("=")[0] in ("--env-id", "--env_id") for a in sys.argv)
        evaluate_checkpoint(cli_args, env_id_given=given)
    else:
        train(cli_args)
