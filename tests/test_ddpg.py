"""ddpg.py's fast tests: the pieces against the chapter's equations, the wiring of `train` itself (what it stores,
calls and updates, on a registered Chain env whose terminations and time limits are known), and the long-run
behaviour (checkpoints, resume, signals, NaN, video, bad input). The learning test is test_ddpg_learning.py;
tests/mutants/ddpg.py lists the mutants these tests must catch (python tests/mutants/run.py ddpg)."""

import ast
import copy
import inspect
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from helpers import REPO, only_run_dir, read_scalars, read_tags, run_script

import ddpg
from ddpg import Actor, Args, Critic, OUNoise, ReplayBuffer, train

HOPPER_OBS = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
HOPPER_ACT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
CHAIN = "DuetChainDDPG-v0"


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


for env_id, entry_point in ((CHAIN, Chain), ("DuetImageDDPG-v0", Image)):
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

    monkeypatch.setattr(ddpg, "ReplayBuffer", RecordingBuffer)
    for name in ("update_critic", "update_actor", "polyak_update"):
        monkeypatch.setattr(ddpg, name, recorder(name.split("_")[-1].replace("update", "polyak"), getattr(ddpg, name)))
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


def test_train_runs_one_update_per_step_then_the_actor_and_both_polyak_updates(monkeypatch):
    rec = record_train(monkeypatch, stub_updates=True, tau=0.01)
    names = [name for name, _ in rec["calls"]]
    assert names == ["critic", "actor", "polyak", "polyak"] * 40  # 40 learning steps, one update each
    (rb,) = rec["buffers"]
    for k in range(0, len(rec["calls"]), 4):
        (_, (batch, actor_target, critic, critic_target, _, _)), (_, (obs, actor, critic2, _)) = \
            rec["calls"][k:k + 2]
        pairs = {(id(net), id(target)) for _, (net, target, tau) in rec["calls"][k + 2:k + 4] if tau == 0.01}
        assert pairs == {(id(actor), id(actor_target)), (id(critic), id(critic_target))}  # targets trail the nets
        assert actor is not actor_target and critic is not critic_target and critic2 is critic
        assert torch.equal(obs, batch[0])  # the actor learns on the critic's batch's states s
        assert len(batch[0]) == 4 and not torch.equal(batch[0], batch[3])


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


def test_ou_noise_is_scaled_to_the_bounds_and_restarts_with_each_episode(monkeypatch):
    draws = []
    original = OUNoise.sample

    def sample(self):
        before = self.x.clone()
        x = original(self)
        draws.append((before, x.clone()))
        return x

    monkeypatch.setattr(OUNoise, "sample", sample)
    rec = record_train(monkeypatch, stub_updates=True, noise="ou", ou_sigma=0.05)
    (rb,) = rec["buffers"]
    actor = rec["calls"][1][1][1]
    assert len(draws) == 40  # one draw per learning step
    with torch.no_grad():
        mu = actor(rb.obs[8:48])
    for i, (before, x) in enumerate(draws):
        torch.testing.assert_close(rb.actions[8 + i], mu[i] + 2 * x[0])  # a = mu(s) + x * half-width
        if rb.obs[8 + i, 0] == 0:  # an episode's first step: its process restarted at mu = 0
            assert torch.all(before == 0), i
        else:
            assert torch.all(before != 0), i


def test_targets_trail_the_networks_by_polyak_averaging(monkeypatch):
    records = []
    original = ddpg.polyak_update

    def polyak(net, target, tau):
        before = [p.clone() for p in target.parameters()]
        original(net, target, tau)
        records.append((before, [p.clone() for p in net.parameters()], [p.clone() for p in target.parameters()], tau))

    monkeypatch.setattr(ddpg, "polyak_update", polyak)
    train(chain_args(total_timesteps=24, tau=0.1))
    assert len(records) == 2 * 16
    for before, net, after, tau in records:
        assert tau == 0.1
        for b, n, a in zip(before, net, after):
            torch.testing.assert_close(a, b + tau * (n - b))
    assert any(not torch.equal(b, n) for b, n in zip(records[-1][0], records[-1][1]))  # the targets lag behind


def networks(seed: int = 0):
    """An actor, a critic and targets that differ from them (as after some training), on bounds [1, 5] x [-3, 1]."""
    torch.manual_seed(seed)
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (4,)), gym.spaces.Box(np.array([1, -3]), np.array([5, 1]))
    actor, critic = Actor(obs_space, act_space), Critic(obs_space, act_space)
    actor_target, critic_target = Actor(obs_space, act_space), Critic(obs_space, act_space)
    batch = (torch.randn(8, 4), torch.rand(8, 2) * torch.tensor([4, 4]) + torch.tensor([1, -3]), torch.randn(8),
             torch.randn(8, 4) + 3, torch.tensor([0, 1, 0, 0, 1, 0, 0, 0.0]))
    return actor, critic, actor_target.requires_grad_(False), critic_target.requires_grad_(False), batch


def test_critic_update_against_a_hand_computed_loss():
    actor, critic, actor_target, critic_target, batch = networks()
    obs, actions, rewards, next_obs, terminations = batch
    args = Args(gamma=0.9)
    with torch.no_grad():  # y = r + gamma (1 - terminated) Q'(s', mu'(s')), from the TARGET networks, at s'
        y = rewards + 0.9 * (1 - terminations) * critic_target(next_obs, actor_target(next_obs))
    expected = ((critic(obs, actions) - y) ** 2).mean()
    expected.backward()
    grads = [p.grad.clone() for p in critic.parameters()]
    critic.zero_grad(set_to_none=True)
    loss = ddpg.update_critic(batch, actor_target, critic, critic_target, torch.optim.SGD(critic.parameters(), lr=0),
                              args)
    torch.testing.assert_close(loss, expected.detach())
    for g, p in zip(grads, critic.parameters()):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is None for net in (actor, actor_target, critic_target) for p in net.parameters())


def test_actor_update_against_a_hand_computed_loss():
    actor, critic, _, _, (obs, *_) = networks(1)
    expected = -critic(obs, actor(obs)).mean()  # -Q(s, mu(s)) of the ONLINE critic, at s
    grads = torch.autograd.grad(expected, list(actor.parameters()))
    loss = ddpg.update_actor(obs, actor, critic, torch.optim.SGD(actor.parameters(), lr=0))
    torch.testing.assert_close(loss, expected.detach())
    for g, p in zip(grads, actor.parameters()):
        torch.testing.assert_close(p.grad, g)
    assert all(p.grad is None for p in critic.parameters())  # no gradient for the critic's weights


# ---- the pieces ------------------------------------------------------------------------------------------------


def test_ou_noise_reverts_to_its_mean():
    """E[x_t] = mu + (x_0 - mu) (1 - theta dt)^t for the Euler step, averaged over 20k independent processes."""
    torch.manual_seed(0)
    theta, sigma, dt, mu = 0.15, 0.2, 1.0, 0.5
    ou = OUNoise(20_000, 1, theta, sigma, dt, torch.device("cpu"), mu=mu)
    assert torch.all(ou.x == mu)  # every process starts at mu
    ou.x.fill_(2.0)
    for t in range(1, 31):
        x = ou.sample()
        if t in (1, 5, 30):
            expected = mu + (2.0 - mu) * (1 - theta * dt) ** t
            # std of the mean <= sqrt(sigma^2 / (2 theta - theta^2 dt) / 20k) = 0.0027: 0.015 is > 5 of them
            assert x.mean().item() == pytest.approx(expected, abs=0.015), t
    assert abs(x.mean().item() - mu) < 0.1  # 30 steps later it is close to mu


@pytest.mark.parametrize("dt", [1.0, 0.01])
def test_ou_noise_stationary_variance(dt):
    """Var[x] -> sigma^2 dt / (1 - (1 - theta dt)^2) for the Euler step, sigma^2 / (2 theta) as dt -> 0.

    8192 processes x 2 action dims, sampled at 4 times 10 / (theta dt) steps apart (correlated to e^-10):
    65,536 values, so the sample variance has a relative standard error of sqrt(2 / 65536) = 0.55%;
    the tolerance 2.5% is 4.5 of them. At dt = 1 the two formulas differ by 8%, at dt = 0.01 by 0.08%."""
    torch.manual_seed(0)
    theta, sigma = 0.15, 0.2
    ou = OUNoise(8192, 2, theta, sigma, dt, torch.device("cpu"))
    spacing = round(10 / (theta * dt))
    samples = []
    for t in range(1, 5 * spacing + 1):
        x = ou.sample()
        if t % spacing == 0 and t > spacing:  # after a burn-in of 10 time constants
            samples.append(x)
    variance = torch.cat(samples).var().item()
    euler = sigma**2 * dt / (1 - (1 - theta * dt) ** 2)
    assert variance == pytest.approx(euler, rel=0.025)
    if dt < 0.1:
        assert variance == pytest.approx(sigma**2 / (2 * theta), rel=0.025)
    else:
        assert variance != pytest.approx(sigma**2 / (2 * theta), rel=0.025)  # the test can tell the two apart


def test_ou_noise_resets_only_the_envs_whose_episode_ended():
    torch.manual_seed(0)
    ou = OUNoise(3, 2, 0.15, 0.2, 1.0, torch.device("cpu"))
    for _ in range(5):
        ou.sample()
    before = ou.x.clone()
    ou.reset(np.array([False, True, False]))
    assert torch.equal(ou.x[1], torch.zeros(2))
    assert torch.equal(ou.x[[0, 2]], before[[0, 2]])
    # the samples are temporally correlated: consecutive values are close, unlike Gaussian noise
    x = torch.stack([ou.sample().clone() for _ in range(2000)])
    lag1 = torch.corrcoef(torch.stack([x[:-1, 0, 0], x[1:, 0, 0]]))[0, 1]
    assert lag1 > 0.7  # 1 - theta dt = 0.85 in expectation


def test_polyak_update_matches_formula():
    torch.manual_seed(0)
    for net in (Critic(HOPPER_OBS, HOPPER_ACT), Actor(HOPPER_OBS, HOPPER_ACT)):
        target = copy.deepcopy(net).requires_grad_(False)
        for p in target.parameters():
            p.data.normal_()
        before = [p.clone() for p in target.parameters()]
        ddpg.polyak_update(net, target, 0.005)
        for p, t, t0 in zip(net.parameters(), target.parameters(), before):
            torch.testing.assert_close(t, 0.005 * p + 0.995 * t0)


def test_td_target_bootstraps_unless_terminated():
    y = ddpg.td_target(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0]), torch.tensor([5.0, 5.0]), gamma=0.9)
    assert y.tolist() == [1.0, 1.0 + 0.9 * 5.0]


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
    result = run_script("ddpg.py", "--env-id", "Pendulum-v1", "--total-timesteps", "600", "--learning-starts", "200",
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
    assert squeeze("(none: a new run)") in help_text and squeeze("use_deterministic_algorithms(True") in help_text


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_envs": 0}, "--num-envs must be positive"),
    ({"total_timesteps": -5}, "--total-timesteps must be positive"),
    ({"policy_lr": 0}, "--policy-lr must be positive"),
    ({"ou_theta": 0}, "--ou-theta must be positive"),
    ({"ou_theta": 2}, "--ou-theta times --ou-dt must be below 1"),
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
    ({"env_id": "CartPole-v1"}, "ddpg.py needs a bounded 1-D Box action space, CartPole-v1 has Discrete(2)"),
    ({"env_id": "DuetImageDDPG-v0"}, "ddpg.py needs a 1-D Box observation space, DuetImageDDPG-v0 has Box("),
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
    assert re.fullmatch(r"runs/DuetChainDDPG-v0__ddpg__1__\d{8}-\d{6}(-\d+)?", first["run_dir"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2:] == [f"run folder: {second['run_dir']}   (tensorboard --logdir runs)",
                          f"checkpoint: {second['checkpoint']}"]
    assert lines[-3].startswith("finished 16 steps in 0:00:")


def test_same_seed_same_run():
    runs = [train(chain_args(seed=seed, noise="ou")) for seed in (7, 7, 8)]
    values = [[v for tag in ("losses/qf_loss", "eval/episodic_return") for _, v in read_scalars(m["run_dir"])[tag]]
              for m in runs]
    assert values[0] == values[1] and values[0] != values[2]


def test_updates_per_step_counts_the_env_steps_of_all_envs():
    """Learning runs from env step 9 to 48: 20 vector steps of 2 envs, 2 updates each."""
    metrics = train(chain_args(num_envs=2))
    assert metrics["global_step"] == 48 and metrics["num_updates"] == 40


# ---- checkpoints, resume, signals, NaN, video ------------------------------------------------------------------


def test_checkpoint_loads_back_with_weights_only_and_evaluates_as_the_run_did():
    metrics = train(chain_args())
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert set(checkpoint) >= {"script", "args", "global_step", "num_updates", "actor", "critic", "actor_target",
                               "critic_target", "actor_optimizer", "critic_optimizer", "replay_buffer",
                               "action_space_rng", "ranks", "finished", "recent_returns"}
    assert set(checkpoint["ranks"][0]["rng"]) >= {"python", "numpy", "torch"}
    assert checkpoint["script"] == "ddpg" and checkpoint["args"]["env_id"] == CHAIN and checkpoint["finished"]
    assert checkpoint["global_step"] == 48 and checkpoint["num_updates"] == 40
    assert checkpoint["replay_buffer"]["obs"].shape == (48, 2)  # the filled rows only
    returns = ddpg.evaluate_checkpoint(Args(evaluate=metrics["checkpoint"], eval_episodes=1))  # its env, its seed
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-6)


def test_resume_at_an_update_boundary_is_exact(monkeypatch):
    """Checkpoints every 8 steps (Chain's episodes end there too): resumed at step 24, the run's networks,
    optimizers and replay buffer at step 48 equal those of the run that was never stopped."""
    original = ddpg.Run.save

    def save_and_keep(run, *args, **kwargs):
        original(run, *args, **kwargs)
        shutil.copy(run.path, f"{run.path}.{run.step}")

    monkeypatch.setattr(ddpg.Run, "save", save_and_keep)
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
    original = ddpg.Run.save

    def save_and_read(run, *args, **kwargs):
        original(run, *args, **kwargs)
        saved[run.step] = open(run.path, "rb").read()

    monkeypatch.setattr(ddpg.Run, "save", save_and_read)
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
               "another script's": "a checkpoint of sac.py, not ddpg.py"}[kind]
    assert str(exit_.value.code) == f"error: --resume {path}: {message}" or (
        kind == "not a checkpoint" and str(exit_.value.code).startswith(f"error: --resume {path}: {message} ("))
    assert "weights_only" not in str(exit_.value.code)


def test_ctrl_c_writes_a_checkpoint_that_evaluate_loads():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "ddpg.py"), "--env-id", "Pendulum-v1",
                             "--total-timesteps", "100000", "--learning-starts", "100", "--batch-size", "16",
                             "--no-cuda"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().startswith("device: ")
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    (line,) = out.strip().splitlines()
    match = re.fullmatch(r"interrupted at step ([\d,]+): checkpoint (\S+); resume with: python ddpg.py --resume \2",
                         line)
    assert match, line
    result = run_script("ddpg.py", "--evaluate", match[2], "--eval-episodes", "2")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"evaluation of {re.escape(match[2])} on Pendulum-v1: mean return -?\d+\.\d ± \d+\.\d "
                        r"over 2 episodes", result.stdout.strip()), result.stdout


def test_a_checkpoint_is_never_written_with_a_non_finite_parameter(monkeypatch, capsys):
    """No loss is checked (--log-every beyond the run's end): the check of the parameters before each checkpoint
    stops the run, and the checkpoint of step 8, written before learning started, is kept byte for byte."""
    saved, actor_updates = {}, []
    original_save, original_update = ddpg.Run.save, ddpg.update_actor

    def save_and_read(run, *args, **kwargs):
        original_save(run, *args, **kwargs)
        saved[run.step] = open(run.path, "rb").read()

    def update_then_poison(obs, actor, *args):  # the 5th actor update (at step 13) leaves one weight NaN
        loss = original_update(obs, actor, *args)
        actor_updates.append(loss)
        if len(actor_updates) == 5:
            with torch.no_grad():
                actor.net[0].weight[0, 0] = float("nan")
        return loss

    monkeypatch.setattr(ddpg.Run, "save", save_and_read)
    monkeypatch.setattr(ddpg, "update_actor", update_then_poison)
    with pytest.raises(SystemExit) as exit_:
        train(chain_args(checkpoint_every=8, log_every=1000))
    assert exit_.value.code == 1 and list(saved) == [8]  # the one due at step 16 was refused
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"error: a parameter is not finite at step 16; stopped\. The last good checkpoint: "
                        r"runs/\S+/checkpoint\.pt", line), line
    assert open(line.split(": ")[-1], "rb").read() == saved[8]  # byte for byte
    assert not os.path.exists(line.split(": ")[-1] + ".tmp")  # nothing at all was written at step 16


# ---- issue 22 audit: the actor, not its target, is what an evaluation runs --------------------------------------
# Each expected return below is a rollout written here: mu(s) computed by hand from the checkpoint's weights (a
# ReLU MLP with a tanh output rescaled to the bounds), never through ddpg.evaluate or ddpg.Actor.forward.

ECHO = "DuetEchoDDPG-v0"


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
    """`ddpg.py --evaluate` as a user runs it, on a checkpoint whose target actor is far from its actor."""
    path = train(chain_args(env_id="Pendulum-v1", seed=3))["checkpoint"]
    checkpoint = torch.load(path, weights_only=True)
    torch.manual_seed(0)
    spaces = gym.spaces.Box(-np.inf, np.inf, (3,)), gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    checkpoint["actor_target"] = Actor(*spaces).state_dict()
    torch.save(checkpoint, path)
    actor, target = (audit_rollouts(checkpoint[name], "Pendulum-v1", 2, 3 + 10_000) for name in ("actor",
                                                                                                "actor_target"))
    assert abs(actor - target) > 1.0  # the test can tell them apart at the one decimal printed
    result = run_script("ddpg.py", "--evaluate", path, "--eval-episodes", "2")
    assert result.returncode == 0, result.stderr
    match = re.search(r"mean return (-?[\d.]+) ± [\d.]+ over 2 episodes", result.stdout)
    assert match, result.stdout
    assert float(match[1]) == pytest.approx(actor, abs=0.051)
