import copy
import glob
import inspect
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import imageio
import numpy as np
import pytest
import torch
import tyro
from helpers import REPO, only_run_dir, read_scalars, run_script

import ac
from ac import Actor, Args, Critic, env_actions, evaluate, evaluate_checkpoint, final_observations, td_target, train

GAMMA = 0.99


def first_coordinate(s: torch.Tensor) -> torch.Tensor:
    """A stand-in critic: V(s) = s[0], so the test sets V through the observation."""
    return s[:, 0]


def time_limited_cartpoles(num_envs: int, max_steps: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=max_steps)] * num_envs,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def test_chapter_worked_td_example():
    """V(s) = -2, r = +1, V(s') = -1.5, gamma = 0.99: delta = 1 - 1.485 + 2 = 1.515 (and 3 if s' is terminal)."""
    s, s_next = torch.tensor([[-2.0]]), torch.tensor([[-1.5]])
    for terminated, expected in ((0.0, 1.515), (1.0, 3.0)):
        target = td_target(first_coordinate, torch.tensor([1.0]), s_next, torch.tensor([terminated]), GAMMA)
        delta = target - first_coordinate(s)
        assert delta.item() == pytest.approx(expected, abs=1e-6)


def test_time_limit_bootstraps_from_the_true_final_observation():
    """CartPole cut after 5 steps: SAME_STEP autoreset hands back the next episode's first observation, the target
    must use the true final one (replayed on a plain env with the same seed and actions) and bootstrap from it."""
    envs, seed, actions = time_limited_cartpoles(2, 5), 3, [np.array([0, 1]), np.array([1, 0])] * 3
    next_obs, _ = envs.reset(seed=seed)
    critic = Critic(4)
    for t in range(5):
        next_obs, reward, terminated, truncated, infos = envs.step(actions[t])
        s_next = final_observations(next_obs, infos)
        if t < 4:
            assert not truncated.any() and np.array_equal(s_next, next_obs)
    assert truncated.all() and not terminated.any()
    for i in range(2):  # sub-env i was reset with seed + i
        single = gym.make("CartPole-v1", max_episode_steps=5)
        single.reset(seed=seed + i)
        for t in range(5):
            true_final = single.step(actions[t][i])[0]
        assert np.allclose(s_next[i], true_final) and not np.allclose(next_obs[i], true_final)
    s_next = torch.as_tensor(s_next)
    target = td_target(critic, torch.as_tensor(reward, dtype=torch.float32), s_next,
                       torch.as_tensor(terminated, dtype=torch.float32), GAMMA)
    with torch.no_grad():
        v_final = critic(s_next)
    assert (v_final.abs() > 1e-3).all()
    assert torch.allclose(target, 1.0 + GAMMA * v_final)


def test_termination_does_not_bootstrap():
    """Pushing right every step drops the pole: at that step the target is the reward alone."""
    envs = time_limited_cartpoles(1, 500)
    envs.reset(seed=0)
    critic = Critic(4)
    for _ in range(100):
        next_obs, reward, terminated, truncated, infos = envs.step(np.array([1]))
        s_next = torch.as_tensor(final_observations(next_obs, infos))
        target = td_target(critic, torch.as_tensor(reward, dtype=torch.float32), s_next,
                           torch.as_tensor(terminated, dtype=torch.float32), GAMMA)
        if terminated[0]:
            break
        assert target.item() == pytest.approx(1.0 + GAMMA * critic(s_next).item())
    assert terminated[0] and not truncated[0]
    assert np.allclose(s_next.numpy(), np.stack(infos["final_obs"]))  # the fallen pole, not the new episode
    assert target.item() == 1.0


def test_categorical_actor():
    actor = Actor(4, gym.spaces.Discrete(2))
    s = torch.randn(5, 4)
    dist = actor(s)
    logits = actor.net(s)
    a = dist.sample()
    assert torch.allclose(dist.log_prob(a), torch.log_softmax(logits, -1).gather(1, a[:, None]).squeeze(1))
    assert torch.equal(dist.mode, logits.argmax(-1))


def test_gaussian_actor_has_state_independent_std_and_unclipped_log_prob():
    space = gym.spaces.Box(-2.0, 2.0, (3,))
    actor = Actor(5, space)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-1.0, 0.0, 0.5]))
    s = torch.randn(7, 5)
    dist = actor(s)
    a = torch.full((7, 3), 3.0)  # outside the bounds
    expected = torch.distributions.Normal(actor.net(s), torch.tensor([-1.0, 0.0, 0.5]).exp()).log_prob(a).sum(-1)
    assert torch.allclose(dist.log_prob(a), expected)
    assert torch.allclose(dist.stddev, torch.tensor([-1.0, 0.0, 0.5]).exp().expand(7, 3))
    assert torch.equal(dist.mode, actor.net(s))
    assert np.array_equal(env_actions(a, space), np.full((7, 3), 2.0, dtype=np.float32))
    assert np.array_equal(env_actions(torch.tensor([0, 1]), gym.spaces.Discrete(2)), np.array([0, 1]))


def test_continuous_actions_run_and_mujoco_video_is_recorded_headless():
    """Pendulum-v1 (Box actions, never terminates) and InvertedPendulum-v4 (MuJoCo, its final evaluation recorded
    without a display: ac.py picks EGL) for a short budget; the video decodes, one frame per step and the reset."""
    for env_id in ("Pendulum-v1", "InvertedPendulum-v4"):
        metrics = train(Args(env_id=env_id, total_timesteps=1600, num_envs=4, eval_every=800, eval_episodes=1,
                             cuda=False, capture_video=env_id.startswith("Inverted")))
        assert math.isfinite(metrics["eval/episodic_return"]) and metrics["global_step"] == 1600
        assert "charts/episodic_return" in read_scalars(metrics["run_dir"])
    (video,) = glob.glob(f"{metrics['run_dir']}/videos/*.mp4")
    frames = imageio.v2.get_reader(video).count_frames()
    assert frames == metrics["eval/episodic_return"] + 1 and frames > 2


class Chain(gym.Env):
    """x starts at 0 and moves by the action (Discrete: -1 / +1; Box: the action, which must be in [-1, 1]);
    the reward is the new x; terminated when x reaches `goal`; the observation is (x, steps in this episode)."""

    def __init__(self, continuous: bool = False, goal: float = 2.0):
        self.continuous, self.goal = continuous, goal
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,))
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,)) if continuous else gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.k = 0.0, 0
        return np.array([self.x, self.k], dtype=np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=np.float32) if self.continuous else action)
        self.x += float(action[0]) if self.continuous else 2.0 * int(action) - 1.0
        self.k += 1
        return np.array([self.x, self.k], dtype=np.float32), self.x, self.x >= self.goal, False, {}


@pytest.fixture
def chains():
    """Chain-v0 (Discrete), ChainBox-v0 (Box) and ChainLong-v0 (never terminates), cut after 5 steps."""
    gym.register("Chain-v0", entry_point=Chain, max_episode_steps=5, kwargs={"goal": 3.0})
    gym.register("ChainBox-v0", entry_point=Chain, max_episode_steps=5, kwargs={"continuous": True, "goal": 2.0})
    gym.register("ChainLong-v0", entry_point=Chain, max_episode_steps=5, kwargs={"goal": 100.0})
    yield
    for env_id in ("Chain-v0", "ChainBox-v0", "ChainLong-v0"):
        del gym.registry[env_id]


@pytest.mark.parametrize("env_id", ["Chain-v0", "ChainBox-v0"])
def test_train_wiring(env_id, chains, monkeypatch):
    """train itself on a chain whose terminations (x = goal) and truncations (5 steps) are known: each update's s,
    the action the env gets, s', terminated, the target, the logged losses and the Adam steps, against hand
    computations from what train recorded; and when it evaluates and writes checkpoints."""
    records, actors, critics, evaluations, checkpoints = [], [], [], [], []

    class RecordingActor(Actor):
        def __init__(self, *args):
            super().__init__(*args)
            actors.append(self)

        def forward(self, s):
            records.append({"s": s.clone(), "actor": copy.deepcopy(actors[0].state_dict())})
            return super().forward(s)

    class RecordingCritic(Critic):
        def __init__(self, *args):
            super().__init__(*args)
            critics.append(self)

    def spy_env_actions(action, action_space):
        records[-1] |= {"action": action.clone(), "critic": copy.deepcopy(critics[0].state_dict())}
        return env_actions(action, action_space)

    def spy_td_target(critic, reward, s_next, terminated, gamma):
        target = td_target(critic, reward, s_next, terminated, gamma)
        records[-1] |= {"reward": reward, "s_next": s_next, "terminated": terminated, "gamma": gamma,
                        "target": target}
        return target

    def spy_save(run, *args, **kwargs):
        checkpoints.append(run.step)
        return save(run, *args, **kwargs)

    save = ac.Run.save
    monkeypatch.setattr(ac, "Actor", RecordingActor)
    monkeypatch.setattr(ac, "Critic", RecordingCritic)
    monkeypatch.setattr(ac, "env_actions", spy_env_actions)
    monkeypatch.setattr(ac, "td_target", spy_td_target)
    monkeypatch.setattr(ac.Run, "save", spy_save)
    monkeypatch.setattr(ac, "evaluate", lambda *args: evaluations.append(args[1:]) or np.zeros(1))
    args = Args(env_id=env_id, num_envs=3, total_timesteps=120, gamma=0.9, actor_lr=1e-3, critic_lr=1e-2,
                log_every=1, eval_every=30, checkpoint_every=45, cuda=False)
    metrics = train(args)
    assert len(records) == 40 and metrics["global_step"] == 120

    env = gym.make(env_id).unwrapped
    obs_dim, space, goal = 2, env.action_space, env.goal
    actor, critic = Actor(obs_dim, space), Critic(obs_dim)  # a replay by hand of the Adam steps
    actor.load_state_dict(records[0]["actor"])
    critic.load_state_dict(records[0]["critic"])
    actor_optimizer, critic_optimizer = (torch.optim.Adam(actor.parameters(), lr=1e-3),
                                         torch.optim.Adam(critic.parameters(), lr=1e-2))
    losses = read_scalars(metrics["run_dir"])
    ends = {"terminated": 0, "truncated": 0}
    s = torch.zeros(3, 2)  # every episode starts at x = 0, step 0
    for t, rec in enumerate(records):
        assert torch.allclose(rec["s"], s), t
        for name in ("actor", "critic"):  # train's networks before this update = the replay's
            replay = (actor if name == "actor" else critic).state_dict()
            assert all(torch.allclose(rec[name][k], replay[k], atol=1e-6) for k in replay), (t, name)
        moved = (2.0 * rec["action"] - 1.0 if space.shape == () else rec["action"][:, 0].clamp(-1, 1))
        x_next, k_next = s[:, 0] + moved, s[:, 1] + 1
        assert torch.allclose(rec["s_next"], torch.stack([x_next, k_next], 1))  # the true s', never the reset
        terminated = (x_next >= goal).float()
        assert torch.equal(rec["terminated"], terminated) and torch.allclose(rec["reward"], x_next)
        assert rec["gamma"] == 0.9
        with torch.no_grad():
            assert torch.allclose(rec["target"], x_next + 0.9 * critic(rec["s_next"]) * (1 - terminated), atol=1e-6)
        delta = rec["target"] - critic(s)
        actor_loss = -(actor(s).log_prob(rec["action"]) * delta.detach()).mean()  # the unclipped sample's log-prob
        critic_loss = 0.5 * (delta**2).mean()
        for tag, loss in (("losses/actor_loss", actor_loss), ("losses/critic_loss", critic_loss)):
            assert losses[tag][t] == (3 * (t + 1), pytest.approx(loss.item(), rel=1e-4, abs=1e-6)), (t, tag)
        for optimizer, loss in ((actor_optimizer, actor_loss), (critic_optimizer, critic_loss)):
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        ended = (terminated == 1) | (k_next == 5)
        ends["terminated"] += int(terminated.sum())
        ends["truncated"] += int(((k_next == 5) & (terminated == 0)).sum())
        s = torch.where(ended[:, None], torch.zeros(2), torch.stack([x_next, k_next], 1))
    assert ends["terminated"] >= 3 and ends["truncated"] >= 3
    assert evaluations == [(env_id, 10, 10_001, None)] * 4  # at 30, 60, 90 and the end
    assert [step for step, _ in losses["eval/episodic_return"]] == [30, 60, 90, 120]
    assert checkpoints == [45, 90, 120]


def test_exact_resume_and_one_continuous_curve(chains, monkeypatch):
    """On ChainLong-v0 every episode ends at a 5-step time limit and restarts at x = 0, so a checkpoint written
    when all have just ended (step 30: update 10 of 3 envs) lets a resume be exact: its networks, optimizers and
    TensorBoard curves equal the uninterrupted run's. The resume writes into the same folder; the uninterrupted
    run's events after step 30 are dropped, so each tag's steps still rise strictly."""
    copies = {}

    def keep_copies(run, *args, **kwargs):
        save(run, *args, **kwargs)
        copies[run.step] = shutil.copy(run.path, f"{run.path}.{run.step}")

    save = ac.Run.save
    monkeypatch.setattr(ac.Run, "save", keep_copies)
    args = Args(env_id="ChainLong-v0", num_envs=3, total_timesteps=60, checkpoint_every=30, log_every=2,
                eval_every=30, eval_episodes=1, cuda=False)
    uninterrupted = train(args)
    before, first = read_scalars(uninterrupted["run_dir"]), torch.load(copies[60], weights_only=True)
    time.sleep(1.01 - time.time() % 1)  # event files sort by their second, then by a per-process count ("10" < "9")
    resumed = train(Args(resume=copies[30], cuda=False, threads=1, checkpoint_every=0))
    assert resumed["run_dir"] == uninterrupted["run_dir"] and resumed["global_step"] == 60
    second = torch.load(resumed["checkpoint"], weights_only=True)
    for name in ("actor", "critic", "actor_optimizer", "critic_optimizer"):
        assert str(first[name]) == str(second[name]), name
    for key in ("actor", "critic"):
        assert all(torch.equal(first[key][k], second[key][k]) for k in first[key])
    after = read_scalars(resumed["run_dir"])
    for tag in ("losses/actor_loss", "losses/critic_loss", "charts/episodic_return", "eval/episodic_return"):
        steps = [step for step, _ in after[tag]]  # (three episodes end at once: their returns share a step)
        assert steps == sorted(steps) and steps[-1] == 60 and len(steps) == len(before[tag]), tag
        assert after[tag] == before[tag], tag
    assert torch.load(copies[30], weights_only=True)["args"]["checkpoint_every"] == 30


def test_checkpoint_flushes_tensorboard_with_it(chains, monkeypatch):
    """A crash right after a checkpoint keeps the curves up to it: at the next update they are on disk."""
    checkpoints, on_disk = [], []

    def spy_save(run, *args, **kwargs):
        checkpoints.append((run.dir, run.step))
        return save(run, *args, **kwargs)

    def spy_td_target(*args):
        if checkpoints and not on_disk:
            on_disk.append(read_scalars(checkpoints[0][0])["losses/actor_loss"][-1][0])
        return td_target(*args)

    save = ac.Run.save
    monkeypatch.setattr(ac.Run, "save", spy_save)
    monkeypatch.setattr(ac, "td_target", spy_td_target)
    train(Args(env_id="ChainLong-v0", num_envs=3, total_timesteps=30, checkpoint_every=9, log_every=1,
               eval_every=30, eval_episodes=1, cuda=False))
    assert checkpoints[0][1] == 9 and on_disk == [9]


def test_checkpoint_loads_back_with_weights_only():
    metrics = train(Args(total_timesteps=2000, eval_every=2000, eval_episodes=3, cuda=False))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert set(checkpoint) == {"script", "args", "global_step", "finished", "recent_returns", "world_size", "ranks",
                               "actor", "critic", "actor_optimizer", "critic_optimizer"}
    assert set(checkpoint["ranks"][0]["rng"]) >= {"python", "numpy", "torch"} and checkpoint["finished"]
    assert checkpoint["script"] == "ac" and checkpoint["args"]["total_timesteps"] == 2000
    assert checkpoint["global_step"] == 2000 and not os.path.exists(metrics["checkpoint"] + ".tmp")
    critic = Critic(4)
    critic.load_state_dict(checkpoint["critic"])
    returns = evaluate_checkpoint(Args(evaluate=metrics["checkpoint"], eval_episodes=3))
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"])  # the run's own final evaluation


def test_same_seed_same_run(tmp_path, monkeypatch):
    returns = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(Args(seed=seed, total_timesteps=4000, eval_every=4000, eval_episodes=1, cuda=False))
        returns.append([v for _, v in read_scalars(metrics["run_dir"])["charts/episodic_return"]])
    assert returns[0] == returns[1]
    assert returns[0] != returns[2]


def test_evaluate_seeds_episode_k_with_seed_plus_k():
    actor = Actor(4, gym.spaces.Discrete(2))
    both = evaluate(actor, "CartPole-v1", episodes=2, seed=5)
    assert both[1] == evaluate(actor, "CartPole-v1", episodes=1, seed=6)[0]
    assert both[0] == evaluate(actor, "CartPole-v1", episodes=1, seed=5)[0]


def test_nan_stops_with_one_line_and_keeps_the_last_good_checkpoint(monkeypatch, capsys):
    """After the first checkpoint (step 32) the actor's step size becomes 1e30: the next losses are not finite."""
    saved = []

    def poison_after_saving(run, *args, **kwargs):
        save(run, *args, **kwargs)
        saved.append(open(run.path, "rb").read())
        for group in (*run.things["actor_optimizer"].param_groups, *run.things["critic_optimizer"].param_groups):
            group["lr"] = 1e30

    save = ac.Run.save
    monkeypatch.setattr(ac.Run, "save", poison_after_saving)
    with pytest.raises(SystemExit) as exit_info:
        train(Args(total_timesteps=3200, checkpoint_every=32, log_every=1, eval_every=3200, cuda=False))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(r"error: losses/\w+ is (nan|inf|-inf) at step [\d,]+; stopped. The last "
                                          r"good checkpoint: runs/\S+/checkpoint.pt", err[0]), err
    assert len(saved) == 1 and open(only_run_dir() + "/checkpoint.pt", "rb").read() == saved[0]


def test_failing_video_is_a_warning_after_the_checkpoint(monkeypatch, capsys):
    def no_video(*args, **kwargs):
        assert os.path.exists(only_run_dir() + "/checkpoint.pt")  # the final checkpoint is already written
        raise gym.error.DependencyNotInstalled("MoviePy is not installed\nsecond line")

    monkeypatch.setattr(gym.wrappers, "RecordVideo", no_video)
    metrics = train(Args(total_timesteps=320, eval_every=320, eval_episodes=2, capture_video=True, cuda=False))
    assert "warning: video not recorded: MoviePy is not installed\n" in capsys.readouterr().err
    assert math.isfinite(metrics["eval/episodic_return"]) and os.path.exists(metrics["checkpoint"])


def test_sigterm_in_process_writes_the_checkpoint_and_exits_143(monkeypatch, capsys):
    def signal_during_evaluation(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return np.zeros(1)

    monkeypatch.setattr(ac, "evaluate", signal_during_evaluation)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        train(Args(total_timesteps=3200, eval_every=320, checkpoint_every=0, cuda=False))
    assert exit_info.value.code == 143 and signal.getsignal(signal.SIGTERM) is previous
    path = only_run_dir() + "/checkpoint.pt"
    assert capsys.readouterr().out.splitlines()[-1] == (f"interrupted at step 320: checkpoint {path}; resume with: "
                                                        f"python ac.py --resume {path}")
    assert torch.load(path, weights_only=True)["global_step"] == 320


def popen_ac(*argv: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "ac.py"), *argv], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)


def test_sigkill_then_resume_then_ctrl_c_then_resume():
    """A run killed (SIGKILL) after its first checkpoint resumes from it in a new process; Ctrl-C there finishes
    the step, writes the checkpoint, says how to resume and exits 130 without a traceback; a second resume ends at
    the original budget, with one continuous TensorBoard curve (steps rising strictly, from the start to the end)."""
    killed = popen_ac("--total-timesteps", "400000", "--checkpoint-every", "480", "--log-every", "10",
                      "--eval-every", "400000", "--eval-episodes", "2", "--no-cuda")
    try:
        wait_for(lambda: glob.glob("runs/*/checkpoint.pt"), killed)
        time.sleep(0.5)  # more events, some written after the checkpoint: the resume must drop them
        killed.kill()
        killed.wait(timeout=60)
    finally:
        killed.kill()
    path = glob.glob("runs/*/checkpoint.pt")[0]
    first_step = torch.load(path, weights_only=True)["global_step"]
    interrupted = popen_ac("--resume", path, "--checkpoint-every", "160")
    try:
        wait_for(lambda: torch.load(path, weights_only=True)["global_step"] > first_step, interrupted)
        interrupted.send_signal(signal.SIGINT)
        out, err = interrupted.communicate(timeout=60)
    finally:
        interrupted.kill()
    assert interrupted.returncode == 130, err
    assert "Traceback" not in err
    second_step = torch.load(path, weights_only=True)["global_step"]
    assert out.strip().splitlines()[-1] == (f"interrupted at step {second_step:,}: checkpoint {path}; resume with: "
                                            f"python ac.py --resume {path}")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["args"]["total_timesteps"] = second_step + 640  # the last resume: a short way to the budget
    torch.save(checkpoint, path)
    time.sleep(1.01 - time.time() % 1)  # a later second in the event file's name: read after the others
    metrics = train(Args(resume=path, cuda=False))
    assert metrics["global_step"] == second_step + 640 and metrics["run_dir"] == os.path.dirname(path)
    scalars = read_scalars(metrics["run_dir"])
    for tag in ("losses/actor_loss", "charts/SPS", "charts/episodic_return"):
        steps = [step for step, _ in scalars[tag]]
        assert steps == (sorted(steps) if tag == "charts/episodic_return" else sorted(set(steps))), tag
    steps = [step for step, _ in scalars["losses/actor_loss"]]
    assert steps == list(range(160, second_step + 641, 160))  # every --log-every, no gap, no repeat


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("ac.py", "--total-timesteps", "2010", "--eval-every", "1000", "--eval-episodes", "2",
                        "--log-every", "50", "--no-cuda", "--capture-video")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[:2] == ["device: cpu", "note: --total-timesteps 2,010 rounded to 2,000 (whole iterations of 16 steps)"]
    run_dir = only_run_dir()
    assert re.fullmatch(r"runs/CartPole-v1__ac__1__\d{8}-\d{6}", run_dir)
    assert re.fullmatch(r"finished 2,000 steps in 0:00:\d\d \([\d,]+ steps/s learning\); final evaluation return "
                        r"\d+\.\d", lines[-4]), lines[-4]
    assert lines[-3:] == [f"run folder: {run_dir}   (tensorboard --logdir runs)",
                          f"checkpoint: {run_dir}/checkpoint.pt", f"videos: {run_dir}/videos"]
    scalars = read_scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/actor_loss",
                "losses/critic_loss", "losses/entropy", "eval/episodic_return"):
        assert tag in scalars, tag
    # 16 envs (the default): 125 updates of 16 steps; evaluation at the first update past 1000 steps, and at the end
    assert [step for step, _ in scalars["eval/episodic_return"]] == [1008, 2000]
    assert [step for step, _ in scalars["losses/actor_loss"]] == [800, 1600]
    lengths = [v for _, v in scalars["charts/episodic_length"]]
    assert all(8 <= v <= 500 for v in lengths) and len(lengths) > 20
    assert len(glob.glob(f"{run_dir}/videos/*.mp4")) == 2  # the final evaluation itself, recorded
    assert "error" not in result.stderr.lower()  # no SDL "XDG_RUNTIME_DIR" line either


def test_evaluate_from_the_command_line_and_bad_paths(capsys):
    metrics = train(Args(total_timesteps=320, eval_every=320, eval_episodes=2, cuda=False))
    capsys.readouterr()
    evaluate_checkpoint(Args(evaluate=metrics["checkpoint"], eval_episodes=2, capture_video=True))
    assert re.fullmatch(rf"evaluation of {metrics['checkpoint']} on CartPole-v1: mean return \d+\.\d ± \d+\.\d "
                        rf"over 2 episodes\nvideos: {metrics['run_dir']}/videos-eval\n", capsys.readouterr().out)
    assert len(glob.glob(f"{metrics['run_dir']}/videos-eval/*.mp4")) == 2
    with pytest.raises(SystemExit, match="^error: --evaluate: the checkpoint's networks do not fit Pendulum-v1's "
                                         "observation and action spaces$"):
        evaluate_checkpoint(Args(evaluate=metrics["checkpoint"]), "Pendulum-v1")
    with open("notes.txt", "w") as f:
        f.write("not a checkpoint")
    torch.save({"script": "sac", "args": {}}, "sac.pt")
    torch.save({"actor": {}}, "plain.pt")
    os.mkdir("folder")
    for path, why in (("missing.pt", "no such file"), ("folder", "is a directory"),
                      ("notes.txt", r"not a duet checkpoint \(torch.load failed: UnpicklingError\)"),
                      ("plain.pt", r"not a duet checkpoint \(no 'script' entry\)"),
                      ("sac.pt", r"a checkpoint of sac.py, not ac.py")):
        for flag, call in (("--resume", lambda path=path: train(Args(resume=path))),
                           ("--evaluate", lambda path=path: evaluate_checkpoint(Args(evaluate=path)))):
            with pytest.raises(SystemExit) as exit_info:
                call()
            assert re.fullmatch(f"error: {flag} {path}: {why}", str(exit_info.value.code)), exit_info.value.code
    assert sorted(os.listdir("runs")) == [os.path.basename(metrics["run_dir"])]  # no new run folder


def test_run_folders_are_unique(monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261202-183000")
    folders = [train(Args(total_timesteps=16, eval_episodes=1, cuda=False))["run_dir"] for _ in range(3)]
    base = "runs/CartPole-v1__ac__1__20261202-183000"
    assert folders == [base, base + "-2", base + "-3"]


def field_docstrings(cls) -> dict[str, str]:
    """Each field's docstring, read from the source: the string literal on the line after the field."""
    lines = inspect.getsource(cls).splitlines()
    docs = {}
    for line, following in zip(lines, lines[1:]):
        field = re.match(r"    (\w+): ", line)
        if field and field.group(1) in cls.__dataclass_fields__:
            doc = re.fullmatch(r'\s*"""(.*)"""', following)
            docs[field.group(1)] = doc.group(1) if doc else None
    return docs


def test_help_documents_every_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(Args, args=["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert Args.__doc__ in text  # a description line
    docs = field_docstrings(Args)
    assert set(docs) == set(Args.__dataclass_fields__)
    for field, doc in docs.items():
        assert doc, f"{field} has no one-line docstring"
        assert "--" + field.replace("_", "-") in text and " ".join(doc.split()) in text, field
    for field in ("resume", "evaluate"):  # tyro shows {None}|STR: the docstring says what none means
        assert "(none: " in docs[field], field
    assert "use_deterministic_algorithms" in docs["torch_deterministic"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive, got 0"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--actor-lr", "0"], "--actor-lr must be positive"),
    (["--critic-lr", "-1e-3"], "--critic-lr must be positive"),
    (["--eval-every", "0"], "--eval-every must be positive"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0, got -1"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1], got 1.5"),
    (["--gamma", "0"], "--gamma must be in (0, 1]"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id 'NoSuchEnv-v0'"),
    (["--num-envs", "8", "--total-timesteps", "4"], "--total-timesteps (4) must be at least --num-envs (8)"),
    (["--resume", "a.pt", "--evaluate", "a.pt"], "--resume and --evaluate exclude each other"),
])
def test_bad_arguments_exit_with_one_line(argv, message, monkeypatch):
    """The command line as `python ac.py ...` parses it (the Args checks, then main's own)."""
    monkeypatch.setattr(sys, "argv", ["ac.py", *argv])
    monkeypatch.setattr(ac, "GIVEN", set())
    with pytest.raises(SystemExit) as exit_info:
        ac.main(Args)
    assert str(exit_info.value.code).startswith("error: " + message)
    assert "\n" not in str(exit_info.value.code) and not os.path.exists("runs")


class MultiDiscreteActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


def needs_box2d():
    raise gym.error.DependencyNotInstalled('Box2D is not installed, you can install it by run `pip install swig` '
                                           'followed by `pip install "gymnasium[box2d]"`')


@pytest.mark.parametrize(("env_id", "entry_point", "message"), [
    ("MultiDiscreteActions-v0", MultiDiscreteActions, "error: unsupported action space MultiDiscrete([2 3])"),
    ("Blackjack-v1", None, "error: ac.py needs a flat Box observation space"),
    ("NeedsBox2D-v0", needs_box2d, 'error: NeedsBox2D-v0 needs an optional package: pip install "gymnasium[box2d]"'),
])
def test_envs_it_cannot_run_are_one_line_and_no_run_folder(env_id, entry_point, message):
    if entry_point:
        gym.register(env_id, entry_point=entry_point)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train(Args(env_id=env_id, total_timesteps=100, cuda=False))
    finally:
        if entry_point:
            del gym.registry[env_id]
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)
    assert not os.path.exists("runs")
