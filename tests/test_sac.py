"""sac.py: the pieces against hand computations, the wiring through train itself on a tiny env whose terminations
and truncations the test controls, and the long-run behaviour (checkpoints, resume, signals, NaN, video)."""

import ast
import glob
import importlib.util
import inspect
import math
import os
import re
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from helpers import REPO, only_run_dir, read_scalars, read_tags
from torch.distributions import AffineTransform, Independent, Normal, TanhTransform, TransformedDistribution

import sac
from sac import (
    Actor,
    Args,
    Critic,
    ReplayBuffer,
    polyak_update,
    train,
    update_actor,
    update_critic,
    update_temperature,
)

BOUNDS = gym.spaces.Box(low=np.array([-2, 0, -1], np.float32), high=np.array([2, 1, 3], np.float32))


def box(n: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)


class Chain(gym.Env):
    """obs = [t, 1]: t counts the steps of the episode. Reward 10 t' + a. The episode terminates at t' = 3 when the
    action there is positive (if `terminate`), and TimeLimit truncates it at t' = 4 otherwise."""

    observation_space = box(2)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, terminate: bool = True, render_mode: str | None = None):
        self.terminate, self.t, self.render_mode = terminate, 0, render_mode

    def render(self):
        return np.full((8, 8, 3), 40 * self.t, np.uint8)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate and self.t == 3 and float(action[0]) > 0
        return np.array([self.t, 1.0], np.float32), 10.0 * self.t + float(action[0]), terminated, False, {}


class Image(Chain):
    observation_space = gym.spaces.Box(0, 255, (4, 4, 3), np.uint8)


gym.register("SacChain-v0", entry_point=Chain, max_episode_steps=4)
gym.register("SacChainFixed-v0", entry_point=Chain, max_episode_steps=4, kwargs={"terminate": False})
gym.register("SacImage-v0", entry_point=Image, max_episode_steps=4)


def chain_args(**kwargs) -> Args:
    defaults = dict(env_id="SacChain-v0", total_timesteps=40, learning_starts=12, batch_size=8, eval_every=1000,
                    eval_episodes=1, log_every=4, checkpoint_every=0, cuda=False)
    return Args(**(defaults | kwargs))


def tiny_args(**kwargs) -> Args:
    defaults = dict(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200, eval_every=300, eval_episodes=1,
                    log_every=50, cuda=False)
    return Args(**(defaults | kwargs))


def nets(seed: int, obs_dim: int = 3):
    """An actor, a critic and a target critic initialised apart (targets != online networks)."""
    torch.manual_seed(seed)
    return Actor(box(obs_dim), BOUNDS), Critic(box(obs_dim), BOUNDS), Critic(box(obs_dim), BOUNDS)


def a_batch(n: int = 16):
    torch.manual_seed(123)
    obs, next_obs = torch.randn(n, 3), torch.randn(n, 3) + 3  # s != s'
    actions = torch.rand(n, 3) * torch.tensor([4.0, 1.0, 4.0]) + torch.tensor([-2.0, 0.0, -1.0])
    terminations = (torch.arange(n) % 3 == 0).float()
    return obs, actions, torch.randn(n), next_obs, terminations


# ---- the pieces, by hand -----------------------------------------------------------------------------------------

def test_log_prob_matches_torch_distributions():
    """log pi of the rescaled action, against tanh and affine transforms of a Normal (float64, asymmetric bounds)."""
    torch.manual_seed(0)
    actor = Actor(box(5), BOUNDS).double()
    obs = torch.randn(64, 5, dtype=torch.float64)
    action, log_prob, mean_action = actor.get_action(obs)
    assert action.shape == (64, 3) and log_prob.shape == (64,) and mean_action.shape == (64, 3)
    mean, log_std = actor(obs)
    low, high = torch.tensor(BOUNDS.low, dtype=torch.float64), torch.tensor(BOUNDS.high, dtype=torch.float64)
    transforms = [TanhTransform(), AffineTransform(loc=(high + low) / 2, scale=(high - low) / 2)]
    dist = Independent(TransformedDistribution(Normal(mean, log_std.exp()), transforms), 1)
    assert torch.allclose(log_prob, dist.log_prob(action), atol=1e-8, rtol=1e-8)
    assert torch.all(action > low) and torch.all(action < high)
    squashed_mean = mean
    for t in transforms:
        squashed_mean = t(squashed_mean)
    assert torch.allclose(mean_action, squashed_mean)


def test_log_prob_stays_finite_when_the_tanh_saturates():
    """Far in the tail tanh(u) rounds to 1 in float32; the softplus form of log(1 - tanh^2) stays finite."""
    torch.manual_seed(0)
    actor = Actor(box(5), BOUNDS)
    with torch.no_grad():
        actor.mean_layer.bias.fill_(30.0)
        actor.log_std_layer.bias.fill_(-5.0)
    action, log_prob, _ = actor.get_action(torch.randn(8, 5))
    assert torch.isfinite(log_prob).all()
    assert log_prob.min() > 3 * 50  # log(1 - tanh(30)^2) ~ -58.6 per dimension: a huge density, not -inf or +inf
    assert torch.allclose(action, torch.tensor(BOUNDS.high).expand(8, 3))


def test_two_critics_are_two_independent_mlps():
    _, critic, _ = nets(0)
    obs, actions = torch.randn(32, 3), torch.rand(32, 3)
    q = critic(obs, actions)
    x = torch.cat([obs, actions], -1)
    assert q.shape == (2, 32)
    assert torch.equal(q[0], critic.q1(x).squeeze(-1)) and torch.equal(q[1], critic.q2(x).squeeze(-1))
    assert not torch.equal(critic.q1[0].weight, critic.q2[0].weight)


def test_wiring_critic_loss_by_hand():
    """y from the TARGET critics at (s', a' ~ pi(.|s')) with log pi(a'|s'), the min of both, (1 - terminated);
    the loss 1/2 sum_j mean (Q_j(s, a) - y)^2, and one SGD step on the critic's weights only."""
    actor, critic, critic_target = nets(0)
    batch = a_batch()
    obs, actions, rewards, next_obs, terminations = batch
    log_alpha, gamma = torch.tensor(math.log(0.5)), 0.9
    torch.manual_seed(7)
    next_actions, next_log_prob, _ = actor.get_action(next_obs)
    with torch.no_grad():
        next_q = critic_target(next_obs, next_actions)
        assert (next_q[0] != next_q[1]).all()
        y = rewards + gamma * (1 - terminations) * (torch.minimum(next_q[0], next_q[1]) - 0.5 * next_log_prob)
    expected = 0.5 * ((critic.q1(torch.cat([obs, actions], -1)).squeeze(-1) - y) ** 2).mean() + \
        0.5 * ((critic.q2(torch.cat([obs, actions], -1)).squeeze(-1) - y) ** 2).mean()
    grads = torch.autograd.grad(expected, list(critic.parameters()))
    new_weights = [p.detach() - 0.1 * g for p, g in zip(critic.parameters(), grads)]
    actor_before, target_before = [[p.clone() for p in m.parameters()] for m in (actor, critic_target)]
    torch.manual_seed(7)
    loss = update_critic(batch, actor, critic, critic_target, torch.optim.SGD(critic.parameters(), lr=0.1),
                         log_alpha, Args(gamma=gamma))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for p, e in zip(critic.parameters(), new_weights):
        assert torch.allclose(p, e, atol=1e-6)
    for module, before in ((actor, actor_before), (critic_target, target_before)):
        assert all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_wiring_actor_loss_by_hand():
    """J_pi = mean(alpha log pi(a|s) - min_j Q_j(s, a)), a reparameterised at s; the step moves the actor only and
    computes no gradient for the critics' weights."""
    actor, critic, _ = nets(1)
    obs = a_batch()[0]
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    probe = Actor(box(3), BOUNDS)
    probe.load_state_dict(actor.state_dict())
    torch.manual_seed(5)
    a, log_prob, _ = probe.get_action(obs)
    q = critic(obs, a)
    expected = (0.5 * log_prob - torch.minimum(q[0], q[1])).mean()
    grads = torch.autograd.grad(expected, list(probe.parameters()))
    new_weights = [p.detach() - 0.1 * g for p, g in zip(probe.parameters(), grads)]
    critic_before = [p.clone() for p in critic.parameters()]
    torch.manual_seed(5)
    loss, returned_log_prob = update_actor(obs, actor, critic, torch.optim.SGD(actor.parameters(), lr=0.1),
                                           log_alpha)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(returned_log_prob, log_prob.detach()) and not returned_log_prob.requires_grad
    for p, e in zip(actor.parameters(), new_weights):
        assert torch.allclose(p, e, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(critic_before, critic.parameters()))
    assert all(p.grad is None for p in critic.parameters()) and log_alpha.grad is None


@pytest.mark.parametrize(("log_prob", "direction"), [(-10.0, -1), (5.0, 1)])
def test_wiring_temperature_falls_when_entropy_exceeds_the_target(log_prob, direction):
    """H_target = -3: entropy -log_prob above it (log_prob = -10) lowers alpha, below it (log_prob = 5) raises it."""
    log_alpha = torch.tensor(math.log(2.0), requires_grad=True)
    optimizer = torch.optim.SGD([log_alpha], lr=0.1)
    loss = update_temperature(torch.full((8,), log_prob), log_alpha, optimizer, target_entropy=-3.0)
    assert loss.item() == pytest.approx(-2.0 * (log_prob - 3.0))  # -alpha (log pi + H_target), alpha = 2
    assert log_alpha.item() == pytest.approx(math.log(2.0) + 0.1 * 2.0 * (log_prob - 3.0))
    assert math.copysign(1, log_alpha.item() - math.log(2.0)) == direction


def test_wiring_polyak_update_matches_the_formula():
    _, qf, qf_target = nets(2)
    expected = [0.005 * p + 0.995 * t for p, t in zip(qf.parameters(), qf_target.parameters())]
    polyak_update(qf, qf_target, 0.005)
    for e, t in zip(expected, qf_target.parameters()):
        assert torch.allclose(e, t, atol=1e-7)


def test_replay_buffer_wraps_around_and_round_trips():
    rb = ReplayBuffer(5, box(3), box(2), device=torch.device("cpu"))

    def vector_step(first: int):  # two envs; transition t: obs t, actions t, reward t, s' t + 0.5, done t % 2
        t = np.array([first, first + 1], dtype=np.float64)
        return np.repeat(t[:, None], 3, 1), np.repeat(t[:, None], 2, 1), t, np.repeat(t[:, None], 3, 1) + 0.5, t % 2

    rb.add(*vector_step(0))
    assert rb.count == 2 and set(rb.sample(1000)[0][:, 0].tolist()) == {0.0, 1.0}  # only filled slots are drawn
    half = rb.state_dict()
    assert half["obs"].shape == (2, 3) and half["count"] == 2  # the filled rows only
    rb.add(*vector_step(2))
    rb.add(*vector_step(4))  # transition 5 overwrites slot 0, the oldest
    assert rb.count == 5 and rb.pos == 1
    assert rb.obs[:, 0].tolist() == [5, 1, 2, 3, 4] and rb.next_obs[:, 0].tolist() == [5.5, 1.5, 2.5, 3.5, 4.5]
    assert rb.terminations.tolist() == [1, 1, 0, 1, 0] and rb.rewards.tolist() == [5, 1, 2, 3, 4]
    obs, actions, rewards, next_obs, terminations = rb.sample(64)
    assert obs.shape == (64, 3) and next_obs.shape == (64, 3) and actions.shape == (64, 2)
    assert rewards.shape == (64,) and terminations.shape == (64,)
    assert torch.equal(next_obs, obs + 0.5) and torch.equal(actions[:, 0], rewards)  # rows stay together
    copy = ReplayBuffer(5, box(3), box(2), device=torch.device("cpu"))
    copy.load_state_dict(rb.state_dict())
    assert (copy.pos, copy.count) == (1, 5) and all(torch.equal(getattr(copy, f), getattr(rb, f)) for f in rb.fields)


def test_a_million_hopper_transitions_fit_in_150_mb():
    rb = ReplayBuffer(1_000_000, box(11), box(3), device=torch.device("meta"))  # sizes, no allocation
    assert sum(getattr(rb, f).numel() * 4 for f in rb.fields) < 150e6


# ---- the wiring through train ------------------------------------------------------------------------------------

@pytest.fixture
def recorded(monkeypatch):
    """Wraps what train stores and calls: the replay buffer's add, the three updates and the target update."""
    log = {"add": [], "calls": [], "critic": [], "actor": [], "temperature": [], "polyak": []}
    add = ReplayBuffer.add

    def recording_add(self, *args, **kwargs):
        fields = inspect.signature(add).bind(self, *args, **kwargs).arguments
        log["add"].append({k: np.array(v, dtype=np.float64) for k, v in fields.items() if k != "self"})
        return add(self, *args, **kwargs)

    def wrap(name, fn):
        def recording(*args):
            log["calls"].append(name)
            result = fn(*args)
            log[name].append((args, result))
            return result
        return recording

    def recording_polyak(net, target, tau):
        log["calls"].append("polyak")
        before = [t.clone() for t in target.parameters()]
        polyak_update(net, target, tau)
        log["polyak"].append((net, target, tau, before, [p.clone() for p in net.parameters()],
                              [t.clone() for t in target.parameters()]))

    monkeypatch.setattr(ReplayBuffer, "add", recording_add)
    monkeypatch.setattr(sac, "update_critic", wrap("critic", update_critic))
    monkeypatch.setattr(sac, "update_actor", wrap("actor", update_actor))
    monkeypatch.setattr(sac, "update_temperature", wrap("temperature", update_temperature))
    monkeypatch.setattr(sac, "polyak_update", recording_polyak)
    return log


def test_wiring_train_stores_true_next_states_and_terminations_only(recorded):
    train(chain_args())
    adds = recorded["add"]
    assert len(adds) == 40 and all(a["obs"].shape == (1, 2) for a in adds)
    obs, next_obs = np.array([a["obs"][0, 0] for a in adds]), np.array([a["next_obs"][0, 0] for a in adds])
    actions, rewards = np.array([a["actions"][0, 0] for a in adds]), np.array([a["rewards"][0] for a in adds])
    terminations = np.array([a["terminations"][0] for a in adds])
    assert np.array_equal(next_obs, obs + 1)  # the true s' at every step, never the next episode's reset state
    assert np.allclose(rewards, 10 * next_obs + actions, atol=1e-5)  # each row's reward belongs to its action
    ended = (next_obs == 4) | ((next_obs == 3) & (actions > 0))
    assert np.array_equal(terminations, (next_obs == 3) & (actions > 0))  # terminated, not truncated at t' = 4
    assert terminations.sum() > 0 and (next_obs == 4).sum() > 0  # both kinds of episode end happened
    assert np.array_equal(obs[1:][ended[:-1]], np.zeros(ended[:-1].sum()))  # after an end, the episode restarts
    assert np.all(np.abs(actions) <= 1)


def test_wiring_train_runs_each_update_in_order_on_one_batch(recorded):
    metrics = train(chain_args(policy_frequency=2, learning_starts=11, updates_per_step=0.5, total_timesteps=41))
    assert metrics["num_updates"] == 15  # (41 - 11) * 0.5
    assert recorded["calls"] == ["critic", "polyak", "critic", "actor", "temperature", "polyak"] * 7 + [
        "critic", "polyak"]
    critic_calls = [args for args, _ in recorded["critic"]]
    for k, (actor_call, _) in enumerate(recorded["actor"]):
        batch, actor, critic, critic_target, optimizer, log_alpha, args = critic_calls[2 * k + 1]
        assert critic_target is not critic and actor_call[2] is critic and actor_call[0] is batch[0]  # s, not s'
        assert args.gamma == 0.99 and batch[0].shape == (8, 2) and actor_call[4] is log_alpha
    for net, target, tau, before, online, after in recorded["polyak"]:
        assert net is critic_calls[0][2] and target is critic_calls[0][3] and tau == 0.005
        for b, o, a in zip(before, online, after):
            assert torch.allclose(a, b + 0.005 * (o - b), atol=1e-7)
    assert metrics["alpha"] != 1.0  # the temperature moved


def test_wiring_temperature_update_follows_the_actor_update(recorded):
    """After every actor update, on its log-probabilities, with H_target = -|A|, moving log alpha; none with
    --no-autotune."""
    metrics = train(chain_args(total_timesteps=20))
    assert recorded["calls"] == ["critic", "actor", "temperature", "polyak"] * 8
    for (actor_args, (_, log_prob)), (args, _) in zip(recorded["actor"], recorded["temperature"]):
        assert args[0] is log_prob and args[1] is actor_args[4] and args[3] == -1.0
    assert metrics["alpha"] != 1.0
    metrics = train(chain_args(total_timesteps=20, autotune=False, alpha=0.1))
    assert len(recorded["temperature"]) == 8 and metrics["alpha"] == pytest.approx(0.1)


def test_updates_per_step_counts_all_envs_together():
    assert train(chain_args(num_envs=4, updates_per_step=0.5))["num_updates"] == 14  # (40 - 12) * 0.5
    assert train(chain_args(num_envs=2, learning_starts=13, total_timesteps=20))["num_updates"] == 6  # from 14


def test_evaluation_leaves_the_training_run_alone():
    """Evaluating draws no random numbers (it acts with the squashed mean), so how often it runs changes nothing."""
    weights = []
    for eval_every in (4, 1000):
        checkpoint = torch.load(train(chain_args(eval_every=eval_every))["checkpoint"], weights_only=True)
        weights.append(checkpoint["actor"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# ---- checkpoints and resume --------------------------------------------------------------------------------------

def test_exact_resume_at_an_update_boundary(tmp_path, monkeypatch):
    """A run that crashes after its checkpoint at step 16 (an episode boundary of the 4-step chain) and is resumed
    ends with the uninterrupted run's weights, optimizers, temperature and replay buffer; another seed does not."""
    args = dict(env_id="SacChainFixed-v0", checkpoint_every=16, seed=7)
    whole = torch.load(train(chain_args(**args))["checkpoint"], weights_only=True)
    other = torch.load(train(chain_args(**(args | {"seed": 8})))["checkpoint"], weights_only=True)

    calls = []

    def crash_after_step_20(net, target, tau):
        calls.append(1)
        if len(calls) == 20 - 12:
            raise RuntimeError("crash")
        polyak_update(net, target, tau)

    with monkeypatch.context() as patch:
        patch.setattr(sac, "polyak_update", crash_after_step_20)
        with pytest.raises(RuntimeError, match="crash"):
            train(chain_args(**args))
    path = glob.glob("runs/SacChainFixed-v0__sac__7__*")
    path = [p for p in path if torch.load(f"{p}/checkpoint.pt", weights_only=True)["global_step"] == 16][0]
    resumed = torch.load(train(Args(resume=f"{path}/checkpoint.pt", cuda=False))["checkpoint"], weights_only=True)
    assert resumed["global_step"] == whole["global_step"] == 40 and resumed["num_updates"] == 28
    for key in ("actor", "critic", "critic_target", "actor_optimizer", "critic_optimizer", "alpha_optimizer",
                "replay_buffer"):
        flat = [[t for t in torch.utils._pytree.tree_leaves(c[key]) if isinstance(t, torch.Tensor)]
                for c in (resumed, whole)]
        assert all(torch.equal(a, b) for a, b in zip(*flat, strict=True)), key
    assert torch.equal(resumed["log_alpha"], whole["log_alpha"])
    assert not torch.equal(other["actor"]["mean_layer.weight"], whole["actor"]["mean_layer.weight"])


def test_checkpoint_loads_with_weights_only_and_evaluates(capsys):
    metrics = train(chain_args(eval_episodes=2))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert checkpoint["script"] == "sac" and checkpoint["global_step"] == 40 and checkpoint["args"]["seed"] == 1
    assert checkpoint["replay_buffer"]["obs"].shape == (40, 2)  # the filled rows, not the 1M-row buffer
    assert os.path.getsize(metrics["checkpoint"]) < 5e6  # not the 28 MB storage behind a view of those rows
    assert set(checkpoint["ranks"][0]["rng"]) >= {"python", "numpy", "torch"} and "action_space_rng" in checkpoint
    assert checkpoint["log_alpha"].exp().item() == pytest.approx(metrics["alpha"])
    returns = sac.evaluate_checkpoint(Args(evaluate=metrics["checkpoint"], eval_episodes=2))
    assert returns.mean() == pytest.approx(metrics["eval/episodic_return"])
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"evaluation of .*checkpoint.pt on SacChain-v0: mean return -?[\d.]+ ± [\d.]+ over 2 "
                        r"episodes", out[-1])
    assert out[-4].startswith("finished 40 steps in 0:00:") and "final evaluation return" in out[-4]
    with pytest.raises(SystemExit, match="error: --evaluate: the checkpoint's networks do not fit Pendulum-v1's "):
        sac.evaluate_checkpoint(Args(evaluate=metrics["checkpoint"]), "Pendulum-v1")
    assert out[-3] == f"run folder: {metrics['run_dir']}   (tensorboard --logdir runs)"
    assert out[-2] == f"checkpoint: {metrics['checkpoint']}"


def test_nan_stops_in_one_line_and_keeps_the_last_good_checkpoint(monkeypatch, capsys):
    saved = []
    save = sac.Run.save

    def recording_save(run, *args, **kwargs):
        save(run, *args, **kwargs)
        saved.append(open(run.path, "rb").read())

    monkeypatch.setattr(sac.Run, "save", recording_save)
    with pytest.raises(SystemExit) as exit_info:
        train(chain_args(policy_lr=1e30, q_lr=1e30, checkpoint_every=12, log_every=1))
    assert exit_info.value.code == 1 and len(saved) == 1
    run_dir = only_run_dir()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(rf"error: losses/\w+ is (nan|inf|-inf) at step 1[3-9]; stopped. The last "
                                          rf"good checkpoint: {re.escape(run_dir)}/checkpoint.pt", err[0]), err
    assert open(f"{run_dir}/checkpoint.pt", "rb").read() == saved[0]


def test_a_failing_video_keeps_the_checkpoint(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no encoder")

    monkeypatch.setattr(gym.wrappers, "RecordVideo", broken)
    metrics = train(chain_args(capture_video=True))
    assert os.path.exists(metrics["checkpoint"]) and math.isfinite(metrics["eval/episodic_return"])
    assert "warning: video not recorded: no encoder" in capsys.readouterr().err


def test_run_folders_are_unique():
    first, second = (train(chain_args(total_timesteps=8, learning_starts=4))["run_dir"] for _ in range(2))
    assert first != second and re.fullmatch(r"runs/SacChain-v0__sac__1__\d{8}-\d{6}(-2)?", first)
    assert sac.new_folder("runs", "x") == "runs/x" and sac.new_folder("runs", "x") == "runs/x-2"


def write(path: str, obj) -> str:
    torch.save(obj, path)
    return path


@pytest.mark.parametrize(("make_path", "message"), [
    (lambda: "nowhere.pt", "error: --resume nowhere.pt: no such file"),
    (lambda: os.makedirs("folder") or "folder", "error: --resume folder: is a directory"),
    (lambda: open("junk.pt", "w").write("junk") and "junk.pt", "error: --resume junk.pt: not a duet checkpoint"),
    (lambda: write("plain.pt", {"a": 1}), "error: --resume plain.pt: not a duet checkpoint (no 'script' entry)"),
    (lambda: write("td3.pt", {"script": "td3"}), "error: --resume td3.pt: a checkpoint of td3.py, not sac.py"),
])
def test_bad_checkpoint_paths_exit_with_one_line(make_path, message):
    with pytest.raises(SystemExit) as exit_info:
        train(Args(resume=make_path(), cuda=False))
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)
    assert "weights_only" not in str(exit_info.value.code) and not os.path.exists("runs")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(env_id="SacImage-v0"), "error: sac.py needs flat (1-D Box) observations, SacImage-v0 has Box(0, 255, "),
    (dict(env_id="CartPole-v1"), "error: sac.py needs a bounded 1-D Box action space, CartPole-v1 has Discrete(2)"),
    (dict(env_id="CarRacing-v3"), "error: CarRacing-v3 needs an optional package: pip install \"gymnasium[box2d]\""),
    (dict(buffer_size=10**13), "error: a replay buffer of 10,000,000,000,000 transitions needs "
                               "280,000,000,000,000 bytes; "),
])
def test_env_checks_fail_before_anything_is_made(kwargs, message):
    if kwargs.get("env_id") == "CarRacing-v3" and importlib.util.find_spec("Box2D"):
        message = "error: sac.py needs flat (1-D Box) observations, CarRacing-v3"
    with pytest.raises(SystemExit) as exit_info:
        train(chain_args(**kwargs))
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)
    assert not os.path.exists("runs")  # no run folder, empty or not


@pytest.mark.parametrize(("argv", "message"), [
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--q-lr", "0"], "--q-lr must be positive"),
    (["--learning-starts", "-1"], "--learning-starts must not be negative"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be 0 or more"),
    (["--total-timesteps", "100", "--learning-starts", "100"], "must be below --total-timesteps"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--tau", "0"], "--tau must be in (0, 1]"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--cudagraphs", "--no-cuda"], "--cudagraphs needs CUDA"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(Args, args=argv)
    code = str(exit_info.value.code)
    assert code.startswith("error: ") and message in code and "\n" not in code


def test_help_documents_every_argument(monkeypatch, capsys):
    """Every field's docstring (read from the source) appears whole in --help, on one logical line."""
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        tyro.cli(Args, args=["--help"])
    help_text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    body = ast.parse(inspect.getsource(Args)).body[0].body
    docs = {b.target.id: n.value.value for b, n in zip(body, body[1:]) if isinstance(b, ast.AnnAssign)
            and isinstance(n, ast.Expr)}
    assert set(docs) == set(Args.__dataclass_fields__)
    for field, doc in docs.items():
        assert "\n" not in doc, field
        assert f"--{field.replace('_', '-')}" in help_text and " ".join(doc.split()) in help_text, field
    assert "{None}|STR" in help_text and "use_deterministic_algorithms(True" in help_text


# ---- the script as a user runs it --------------------------------------------------------------------------------

def test_cli_run_with_headless_video_and_tensorboard():
    """One run as a user starts it, with no display and no MUJOCO_GL: sac.py picks EGL and the final evaluation's
    video of InvertedPendulum-v4 decodes with frames."""
    import imageio.v3 as iio

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM")}
    result = subprocess.run([sys.executable, os.path.join(REPO, "sac.py"), "--env-id", "InvertedPendulum-v4",
                             "--total-timesteps", "200", "--learning-starts", "100", "--eval-every", "100",
                             "--eval-episodes", "1", "--log-every", "50", "--batch-size", "32", "--no-cuda",
                             "--capture-video"],
                            capture_output=True, text=True, timeout=600, env=env | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no warnings, no "out of date", no SDL noise
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "device: cpu" and lines[-4].startswith("finished 200 steps in 0:")
    run_dir = only_run_dir()
    assert lines[-2:] == [f"checkpoint: {run_dir}/checkpoint.pt", f"videos: {run_dir}/videos"]
    scalars = read_scalars(run_dir)
    assert [step for step, _ in scalars["eval/episodic_return"]] == [100, 200]
    assert [step for step, _ in scalars["losses/qf_loss"]] == [150, 200]
    for tag in ("charts/episodic_return", "charts/SPS", "losses/actor_loss", "losses/alpha", "losses/alpha_loss",
                "losses/entropy"):
        assert tag in scalars, tag
    assert "hyperparameters/text_summary" in read_tags(run_dir)["tensors"]
    videos = glob.glob(f"{run_dir}/videos/*.mp4")
    assert len(videos) == 1
    frames = iio.imread(videos[0])
    assert frames.ndim == 4 and frames.shape[0] >= 2 and frames.shape[-1] == 3 and frames.std() > 0


def start(*argv: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, os.path.join(REPO, "sac.py"), "--no-cuda", "--env-id", "Pendulum-v1",
                             "--eval-episodes", "1", "--batch-size", "32", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_sigint_writes_a_checkpoint_and_exits_130(capsys):
    proc = start("--total-timesteps", "100000", "--learning-starts", "100", "--checkpoint-every", "0")
    assert proc.stdout.readline().strip() == "device: cpu"  # train has started (its handlers are in place)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip() == ""
    path = f"{only_run_dir()}/checkpoint.pt"
    match = re.fullmatch(rf"interrupted at step ([\d,]+): checkpoint {re.escape(path)}; resume with: python "
                         rf"sac.py --resume {re.escape(path)}", out.strip().splitlines()[-1])
    assert match and torch.load(path, weights_only=True)["global_step"] == int(match[1].replace(",", ""))
    sac.evaluate_checkpoint(Args(evaluate=path, eval_episodes=1))
    assert capsys.readouterr().out.startswith(f"evaluation of {path} on Pendulum-v1: mean return ")


def test_sigkill_then_resume_gives_one_continuous_curve():
    proc = start("--total-timesteps", "400", "--learning-starts", "50", "--checkpoint-every", "100",
                 "--log-every", "20", "--eval-every", "200")
    deadline = time.time() + 300
    while not glob.glob("runs/*/checkpoint.pt") and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no handler runs
    proc.communicate()
    path = glob.glob("runs/*/checkpoint.pt")[0]
    saved_step = torch.load(path, weights_only=True)["global_step"]
    assert saved_step < 400
    metrics = train(Args(resume=path, cuda=False))
    assert metrics["global_step"] == 400 and metrics["run_dir"] == only_run_dir()
    scalars = read_scalars(metrics["run_dir"])
    for tag, values in scalars.items():
        steps = [step for step, _ in values]
        assert steps == sorted(set(steps)), tag  # no duplicated or overlapping steps
    ended = [200] * (saved_step >= 200) + list(range(saved_step + 200, 401, 200))  # the episode restarts
    assert [s for s, _ in scalars["charts/episodic_length"]] == ended
    assert [s for s, _ in scalars["losses/qf_loss"]] == list(range(60, 401, 20))
    assert [s for s, _ in scalars["eval/episodic_return"]] == [200, 400]


# ---- issue 22 audit: training acts with sampled actions; the actor's gradient goes through the reparameterisation --
# The expected values are computed here, in float64, from the networks' weights and the formulas of the chapter (a
# ReLU MLP for mu and log sigma, u = mu + sigma eps, a = tanh(u) scale + centre): never through Actor.get_action.

def audit_gaussian(weights: dict, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu(s) and log sigma(s) (clamped to [-20, 2]) of an actor's weights, in float64, by hand."""
    x = obs.double()
    for k in (0, 2):
        x = torch.relu(x @ weights[f"backbone.{k}.weight"].T + weights[f"backbone.{k}.bias"])
    mean = x @ weights["mean_layer.weight"].T + weights["mean_layer.bias"]
    return mean, (x @ weights["log_std_layer.weight"].T + weights["log_std_layer.bias"]).clamp(-20, 2)


def audit_q(weights: dict, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """min(Q_1, Q_2)(s, a) of a critic's weights, in float64, by hand: two 2-hidden-layer ReLU MLPs on [s, a]."""
    qs = []
    for head in ("q1", "q2"):
        x = torch.cat([obs.double(), actions], -1)
        for k in (0, 2):
            x = torch.relu(x @ weights[f"{head}.{k}.weight"].T + weights[f"{head}.{k}.bias"])
        qs.append((x @ weights[f"{head}.4.weight"].T + weights[f"{head}.4.bias"]).squeeze(-1))
    return torch.minimum(*qs)


def test_audit_after_the_random_phase_training_acts_with_sampled_actions():
    """400 actions after the 12 random ones, from an actor that a learning rate of 1e-12 keeps as it started:
    eps = (atanh(a) - mu(s)) / sigma(s) must look like N(0, 1) draws, not the zeros of the squashed mean action."""
    metrics = train(chain_args(env_id="SacChainFixed-v0", total_timesteps=412, policy_lr=1e-12,
                               updates_per_step=0.05))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    obs, actions = (checkpoint["replay_buffer"][name][12:] for name in ("obs", "actions"))
    assert len(actions) == 400  # bounds [-1, 1]: a = tanh(u)
    weights = {name: w.double() for name, w in checkpoint["actor"].items()}
    mean, log_std = audit_gaussian(weights, obs)
    eps = (torch.atanh(actions.double().clamp(-1 + 1e-7, 1 - 1e-7)) - mean) / log_std.exp()
    assert (eps.abs() > 1e-3).float().mean() > 0.9  # not mu(s)
    assert abs(eps.mean().item()) < 0.2  # 4 standard errors of the mean of 400 N(0, 1) draws
    assert 0.85 < eps.std().item() < 1.15  # ~4 standard errors of their standard deviation


def test_audit_actor_gradient_goes_through_the_reparameterised_sample():
    """The actor's gradient against one computed by hand: eps from the same seed, u = mu + sigma eps, a = tanh(u)
    rescaled, J = mean(alpha log pi(a|s) - min_j Q_j(s, a)) with the tanh and affine corrections, differentiated
    with a depending on the actor's weights through u. A sample without the reparameterisation (u.sample(), or
    u detached) gives the same loss but another gradient."""
    actor, critic, _ = nets(1)
    obs = a_batch()[0]
    low, high = (torch.tensor(b, dtype=torch.float64) for b in (BOUNDS.low, BOUNDS.high))
    scale, centre = (high - low) / 2, (high + low) / 2
    weights = {name: p.detach().double().requires_grad_() for name, p in actor.named_parameters()}
    torch.manual_seed(5)
    eps = torch.randn(16, 3).double()
    mean, log_std = audit_gaussian(weights, obs)
    u = mean + log_std.exp() * eps
    log_prob = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
                - torch.log(1 - torch.tanh(u) ** 2) - scale.log()).sum(-1)
    q = audit_q({name: w.detach().double() for name, w in critic.state_dict().items()}, obs,
                torch.tanh(u) * scale + centre)
    expected = (0.5 * log_prob - q).mean()
    grads = dict(zip(weights, torch.autograd.grad(expected, list(weights.values()))))
    torch.manual_seed(5)
    loss, _ = update_actor(obs, actor, critic, torch.optim.SGD(actor.parameters(), lr=0.0),
                           torch.tensor(math.log(0.5)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    for name, p in actor.named_parameters():
        assert torch.allclose(p.grad.double(), grads[name], rtol=1e-3, atol=1e-6), name
    assert grads["mean_layer.bias"].abs().max() > 1e-2  # a gradient the test can see
