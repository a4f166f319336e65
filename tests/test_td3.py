"""td3.py's fast tests: the pieces against the chapter's equations, the wiring of `train` itself (what it stores,
calls and updates, on a registered Chain env whose terminations and time limits are known), and the long-run
behaviour (checkpoints, resume, signals, NaN, video, bad input). The learning test is test_td3_learning.py;
tests/mutants/td3.py lists the mutants these tests must catch (python tests/mutants/run.py td3)."""

import ast
import copy
import glob
import inspect
import os
import re
import shutil
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from helpers import REPO, only_run_dir, read_scalars, read_tags, run_script

import td3
from td3 import Actor, Args, ReplayBuffer, TwinCritic, train

HOPPER_OBS = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
HOPPER_ACT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
CHAIN = "DuetChainTD3-v0"


class Chain(gym.Env):
    """obs = [t, k % 2]: t steps into episode k. Reward t. Even episodes terminate at t = 3; odd ones run on until the
    registered TimeLimit truncates them at t = 5. Actions in [1, 5] (half-width 2, centre 3) are ignored."""

    observation_space = gym.spaces.Box(0, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(1, 5, (1,), np.float32)
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode=None):
        self.k, self.render_mode = -1, render_mode

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.k = 0, self.k + 1
        return np.array([0, self.k % 2], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, self.k % 2], np.float32), float(self.t), self.k % 2 == 0 and self.t == 3, False, {}


class Image(Chain):
    observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)


for env_id, entry_point in ((CHAIN, Chain), ("DuetImageTD3-v0", Image)):
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, max_episode_steps=5)


def chain_args(**kwargs) -> Args:
    """A run of a few seconds on Chain: 8 random steps, then learning on batches of 4."""
    return Args(**(dict(env_id=CHAIN, total_timesteps=48, learning_starts=8, batch_size=4, buffer_size=1000,
                        eval_every=1000, eval_episodes=1, cuda=False, log_every=8) | kwargs))


def chain_transitions(steps: int) -> list[tuple]:
    """(s, r, s', terminated) of the first `steps` steps of one Chain env: the true last state, never a reset."""
    out, t, k = [], 0, 0
    for _ in range(steps):
        terminated = k % 2 == 0 and t + 1 == 3
        out.append(([t, k % 2], t + 1, [t + 1, k % 2], float(terminated)))
        t += 1
        if terminated or t == 5:
            t, k = 0, k + 1
    return out


def record_train(monkeypatch, stub_updates: bool, **kwargs) -> dict:
    """train(Args(**kwargs)) on Chain, recording the replay buffer it makes and each update and target update in
    order. With stub_updates the networks never change (the updates are recorded, not run)."""
    rec = {"buffers": [], "calls": []}

    class RecordingBuffer(ReplayBuffer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            rec["buffers"].append(self)

    def recorder(name, fn):
        def wrapped(*a, **kw):
            rec["calls"].append((name, a))
            return torch.tensor(0.0) if stub_updates and name != "polyak" else fn(*a, **kw)
        return wrapped

    monkeypatch.setattr(td3, "ReplayBuffer", RecordingBuffer)
    for name in ("update_critic", "update_actor", "polyak_update"):
        monkeypatch.setattr(td3, name, recorder(name.split("_")[-1].replace("update", "polyak"), getattr(td3, name)))
    rec["metrics"] = train(chain_args(**kwargs))
    return rec


def stored(rb: ReplayBuffer, n: int) -> list[tuple]:
    return [(rb.obs[i].tolist(), rb.rewards[i].item(), rb.next_obs[i].tolist(), rb.terminations[i].item())
            for i in range(n)]


def test_train_stores_the_true_last_state_and_terminated_not_truncated(monkeypatch):
    rec = record_train(monkeypatch, stub_updates=True)
    (rb,) = rec["buffers"]
    assert rb.count == 48
    assert stored(rb, 48) == chain_transitions(48)  # s' = [3, k] at termination and [5, k] at the time limit


def test_gaussian_exploration_noise_is_scaled_to_the_action_bounds(monkeypatch):
    rec = record_train(monkeypatch, stub_updates=True, total_timesteps=408, exploration_noise=0.1, seed=3)
    (rb,) = rec["buffers"]
    actor = rec["calls"][1][1][1]
    with torch.no_grad():
        noise = (rb.actions[8:408] - actor(rb.obs[8:408])) / 2  # half-width 2; mu(s) never moved
    assert rb.actions[8:408].min() > 1 and rb.actions[8:408].max() < 5  # never clipped here
    assert noise.std().item() == pytest.approx(0.1, rel=0.15)  # 400 draws: 3.5% standard error
    assert abs(noise.mean().item()) < 0.02
    assert noise.std() > 0.1 * 0.8 and not torch.equal(rb.actions[8:20], rb.actions[9:21])


def test_targets_trail_the_networks_by_polyak_averaging(monkeypatch):
    records = []
    original = td3.polyak_update

    def polyak(net, target, tau):
        before = [p.clone() for p in target.parameters()]
        original(net, target, tau)
        records.append((before, [p.clone() for p in net.parameters()], [p.clone() for p in target.parameters()], tau))

    monkeypatch.setattr(td3, "polyak_update", polyak)
    train(chain_args(total_timesteps=24, tau=0.1))
    assert len(records) == 2 * 8  # 16 critic updates, every second one delayed
    for before, net, after, tau in records:
        assert tau == 0.1
        for b, n, a in zip(before, net, after):
            torch.testing.assert_close(a, b + tau * (n - b))
    assert any(not torch.equal(b, n) for b, n in zip(records[-1][0], records[-1][1]))  # the targets lag behind


def test_train_runs_two_critic_updates_per_actor_and_polyak_update(monkeypatch):
    rec = record_train(monkeypatch, stub_updates=True, tau=0.01)
    names = [name for name, _ in rec["calls"]]
    assert names == ["critic", "critic", "actor", "polyak", "polyak"] * 20  # [delayed]: 40 critic updates
    for k in range(0, len(rec["calls"]), 5):
        (_, (batch, actor_target, critic, critic_target, _, args)), (_, (obs, actor, critic2, _)) = \
            rec["calls"][k + 1:k + 3]
        pairs = {(id(net), id(target)) for _, (net, target, tau) in rec["calls"][k + 3:k + 5] if tau == 0.01}
        assert pairs == {(id(actor), id(actor_target)), (id(critic), id(critic_target))}  # targets trail the nets
        assert actor is not actor_target and critic is not critic_target and critic2 is critic
        assert isinstance(critic, TwinCritic) and rec["calls"][k][1][2] is critic
        assert torch.equal(obs, batch[0])  # the actor learns on the second critic update's states s
        assert len(batch[0]) == 4 and not torch.equal(batch[0], batch[3])


def networks(seed: int = 0):
    """An actor, a critic and targets that differ from them (as after some training), on bounds [1, 5] x [-3, 1]."""
    torch.manual_seed(seed)
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Box(np.array([1, -3]), np.array([5, 1]))
    actor, critic = Actor(obs_space, act_space), TwinCritic(obs_space, act_space)
    actor_target, critic_target = Actor(obs_space, act_space), TwinCritic(obs_space, act_space)
    batch = (torch.randn(8, 4), torch.rand(8, 2) * torch.tensor([4, 4]) + torch.tensor([1, -3]), torch.randn(8),
             torch.randn(8, 4) + 3, torch.tensor([0, 1, 0, 0, 1, 0, 0, 0.0]))
    return actor, critic, actor_target.requires_grad_(False), critic_target.requires_grad_(False), batch


# ---- the pieces ------------------------------------------------------------------------------------------------


def test_polyak_update_matches_formula():
    torch.manual_seed(0)
    for net in (TwinCritic(HOPPER_OBS, HOPPER_ACT), Actor(HOPPER_OBS, HOPPER_ACT)):
        target = copy.deepcopy(net).requires_grad_(False)
        for p in target.parameters():
            p.data.normal_()
        before = [p.clone() for p in target.parameters()]
        td3.polyak_update(net, target, 0.005)
        for p, t, t0 in zip(net.parameters(), target.parameters(), before):
            torch.testing.assert_close(t, 0.005 * p + 0.995 * t0)


def test_replay_buffer_wraps_around_and_samples_whole_transitions():
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (2,)), gym.spaces.Box(-1, 1, (1,))
    rb = ReplayBuffer(5, obs_space, act_space, torch.device("cpu"))
    for step in range(3):  # 3 vector steps of 2 envs: transition ids 0..5 into 5 slots
        ids = np.array([2 * step, 2 * step + 1], np.float32)
        rb.add(np.stack([ids, ids], 1), ids[:, None] / 10, ids, np.stack([ids, ids], 1) + 100, ids % 2)
    assert rb.count == 5 and rb.pos == 1
    assert rb.rewards.tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]  # id 5 overwrote the oldest, id 0
    obs, actions, rewards, next_obs, terminations = rb.sample(1000)
    assert obs.shape == (1000, 2) and next_obs.shape == (1000, 2) and actions.shape == (1000, 1)
    assert rewards.shape == (1000,) and terminations.shape == (1000,)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    torch.testing.assert_close(next_obs[:, 0], rewards + 100)  # rows stay whole transitions
    torch.testing.assert_close(actions[:, 0], rewards / 10)
    torch.testing.assert_close(terminations, rewards % 2)
    copy_ = ReplayBuffer(5, obs_space, act_space, torch.device("cpu"))
    copy_.load_state_dict(rb.state_dict())  # the checkpoint's form: the filled rows
    assert all(torch.equal(getattr(copy_, name), getattr(rb, name)) for name in ReplayBuffer.FIELDS)


def test_replay_buffer_of_a_million_hopper_transitions_is_under_150_mb():
    rb = ReplayBuffer(1_000_000, HOPPER_OBS, HOPPER_ACT, torch.device("cpu"))
    tensors = (rb.obs, rb.next_obs, rb.actions, rb.rewards, rb.terminations)
    assert sum(t.numel() * t.element_size() for t in tensors) == ReplayBuffer.bytes_needed(1_000_000, 11, 3) < 150e6


# ---- the command line ------------------------------------------------------------------------------------------


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("td3.py", "--env-id", "Pendulum-v1", "--total-timesteps", "600", "--learning-starts", "200",
                        "--eval-every", "300", "--eval-episodes", "2", "--batch-size", "32", "--no-cuda")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    run_dir = only_run_dir()
    finished, folder, checkpoint = result.stdout.strip().splitlines()[-3:]
    assert re.fullmatch(r"finished 600 steps in 0:\d\d:\d\d \(\d+ steps/s learning\); final evaluation return "
                        r"-?[\d,]+\.\d", finished), finished
    assert folder == f"run folder: {run_dir}   (tensorboard --logdir runs)"
    assert checkpoint == f"checkpoint: {run_dir}/checkpoint.pt" and os.path.isfile(f"{run_dir}/checkpoint.pt")
    assert "Traceback" not in result.stderr and "out of date" not in result.stderr
    scalars = read_scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/qf_loss",
                "losses/actor_loss", "eval/episodic_return"):
        assert tag in scalars, tag
    assert [step for step, _ in scalars["eval/episodic_return"]] == [300, 600]
    assert [step for step, _ in scalars["charts/episodic_return"]] == [200, 400, 600]  # Pendulum: 200-step episodes
    assert [step for step, _ in scalars["losses/qf_loss"]] == [300, 400, 500, 600]  # every 100, learning from 201
    assert all(np.isfinite(v) for _, v in scalars["losses/qf_loss"])
    assert "hyperparameters/text_summary" in read_tags(run_dir)["tensors"]


def test_help_documents_every_argument(capsys):
    with pytest.raises(SystemExit) as exit_:
        tyro.cli(Args, args=["--help"])
    assert exit_.value.code == 0
    squeeze = lambda text: re.sub(r"[\s│╭╮╰╯─]", "", text)  # noqa: E731 (tyro wraps lines inside a box)
    help_text = squeeze(capsys.readouterr().out)
    body = ast.parse(inspect.getsource(Args)).body[0].body
    docs = {node.target.id: body[k + 1].value.value for k, node in enumerate(body[:-1])
            if isinstance(node, ast.AnnAssign) and isinstance(body[k + 1], ast.Expr)}
    assert set(docs) == set(Args.__dataclass_fields__)  # every field has its docstring...
    for field, doc in docs.items():  # ...and --help shows it, on one line each (no newline in the docstring)
        assert "\n" not in doc and squeeze("--" + field.replace("_", "-")) in help_text, field
        assert squeeze(doc) in help_text, field
    assert squeeze("use_deterministic_algorithms(True") in help_text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_envs": 0}, "--num-envs must be positive"),
    ({"total_timesteps": -5}, "--total-timesteps must be positive"),
    ({"policy_lr": 0}, "--policy-lr must be positive"),
    ({"policy_frequency": 0}, "--policy-frequency must be positive"),
    ({"policy_noise": -0.1}, "--policy-noise must not be negative"),
    ({"noise_clip": -1}, "--noise-clip must not be negative"),
    ({"exploration_noise": -1}, "--exploration-noise must not be negative"),
    ({"checkpoint_every": -1}, "--checkpoint-every must not be negative"),
    ({"gamma": 0}, "--gamma must be in (0, 1]"),
    ({"seed": -1}, "--seed must be in [0, 2**32 - 1], got -1"),
    ({"seed": 2**32}, "--seed must be in [0, 2**32 - 1]"),
    ({"total_timesteps": 1000}, "--learning-starts (25000) must be below --total-timesteps (1000)"),
    ({"env_id": "NoSuchEnv-v0"}, "unknown --env-id"),
    ({"cudagraphs": True, "cuda": False}, "--cudagraphs needs a CUDA device"),
])
def test_bad_arguments_exit_with_one_line(kwargs, message):
    with pytest.raises(SystemExit) as exit_:
        Args(**kwargs)
    assert str(exit_.value.code).startswith("error: ") and message in str(exit_.value.code)
    assert "\n" not in str(exit_.value.code)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"env_id": "CartPole-v1"}, "td3.py needs a bounded 1-D Box action space, CartPole-v1 has Discrete(2)"),
    ({"env_id": "DuetImageTD3-v0"}, "td3.py needs a 1-D Box observation space, DuetImageTD3-v0 has Box("),
    ({"buffer_size": 10**13}, "a replay buffer of 10,000,000,000,000 transitions needs 280,000,000,000,000 bytes"),
    ({"env_id": "CarRacing-v3"}, 'CarRacing-v3 needs an optional package: pip install "gymnasium[box2d]"'),
])
def test_checks_that_need_the_env_stop_before_a_run_folder_exists(kwargs, message):
    if kwargs.get("env_id") == "CarRacing-v3" and _has_box2d():
        pytest.skip("box2d is installed: CarRacing's observation check is the image test above")
    with pytest.raises(SystemExit) as exit_:
        train(chain_args(**kwargs))
    assert str(exit_.value.code).startswith("error: ") and message in str(exit_.value.code)
    assert not os.path.exists("runs")


def _has_box2d() -> bool:
    try:
        import Box2D  # noqa: F401
    except ImportError:
        return False
    return True


def test_run_folders_are_unique_and_the_final_lines_name_them(capsys):
    first, second = train(chain_args(total_timesteps=16)), train(chain_args(total_timesteps=16))
    assert first["run_dir"] != second["run_dir"] and len(os.listdir("runs")) == 2  # even within one second
    assert re.fullmatch(r"runs/DuetChainTD3-v0__td3__1__\d{8}-\d{6}(-\d+)?", first["run_dir"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == [f"run folder: {second['run_dir']}   (tensorboard --logdir runs)",
                          f"checkpoint: {second['checkpoint']}"]
    assert lines[-3].startswith("finished 16 steps in 0:00:")


def test_same_seed_same_run():
    runs = [train(chain_args(seed=seed)) for seed in (7, 7, 8)]
    values = [[v for tag in ("losses/qf_loss", "eval/episodic_return") for _, v in read_scalars(m["run_dir"])[tag]]
              for m in runs]
    assert values[0] == values[1] and values[0] != values[2]


def test_updates_per_step_counts_the_env_steps_of_all_envs():
    """Learning runs from env step 9 to 48: 20 vector steps of 2 envs, 2 critic updates each."""
    metrics = train(chain_args(num_envs=2))
    assert metrics["global_step"] == 48 and metrics["num_updates"] == 40


# ---- checkpoints, resume, signals, NaN, video ------------------------------------------------------------------


def test_checkpoint_loads_back_with_weights_only_and_evaluates_as_the_run_did():
    metrics = train(chain_args())
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert set(checkpoint) >= {"script", "args", "global_step", "num_updates", "actor", "critic", "actor_target",
                               "critic_target", "actor_optimizer", "critic_optimizer", "replay_buffer", "ranks"}
    assert checkpoint["script"] == "td3" and checkpoint["args"]["env_id"] == CHAIN
    assert checkpoint["replay_buffer"]["obs"].shape == (48, 2)  # the filled rows only
    returns = td3.evaluate_checkpoint(Args(evaluate=metrics["checkpoint"], eval_episodes=1), CHAIN)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-6)


def test_resume_at_an_update_boundary_is_exact(monkeypatch):
    """Checkpoints every 8 steps (Chain's episodes end there too): resumed at step 24, the run's networks,
    optimizers and replay buffer at step 48 equal those of the run that was never stopped."""
    original = td3.Run.save

    def save_and_keep(run, *args, **kwargs):
        original(run, *args, **kwargs)
        shutil.copy(run.path, f"{run.path}.{run.step}")

    monkeypatch.setattr(td3.Run, "save", save_and_keep)
    path = train(chain_args(checkpoint_every=8, eval_every=16))["checkpoint"]
    uninterrupted = torch.load(path, weights_only=True)
    time.sleep(1 - time.time() % 1)  # a later second: TensorBoard reads event files in the order of their names
    resumed_metrics = train(Args(resume=f"{path}.24", cuda=False, checkpoint_every=8))
    resumed = torch.load(path, weights_only=True)
    assert resumed_metrics["global_step"] == 48 and resumed["num_updates"] == uninterrupted["num_updates"] == 40
    for name in ("actor", "critic", "actor_target", "critic_target"):
        for key, value in uninterrupted[name].items():
            assert torch.equal(resumed[name][key], value), (name, key)
    for name in ("actor_optimizer", "critic_optimizer"):
        for k, state in uninterrupted[name]["state"].items():
            assert all(torch.equal(resumed[name]["state"][k][key], v) for key, v in state.items())
    for key, value in uninterrupted["replay_buffer"].items():
        assert torch.equal(torch.as_tensor(resumed["replay_buffer"][key]), torch.as_tensor(value)), key
    steps = [step for step, _ in read_scalars(os.path.dirname(path))["losses/qf_loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == 48  # one curve: no step twice


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(monkeypatch, capsys):
    saved = {}
    original = td3.Run.save

    def save_and_read(run, *args, **kwargs):
        original(run, *args, **kwargs)
        saved[run.step] = open(run.path, "rb").read()

    monkeypatch.setattr(td3.Run, "save", save_and_read)
    with pytest.raises(SystemExit) as exit_:
        train(chain_args(policy_lr=1e30, q_lr=1e30, checkpoint_every=8, log_every=4))
    assert exit_.value.code == 1 and list(saved) == [8]  # the last checkpoint before learning started
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"error: losses/\w+ is (nan|inf|-inf) at step 12; stopped\. The last good checkpoint: "
                        r"runs/\S+/checkpoint\.pt", line), line
    assert open(line.split(": ")[-1], "rb").read() == saved[8]  # byte for byte


def test_a_failing_video_is_a_warning_after_the_checkpoint(monkeypatch, capsys):
    def no_video(*args, **kwargs):
        raise RuntimeError("no display here")

    monkeypatch.setattr(gym.wrappers, "RecordVideo", no_video)
    metrics = train(chain_args(capture_video=True))
    assert "warning: video not recorded: no display here" in capsys.readouterr().err
    assert os.path.isfile(metrics["checkpoint"]) and np.isfinite(metrics["eval/episodic_return"])


@pytest.mark.parametrize("kind", ["missing", "directory", "not a checkpoint", "another script's"])
def test_bad_checkpoint_paths_exit_with_one_line(kind, tmp_path):
    path = {"missing": "nope.pt", "directory": str(tmp_path)}.get(kind, "x.pt")
    if kind == "not a checkpoint":
        open(path, "w").write("hello")
    if kind == "another script's":
        torch.save({"script": "sac", "args": {}}, path)
    with pytest.raises(SystemExit) as exit_:
        train(Args(resume=path, cuda=False))
    message = {"missing": "no such file", "directory": "is a directory", "not a checkpoint": "not a duet checkpoint",
               "another script's": "a checkpoint of sac.py, not td3.py"}[kind]
    assert str(exit_.value.code) == f"error: --resume {path}: {message}" or (
        kind == "not a checkpoint" and str(exit_.value.code).startswith(f"error: --resume {path}: {message} ("))
    assert "weights_only" not in str(exit_.value.code)


def test_a_checkpoint_is_never_written_with_a_non_finite_parameter(monkeypatch, capsys):
    """A target network gone NaN (the losses stay finite): the checkpoint after it is refused, the one before kept."""
    def poisoning_polyak_update(net, target, tau):
        with torch.no_grad():
            next(target.parameters())[0] = float("nan")

    monkeypatch.setattr(td3, "polyak_update", poisoning_polyak_update)
    with pytest.raises(SystemExit) as exit_:
        train(chain_args(checkpoint_every=8, log_every=1000))  # learning (and the poison) from step 9 on; no logs
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and re.fullmatch(r"error: a parameter is not finite at step 16; stopped\. The last "
                                                  r"good checkpoint: runs/\S+/checkpoint\.pt", err), err
    checkpoint = torch.load(glob.glob("runs/*/checkpoint.pt")[0], weights_only=True)
    assert checkpoint["global_step"] == 8 and glob.glob("runs/*/checkpoint.pt*") == glob.glob("runs/*/checkpoint.pt")


def test_critic_update_against_a_hand_computed_loss():
    """Smoothing noise eps ~ N(0, 1^2) clipped at 0.3 (so the clip binds), scaled to the half-widths [2, 2] and
    added to the TARGET actor's action at s'; the smaller of the two TARGET critics; both online critics' losses."""
    actor, critic, actor_target, critic_target, batch = networks()
    obs, actions, rewards, next_obs, terminations = batch
    args = Args(gamma=0.9, policy_noise=1.0, noise_clip=0.3)
    torch.manual_seed(5)
    eps = torch.randn(8, 2)
    with torch.no_grad():
        low, high = torch.tensor([1.0, -3.0]), torch.tensor([5.0, 1.0])
        next_actions = torch.clamp(actor_target(next_obs) + eps.clamp(-0.3, 0.3) * 2, low, high)
        q1, q2 = (q(torch.cat([next_obs, next_actions], -1)) for q in plain_critics(critic_target))
        y = rewards + 0.9 * (1 - terminations) * torch.minimum(q1, q2)
    q1, q2 = (q(torch.cat([obs, actions], -1)) for q in plain_critics(critic))
    expected = ((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean()
    grads = torch.autograd.grad(expected, list(critic.parameters()))
    torch.manual_seed(5)
    loss = td3.update_critic(batch, actor_target, critic, critic_target, torch.optim.SGD(critic.parameters(), lr=0),
                             args)
    torch.testing.assert_close(loss, expected.detach())
    for g, p in zip(grads, critic.parameters()):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is None for net in (actor, actor_target, critic_target) for p in net.parameters())


def test_actor_update_against_a_hand_computed_loss():
    actor, critic, _, _, (obs, *_) = networks(1)
    q1, _ = plain_critics(critic)
    expected = -q1(torch.cat([obs, actor(obs)], -1)).mean()  # -Q_1(s, mu(s)) of the ONLINE first critic, at s
    grads = torch.autograd.grad(expected, list(actor.parameters()))
    loss = td3.update_actor(obs, actor, critic, torch.optim.SGD(actor.parameters(), lr=0))
    torch.testing.assert_close(loss, expected.detach())
    for g, p in zip(grads, actor.parameters()):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is None for p in critic.parameters())  # no gradient for the critics' weights


def plain_critics(critic: TwinCritic) -> list:
    """Q_1 and Q_2 as plain nn.Sequential MLPs on [s, a] (the same layers), returning shape [batch]."""
    return [lambda x, q=q: torch.nn.Sequential(q.layers[0], torch.nn.ReLU(), q.layers[1], torch.nn.ReLU(),
                                               q.layers[2])(x).squeeze(-1) for q in (critic.q1, critic.q2)]


def test_twin_critics_are_two_independent_critics():
    torch.manual_seed(0)
    critic = TwinCritic(HOPPER_OBS, HOPPER_ACT)
    obs, action = torch.randn(16, 11), torch.rand(16, 3) * 2 - 1
    q = critic(obs, action)
    assert q.shape == (2, 16) and not torch.allclose(q[0], q[1])
    torch.testing.assert_close(q, torch.stack([critic.q1(obs, action), critic.q2(obs, action)]))
    assert {n.split(".")[0] for n, _ in critic.named_parameters()} == {"q1", "q2"}


def test_td_target_takes_the_smaller_twin():
    next_q = torch.tensor([[1.0, 5.0, -2.0], [3.0, 2.0, -1.0]])
    y = td3.td_target(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.0, 0.0, 1.0]), next_q, gamma=0.5)
    assert y.tolist() == [0.5 + 0.5 * 1.0, 0.5 + 0.5 * 2.0, 0.5]


def test_target_smoothing_noise_is_clipped_and_scaled_to_the_action_bounds():
    action_space = gym.spaces.Box(np.array([-2, 0], np.float32), np.array([2, 10], np.float32))  # scale 2, 5
    actor = Actor(gym.spaces.Box(-1, 1, (3,)), action_space)
    with torch.no_grad():
        actor.net[-2].weight.zero_()
        actor.net[-2].bias.copy_(torch.tensor([0.0, 1.0]))  # mu(s) = [0, 5 + 5 tanh(1)] = [0, 8.81] for every s
        mu = actor(torch.zeros(1, 3))[0]
    torch.manual_seed(0)
    obs = torch.randn(200_000, 3)
    with torch.no_grad():
        noise = td3.smoothed_target_action(actor, obs, policy_noise=0.2, noise_clip=0.5)[:, 0] - mu[0]
    # eps ~ N(0, 0.2^2) clipped at +-0.5 = 2.5 std, times the half-width 2: the std of a clipped normal, exactly
    normal, c = torch.distributions.Normal(0.0, 1.0), torch.tensor(2.5)
    tail = 1 - normal.cdf(c)
    clipped_var = 1 - 2 * (c * normal.log_prob(c).exp() + tail) + 2 * c**2 * tail
    assert noise.abs().max() <= 1.0 + 1e-6
    assert noise.mean().abs() < 0.005  # 5 standard errors of the mean
    assert noise.std().item() == pytest.approx(0.4 * clipped_var.sqrt().item(), rel=0.005)  # 3 std errors
    scale = torch.tensor([2.0, 5.0])
    with torch.no_grad():  # clip(eps, -c, c) * scale: with a large sigma' all but 0.4% of the draws sit at +-c * scale
        action = td3.smoothed_target_action(actor, obs, policy_noise=100.0, noise_clip=0.5)
    assert action[:, 0].min() == -0.5 * scale[0] and action[:, 0].max() == 0.5 * scale[0]
    assert (action[:, 0].abs() == 0.5 * scale[0]).float().mean() > 0.99
    assert action[:, 1].max() == 10.0  # mu + c * scale = 8.81 + 2.5 is clipped to the upper bound...
    assert torch.allclose(action[:, 1].min(), mu[1] - 0.5 * scale[1])  # ...mu - c * scale is inside


def test_sigkill_after_a_checkpoint_then_resume_finishes_with_one_curve():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    args = ["--env-id", "Pendulum-v1", "--total-timesteps", "600", "--learning-starts", "100", "--batch-size", "16",
            "--checkpoint-every", "100", "--eval-every", "300", "--eval-episodes", "1", "--log-every", "50",
            "--no-cuda"]
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "td3.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not glob.glob("runs/*/checkpoint.pt") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    (path,) = glob.glob("runs/*/checkpoint.pt")
    killed_at = torch.load(path, weights_only=True)["global_step"]
    assert killed_at < 600
    result = run_script("td3.py", "--resume", path)
    assert result.returncode == 0, result.stderr
    assert f"resuming {path} at step {killed_at:,}" in result.stdout and "finished 600 steps" in result.stdout
    scalars = read_scalars(os.path.dirname(path))
    for tag, values in scalars.items():
        steps = [step for step, _ in values]
        assert steps == sorted(set(steps)), tag  # one curve: no step twice, none out of order
    after = [step for step, _ in scalars["charts/episodic_return"] if step > killed_at]
    assert after == list(range(killed_at + 200, 601, 200))  # the episode in progress restarted at the resume
    assert [step for step, _ in scalars["losses/qf_loss"]][-1] == 600 and scalars["eval/episodic_return"][-1][0] == 600


@pytest.mark.slow
def test_compiled_updates_equal_eager_updates(monkeypatch):
    """--compile changes the speed, not the numbers (a minute of compiling: kept out of CI)."""
    monkeypatch.setattr(torch._functorch.config, "activation_memory_budget", 0.99)  # as train() sets it
    torch.manual_seed(0)
    actor, critic = Actor(HOPPER_OBS, HOPPER_ACT), TwinCritic(HOPPER_OBS, HOPPER_ACT)
    args = Args(policy_noise=0.0)  # the compiled RNG draws other numbers than the eager one
    batch = (torch.randn(256, 11), torch.rand(256, 3) * 2 - 1, torch.randn(256), torch.randn(256, 11),
             (torch.rand(256) < 0.1).float())
    results = []
    for wrap in (lambda f: f, torch.compile):
        a, c = copy.deepcopy(actor), copy.deepcopy(critic)
        a_opt, c_opt = (torch.optim.Adam(net.parameters(), fused=True) for net in (a, c))
        losses = [wrap(td3.update_critic)(batch, a, c, c, c_opt, args), wrap(td3.update_actor)(batch[0], a, c, a_opt)]
        results.append(losses + [p.detach() for p in (*a.parameters(), *c.parameters())])
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


# ---- issue 22 audit: the actor, not its target, is what an evaluation runs --------------------------------------
# Each expected return below is a rollout written here: mu(s) computed by hand from the checkpoint's weights (a
# ReLU MLP with a tanh output rescaled to the bounds), never through td3.evaluate or td3.Actor.forward.

ECHO = "DuetEchoTD3-v0"


class Echo(gym.Env):
    """obs = [t, 1] at step t of an episode; reward = the action, in [1, 5]; the registered TimeLimit ends every
    episode after 3 steps. An episode's return is the sum of mu([0, 1]), mu([1, 1]) and mu([2, 1])."""

    observation_space = gym.spaces.Box(0, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(1, 5, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0, 1], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t, 1], np.float32), float(action[0]), False, False, {}


if ECHO not in gym.registry:
    gym.register(ECHO, entry_point=Echo, max_episode_steps=3)


def audit_mu(state: dict, obs) -> torch.Tensor:
    """mu(s) of an actor's state dict, by hand: tanh(W3 relu(W2 relu(W1 s + b1) + b2) + b3) * scale + centre."""
    x = torch.as_tensor(obs, dtype=torch.float32)
    for k in (0, 2):
        x = torch.relu(torch.nn.functional.linear(x, state[f"net.{k}.weight"], state[f"net.{k}.bias"]))
    x = torch.tanh(torch.nn.functional.linear(x, state["net.4.weight"], state["net.4.bias"]))
    return x * state["action_scale"] + state["action_bias"]


def audit_rollouts(state: dict, env_id: str, episodes: int, seed: int) -> float:
    """The mean undiscounted return of a = mu(s) from `state`, episode k seeded seed + k."""
    env, returns = gym.make(env_id), []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done = 0.0, False
        while not done:
            with torch.no_grad():
                action = audit_mu(state, obs[None])[0].numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total, done = total + float(reward), terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def test_audit_the_final_evaluation_runs_the_actor_not_its_target():
    metrics = train(chain_args(env_id=ECHO))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)  # written just before the final evaluation
    actor, target = (audit_rollouts(checkpoint[name], ECHO, 1, 0) for name in ("actor", "actor_target"))
    assert abs(actor - target) > 1e-3  # the two differ enough for the test to tell them apart
    assert metrics["eval/episodic_return"] == pytest.approx(actor, rel=1e-6)
    step, logged = read_scalars(metrics["run_dir"])["eval/episodic_return"][-1]
    assert step == 48 and logged == pytest.approx(actor, rel=1e-6)


def test_audit_evaluate_runs_the_checkpoints_actor_not_its_target():
    """`td3.py --evaluate` as a user runs it, on a checkpoint whose target actor is far from its actor."""
    path = train(chain_args(env_id="Pendulum-v1", seed=3))["checkpoint"]
    checkpoint = torch.load(path, weights_only=True)
    torch.manual_seed(0)
    spaces = gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    checkpoint["actor_target"] = Actor(*spaces).state_dict()
    torch.save(checkpoint, path)
    actor, target = (audit_rollouts(checkpoint[name], "Pendulum-v1", 2, 3 + 10_000) for name in ("actor",
                                                                                                "actor_target"))
    assert abs(actor - target) > 1.0  # the test can tell them apart at the one decimal printed
    result = run_script("td3.py", "--evaluate", path, "--eval-episodes", "2")
    assert result.returncode == 0, result.stderr
    match = re.search(r"mean return (-?[\d.]+) ± [\d.]+ over 2 episodes", result.stdout)
    assert match, result.stdout
    assert float(match[1]) == pytest.approx(actor, abs=0.051)
