import ast
import glob
import inspect
import math
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
import tyro
from gymnasium.wrappers.utils import RunningMeanStd
from helpers import only_run_dir, read_scalars, run_script

import a2c
from a2c import Actor, Args, Critic, ObsStats, compute_gae, evaluate, merged_obs_stats, time_limit_rewards, train

GAMMA = 0.99


def random_rollout(T: int = 12, N: int = 5, seed: int = 0):
    """float64 rewards, values, dones (about one step in five ends an episode) and last values."""
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    dones = (torch.rand(T, N, generator=g, dtype=torch.float64) < 0.2).double()
    dones[3, 0], dones[T - 1, 1] = 1.0, 1.0  # an end inside the rollout and one at its last step
    last_value = torch.randn(N, generator=g, dtype=torch.float64)
    return rewards, values, dones, last_value


def td_residuals(rewards, values, dones, last_value, gamma):
    """delta[t, n] = r + gamma V(s_{t+1}) (1 - done) - V(s_t), element by element."""
    T, N = rewards.shape
    delta = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for n in range(N):
            v_next = last_value[n] if t == T - 1 else values[t + 1, n]
            delta[t, n] = rewards[t, n] + gamma * v_next * (1 - dones[t, n]) - values[t, n]
    return delta


def test_chapter_worked_td_example():
    """V(s) = -2, r = +1, V(s') = -1.5, gamma = 0.99: one step of GAE is delta = 1.515 (lambda does not matter)."""
    for lam in (0.0, 0.95, 1.0):
        advantages, returns = compute_gae(torch.tensor([[1.0]]), torch.tensor([[-2.0]]), torch.tensor([[0.0]]),
                                          torch.tensor([-1.5]), GAMMA, lam)
        assert advantages.item() == pytest.approx(1.515, abs=1e-6)
        assert returns.item() == pytest.approx(1.515 - 2.0, abs=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_gae_matches_brute_force_sum(lam):
    """A_t = sum_{l >= 0} (gamma lambda)^l delta_{t+l}, the sum cut after the step whose done is 1."""
    rewards, values, dones, last_value = random_rollout()
    delta = td_residuals(rewards, values, dones, last_value, GAMMA)
    T, N = rewards.shape
    expected = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for n in range(N):
            for step in range(t, T):
                expected[t, n] += (GAMMA * lam) ** (step - t) * delta[step, n]
                if dones[step, n]:
                    break
    advantages, returns = compute_gae(rewards, values, dones, last_value, GAMMA, lam)
    assert torch.allclose(advantages, expected)
    assert torch.allclose(returns, expected + values)


def test_gae_lambda_0_is_the_td_residual():
    rewards, values, dones, last_value = random_rollout(seed=1)
    advantages, _ = compute_gae(rewards, values, dones, last_value, GAMMA, 0.0)
    assert torch.allclose(advantages, td_residuals(rewards, values, dones, last_value, GAMMA))


def test_gae_lambda_1_is_the_monte_carlo_return_minus_v():
    """G_t = r_t + gamma r_{t+1} + ... to the episode's end, or + gamma^k V(s_T) if the rollout ends first."""
    rewards, values, dones, last_value = random_rollout(seed=2)
    T, N = rewards.shape
    monte_carlo = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for n in range(N):
            discount, step = 1.0, t
            while True:
                monte_carlo[t, n] += discount * rewards[step, n]
                discount *= GAMMA
                if dones[step, n]:
                    break
                if step == T - 1:
                    monte_carlo[t, n] += discount * last_value[n]
                    break
                step += 1
    advantages, returns = compute_gae(rewards, values, dones, last_value, GAMMA, 1.0)
    assert torch.allclose(advantages, monte_carlo - values)
    assert torch.allclose(returns, monte_carlo)


def test_time_limit_adds_the_value_of_the_true_final_observation():
    """CartPole cut after 5 steps: the stored reward is r + gamma V(true final observation), replayed on a plain
    env with the same seed and actions (SAME_STEP autoreset returns the next episode's first observation)."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1", max_episode_steps=5)] * 2,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    seed, actions = 3, [np.array([0, 1]), np.array([1, 0])] * 3
    envs.reset(seed=seed)
    critic = Critic(4)
    for t in range(5):
        next_obs, reward, terminated, truncated, infos = envs.step(actions[t])
        stored_reward, done = time_limit_rewards(critic, reward, terminated, truncated, infos, GAMMA)
        if t < 4:
            assert torch.equal(stored_reward, torch.ones(2)) and torch.equal(done, torch.zeros(2))
    assert truncated.all() and not terminated.any()
    true_final = []
    for i in range(2):  # sub-env i was reset with seed + i
        single = gym.make("CartPole-v1", max_episode_steps=5)
        single.reset(seed=seed + i)
        for t in range(5):
            obs = single.step(actions[t][i])[0]
        true_final.append(obs)
    true_final = torch.as_tensor(np.stack(true_final))
    assert not torch.allclose(true_final, torch.as_tensor(next_obs))
    with torch.no_grad():
        v_final = critic(true_final)
    assert (v_final.abs() > 1e-3).all()
    assert torch.allclose(stored_reward, 1.0 + GAMMA * v_final)
    assert torch.equal(done, torch.ones(2))


def test_termination_adds_nothing():
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    critic = Critic(4)
    for _ in range(100):
        _, reward, terminated, truncated, infos = envs.step(np.array([1]))  # pushing right drops the pole
        stored_reward, done = time_limit_rewards(critic, reward, terminated, truncated, infos, GAMMA)
        if terminated[0]:
            break
        assert done.item() == 0.0
    assert terminated[0] and stored_reward.item() == 1.0 and done.item() == 1.0


def test_hand_computed_gae_on_a_known_rollout():
    """One env, T = 3, gamma 0.9, lambda 0.5; the episode ends after step 1 (done[1] = 1).
    delta_2 = 3 + 0.9 * 10 - 4 = 8;  delta_1 = 2 + 0 - 3 = -1 (no bootstrap);  delta_0 = 1 + 0.9 * 3 - 2 = 1.7
    A_2 = 8;  A_1 = -1 (the sum stops at the episode's end);  A_0 = 1.7 + 0.45 * (-1) = 1.25;  G = A + V."""
    advantages, returns = compute_gae(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[2.0], [3.0], [4.0]]),
                                      torch.tensor([[0.0], [1.0], [0.0]]), torch.tensor([10.0]), 0.9, 0.5)
    assert torch.allclose(advantages.flatten(), torch.tensor([1.25, -1.0, 8.0]))
    assert torch.allclose(returns.flatten(), torch.tensor([3.25, 2.0, 12.0]))


class Chain(gym.Env):
    """k = steps since the reset; observation (k / 10, 1); the k-th step's reward is k. The episode terminates at
    k == term_at, which the seed of a seeded reset picks: seed % 3 -> 3, 4, never. Registered with a TimeLimit of
    4 steps, so sub-env i of a run seeded 0 ends its episodes by termination at 3 (i = 0), by termination and
    truncation at once at 4 (i = 1), by truncation alone at 4 (i = 2). Nothing depends on the actions."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode, self.term_at, self.k = render_mode, 99, 0

    def observation(self):
        return np.array([self.k / 10, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.term_at = (3, 4, 99)[seed % 3]
        self.k = 0
        return self.observation(), {}

    def step(self, action):
        self.k += 1
        return self.observation(), float(self.k), self.k == self.term_at, False, {}


@pytest.fixture
def chain():
    gym.register("Chain-v0", entry_point=Chain, max_episode_steps=4)
    yield "Chain-v0"
    del gym.registry["Chain-v0"]


def chain_by_hand(steps: int) -> list[list[tuple]]:
    """For each of the 3 sub-envs: per step (k before, reward, terminated, truncated, k of the final obs)."""
    trajectories = []
    for term_at in (3, 4, 99):
        k, rows = 0, []
        for _ in range(steps):
            rows.append((k, float(k + 1), k + 1 == term_at, k + 1 == 4, k + 1))
            k = 0 if rows[-1][2] or rows[-1][3] else k + 1
        trajectories.append(rows)
    return trajectories


def brute_force_advantages(rewards, values, dones, last_value, gamma, lam):
    T, N = rewards.shape
    delta = td_residuals(rewards.double(), values.double(), dones.double(), last_value.double(), gamma)
    advantages = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for n in range(N):
            for step in range(t, T):
                advantages[t, n] += (gamma * lam) ** (step - t) * delta[step, n]
                if dones[step, n]:
                    break
    return advantages.float()


def test_train_wiring_on_a_chain_with_known_ends(chain, monkeypatch):
    """train itself, 3 updates of 3 envs x 5 steps on Chain: what the rollout hands compute_gae (V(s_t), the
    time-limit bootstrap only where an episode was truncated and not terminated, dones, V of the state after the
    rollout), and the gradient it clips against the chapter's loss computed here by hand from the same rollout,
    with the clip norm and the annealed step size it uses."""
    actors, critics, optimizers, actions, gae_calls, clip_calls = [], [], [], [], [], []
    spy_class = lambda base, store: type(base.__name__, (base,), {
        "__init__": lambda self, *a, **k: (base.__init__(self, *a, **k), store.append(self))[0]})
    monkeypatch.setattr(a2c, "Actor", spy_class(Actor, actors))
    monkeypatch.setattr(a2c, "Critic", spy_class(Critic, critics))
    monkeypatch.setattr(a2c.torch.optim, "Adam", spy_class(torch.optim.Adam, optimizers))
    real_env_actions, real_clip = a2c.env_actions, a2c.nn.utils.clip_grad_norm_
    monkeypatch.setattr(a2c, "env_actions", lambda action, space: (actions.append(action.clone()),
                                                                   real_env_actions(action, space))[1])

    def spy_compute_gae(rewards, values, dones, last_value, gamma, lam):
        gae_calls.append([x.clone() for x in (rewards, values, dones, last_value)])
        return compute_gae(rewards, values, dones, last_value, gamma, lam)

    def spy_clip(params, max_norm):
        actor, critic = actors[0], critics[0]
        clip_calls.append(([p.grad.clone() for p in params], max_norm, optimizers[0].param_groups[0]["lr"],
                           {k: v.clone() for k, v in actor.state_dict().items()},
                           {k: v.clone() for k, v in critic.state_dict().items()}))
        return real_clip(params, max_norm)

    monkeypatch.setattr(a2c, "compute_gae", spy_compute_gae)
    monkeypatch.setattr(a2c.nn.utils, "clip_grad_norm_", spy_clip)
    args = Args(env_id=chain, seed=0, num_envs=3, num_steps=5, total_timesteps=45, eval_every=45, eval_episodes=1,
                gamma=0.9, gae_lambda=0.8, learning_rate=0.01, ent_coef=0.3, vf_coef=0.7, max_grad_norm=0.05,
                cuda=False, log_every=1)
    train(args)
    T, N, U = 5, 3, 3
    assert len(gae_calls) == len(clip_calls) == U and len(critics) == 1 and len(optimizers) == 1
    by_hand = chain_by_hand(T * U)
    features = lambda ks: torch.tensor([[k / 10, 1.0] for k in ks])
    for u, ((rewards, values, dones, last_value), (grads, max_norm, lr, actor_state, critic_state)) in enumerate(
            zip(gae_calls, clip_calls)):
        critic, actor = Critic(2), Actor(2, gym.spaces.Discrete(2))
        critic.load_state_dict(critic_state)
        actor.load_state_dict(actor_state)
        rows = [[by_hand[n][u * T + t] for n in range(N)] for t in range(T)]
        obs = torch.stack([features([row[n][0] for n in range(N)]) for row in rows])  # [T, N, 2]
        with torch.no_grad():
            want_values = critic(obs)
            want_rewards = torch.tensor([[r + (0.9 * critic(features([kf])).item() if trunc and not term else 0.0)
                                          for _, r, term, trunc, kf in row] for row in rows])
            after = [0 if rows[-1][n][2] or rows[-1][n][3] else rows[-1][n][4] for n in range(N)]
            want_last = critic(features(after))
        want_dones = torch.tensor([[float(term or trunc) for _, _, term, trunc, _ in row] for row in rows])
        assert torch.allclose(values, want_values, atol=1e-6), u
        assert torch.allclose(rewards, want_rewards, atol=1e-6), (u, rewards, want_rewards)
        assert torch.equal(dones, want_dones), u
        assert torch.allclose(last_value, want_last, atol=1e-6), u
        advantages = brute_force_advantages(want_rewards, want_values, want_dones, want_last, 0.9, 0.8)
        returns = advantages + want_values
        acts = torch.stack(actions[u * T:(u + 1) * T])  # [T, N]
        dist = actor(obs.flatten(0, 1))
        loss = (-(dist.log_prob(acts.flatten()) * advantages.flatten()).mean()
                + 0.7 * 0.5 * ((critic(obs.flatten(0, 1)) - returns.flatten()) ** 2).mean()
                - 0.3 * dist.entropy().mean())
        want_grads = torch.autograd.grad(loss, [*actor.parameters(), *critic.parameters()])
        for got, want in zip(grads, want_grads):
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-4), u
        assert max_norm == 0.05 and lr == pytest.approx(0.01 * (1 - u / U))
    # the chain's three kinds of episode end all occurred
    flat = [row for trajectory in by_hand for row in trajectory]
    assert any(t and not c for _, _, t, c, _ in flat) and any(t and c for _, _, t, c, _ in flat)
    assert any(c and not t for _, _, t, c, _ in flat)


def test_evaluation_acts_deterministically(chain, monkeypatch):
    """evaluate steps the env with the argmax action, whatever the sampling would give."""
    actor = Actor(2, gym.spaces.Discrete(2))
    with torch.no_grad():
        actor.net[4].weight.zero_()
        actor.net[4].bias.copy_(torch.tensor([0.0, 0.3]))  # p(1) ~ 0.57 everywhere: sampling would give 0s too
    stepped = []
    monkeypatch.setattr(a2c, "env_actions", lambda action, space: (stepped.append(int(action)), int(action))[1])
    evaluate(actor, chain, episodes=5, seed=0)
    assert set(stepped) == {1} and len(stepped) == 3 + 4 + 4 + 3 + 4  # seeds 0-4 pick the episode lengths


def test_merged_obs_stats_pool_the_envs():
    """Per-env running statistics merge into the mean and variance of all observations together."""
    rng = np.random.default_rng(0)
    data = [rng.normal(i, 1 + i, size=(50 * (i + 1), 3)) for i in range(3)]
    stats = []
    for x in data:
        rms = RunningMeanStd(epsilon=0.0, shape=(3,))
        rms.update(x[:7])
        rms.update(x[7:])
        stats.append(rms)

    class FakeEnvs:
        def get_attr(self, name):
            assert name == "obs_rms"
            return stats

    merged = ObsStats(FakeEnvs(), world=1).merged()
    everything = np.concatenate(data)
    assert np.allclose(merged["mean"].numpy(), everything.mean(0))
    assert np.allclose(merged["var"].numpy(), everything.var(0))
    assert merged["count"] == pytest.approx(len(everything))


class NormalisingActor(torch.nn.Module):
    """The actor behind a hand-written frozen normaliser: evaluate(obs_rms=...) must act exactly like it."""

    def __init__(self, actor, mean, var):
        super().__init__()
        self.actor, self.mean, self.var = actor, mean, var

    def forward(self, s):
        return self.actor((s - self.mean) / torch.sqrt(self.var + 1e-8))


def balancing_actor() -> Actor:
    """Push towards where the pole leans: argmax of logits (0, tanh(angle + angular velocity)), so that what the
    actor sees matters (a random net tends to push one way whatever it sees)."""
    actor = Actor(4, gym.spaces.Discrete(2))
    with torch.no_grad():
        for layer in (actor.net[0], actor.net[2], actor.net[4]):
            layer.weight.zero_()
            layer.bias.zero_()
        actor.net[0].weight[0, 2:] = 1.0
        actor.net[2].weight[0, 0] = 1.0
        actor.net[4].weight[1, 0] = 1.0
    return actor


def test_evaluate_applies_frozen_observation_statistics():
    actor = balancing_actor()
    stats = {"mean": torch.tensor([0.1, -0.2, 0.01, 0.3], dtype=torch.float64),
             "var": torch.tensor([0.01, 0.5, 0.002, 0.4], dtype=torch.float64), "count": 1000.0}
    with_stats = evaluate(actor, "CartPole-v1", episodes=5, seed=0, obs_rms=stats)
    by_hand = evaluate(NormalisingActor(actor, stats["mean"].float(), stats["var"].float()), "CartPole-v1", 5, 0)
    raw = evaluate(actor, "CartPole-v1", episodes=5, seed=0)
    assert np.array_equal(with_stats, by_hand)
    assert raw.mean() > 100 and not np.array_equal(with_stats, raw)


def tiny(**overrides) -> Args:
    """A run of a second or two on CartPole: 3 updates of 8 envs x 5 steps, one evaluation episode."""
    return Args(**{"total_timesteps": 120, "eval_every": 120, "eval_episodes": 1, "cuda": False, **overrides})


def test_checkpoint_holds_what_a_resume_needs_and_loads_with_weights_only(capsys):
    metrics = train(tiny(normalize_obs=True, total_timesteps=2000, eval_every=2000, eval_episodes=3))
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert metrics["checkpoint"] == f"{metrics['run_dir']}/checkpoint.pt" and not glob.glob("runs/*/*.tmp")
    assert {"script", "args", "global_step", "update", "actor", "critic", "optimizer", "recent_returns",
            "ranks"} <= set(checkpoint)
    assert checkpoint["script"] == "a2c" and checkpoint["global_step"] == 2000 and checkpoint["update"] == 50
    assert checkpoint["args"]["normalize_obs"] is True and set(checkpoint["ranks"][0]) == {"rng", "obs_rms"}
    stats = checkpoint["ranks"][0]["obs_rms"]  # each env's statistics
    assert len(stats) == 8 and merged_obs_stats(stats)["count"] > 2000  # every training observation (and reset)
    assert (merged_obs_stats(stats)["var"] < 0.9).any()  # not the initial variance of 1
    returns = a2c.evaluate_checkpoint(Args(evaluate=metrics["checkpoint"], eval_episodes=3), "CartPole-v1")
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"])
    assert re.fullmatch(r"finished 2,000 steps in 0:00:\d\d \([\d,]+ steps/s learning\); "
                        r"final evaluation return \d+\.\d", lines[0]), lines
    assert lines[1] == f"run folder: {metrics['run_dir']}   (tensorboard --logdir runs)"
    assert lines[2] == f"checkpoint: {metrics['checkpoint']}"
    assert re.fullmatch(r"runs/CartPole-v1__a2c__1__\d{8}-\d{6}", metrics["run_dir"])
    assert torch.are_deterministic_algorithms_enabled()  # --torch-deterministic's default


def test_continuous_actions_run():
    """Pendulum-v1 (Box actions, time limit only) and InvertedPendulum-v4 (MuJoCo) for a short budget."""
    for env_id in ("Pendulum-v1", "InvertedPendulum-v4"):
        metrics = train(tiny(env_id=env_id, total_timesteps=400, eval_every=400, normalize_obs=True))
        assert math.isfinite(metrics["eval/episodic_return"]) and metrics["global_step"] == 400


def test_same_seed_same_run_sync_or_async(tmp_path, monkeypatch):
    """Same seed, same episodic returns, whether the envs step in this process or in subprocesses."""
    returns = []
    for folder, seed, async_envs in (("a", 7, False), ("b", 7, False), ("c", 7, True), ("d", 8, False)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(tiny(seed=seed, total_timesteps=1024, num_envs=4, eval_every=1024, async_envs=async_envs,
                             normalize_obs=True))
        returns.append([v for _, v in read_scalars(metrics["run_dir"])["charts/episodic_return"]])
    assert returns[0] == returns[1] == returns[2]
    assert returns[0] != returns[3]


def test_evaluations_run_at_their_steps_and_the_final_one_records_the_video(monkeypatch):
    """--capture-video records the final evaluation itself (no extra evaluation), and charts/SPS and the
    printed time leave the evaluations out."""
    calls = []

    def slow_evaluate(actor, env_id, episodes, seed, video_folder=None, obs_rms=None):
        calls.append(video_folder)
        time.sleep(1.0)
        return np.zeros(episodes)

    monkeypatch.setattr(a2c, "evaluate", slow_evaluate)
    metrics = train(tiny(total_timesteps=400, eval_every=120, capture_video=True))
    assert calls == [None, None, None, f"{metrics['run_dir']}/videos"]  # at 120, 240, 360 (of 400), then final
    assert [s for s, _ in read_scalars(metrics["run_dir"])["eval/episodic_return"]] == [120, 240, 360, 400]
    assert metrics["charts/SPS"] > 400 / 1.0  # with the evaluations' 4 seconds counted it would be below 100


def test_budget_rounding_is_said_and_run_folders_are_unique(monkeypatch, capsys):
    monkeypatch.setattr(a2c.time, "strftime", lambda fmt: "20260101-000000")
    first, second = train(tiny(total_timesteps=100)), train(tiny(total_timesteps=100))
    assert first["global_step"] == second["global_step"] == 80
    assert "note: --total-timesteps 100 rounded to 80 (whole iterations of 40 steps)" in capsys.readouterr().out
    assert (first["run_dir"], second["run_dir"]) == ("runs/CartPole-v1__a2c__1__20260101-000000",
                                                     "runs/CartPole-v1__a2c__1__20260101-000000-2")


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--num-steps", "-1"], "--num-steps must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--learning-rate", "0"], "--learning-rate must be positive"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be positive"),
    (["--ent-coef", "-0.01"], "--ent-coef must be non-negative"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be non-negative"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
    (["--seed", str(2**32)], "--seed must be in [0, 2**32 - 1], got 4294967296"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--gae-lambda", "1.1"], "--gae-lambda must be in [0, 1]"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--total-timesteps", "30"], "--total-timesteps (30) must be at least --num-envs x --num-steps (40)"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(Args, args=argv)
    assert str(exit_info.value.code).startswith("error: ") and message in str(exit_info.value.code)
    assert "\n" not in str(exit_info.value.code)


class TupleActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


def needs_box2d(render_mode=None):
    raise gym.error.DependencyNotInstalled(
        'Box2D is not installed, you can install it by run `pip install swig` followed by '
        '`pip install "gymnasium[box2d]"`')


@pytest.mark.parametrize(("entry_point", "message"), [
    (TupleActions, "error: unsupported action space Tuple("),
    ("gymnasium.envs.toy_text:TaxiEnv", "error: a2c.py needs a flat Box observation space"),
    (needs_box2d, 'error: Checked-v0 needs an optional package: pip install "gymnasium[box2d]"'),
])
def test_env_checks_exit_with_one_line_and_leave_no_run_folder(entry_point, message):
    gym.register("Checked-v0", entry_point=entry_point)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train(tiny(env_id="Checked-v0"))
    finally:
        del gym.registry["Checked-v0"]
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)
    assert not os.path.exists("runs")


def field_docstrings() -> dict[str, str]:
    """Each Args field's docstring, read from the source: the string right after the field."""
    body = ast.parse(textwrap.dedent(inspect.getsource(Args))).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = after.value.value
    return docs


def test_help_documents_every_argument(monkeypatch, capsys):
    """Every field has a one-line docstring, shown whole in --help; optional paths say what none means."""
    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(Args, args=["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    docs = field_docstrings()
    assert set(docs) == set(Args.__dataclass_fields__)
    assert Args.__doc__.strip() in text  # the description line
    for field, doc in docs.items():
        assert "\n" not in doc and doc.strip(), field
        assert "--" + field.replace("_", "-") in text and " ".join(doc.split()) in text, field
    for field in ("resume", "evaluate"):
        assert docs[field].startswith("(none: "), field
    for words in ("CartPole", "RMSprop 7e-4", "clip 0.5", "entropy 0", "lambda 1"):  # how the defaults differ
        assert words in Args.__doc__, words
    for field, words in (("learning_rate", "RMSprop 7e-4: "), ("max_grad_norm", "0.5: "), ("ent_coef", "0: "),
                         ("gae_lambda", "1 ")):
        assert f"the common {words}" in docs[field], field  # and what each default bought


def test_cli_end_to_end_and_tensorboard_events():
    """The one subprocess test: a user's run, its TensorBoard tags, the final video, the last three lines."""
    result = run_script("a2c.py", "--total-timesteps", "2000", "--eval-every", "1000", "--eval-episodes", "2",
                        "--log-every", "4", "--no-cuda", "--async-envs", "--normalize-obs", "--capture-video",
                        "--checkpoint-every", "800")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "warning" not in result.stderr, result.stderr
    assert result.stdout.startswith("device: cpu")
    run_dir = only_run_dir()
    assert result.stdout.strip().splitlines()[-3:] == [f"run folder: {run_dir}   (tensorboard --logdir runs)",
                                                        f"checkpoint: {run_dir}/checkpoint.pt",
                                                        f"videos: {run_dir}/videos"]
    scalars = read_scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
                "losses/actor_loss", "losses/value_loss", "losses/entropy", "losses/grad_norm", "eval/episodic_return"):
        assert tag in scalars, tag
    batch = 8 * 5  # the default N x T
    assert [step for step, _ in scalars["eval/episodic_return"]] == [1000, 2000]
    assert [step for step, _ in scalars["losses/entropy"]] == list(range(4 * batch, 2001, 4 * batch))
    assert all(0 < v <= math.log(2) for _, v in scalars["losses/entropy"])
    lrs = [v for _, v in scalars["charts/learning_rate"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < lrs[0]  # annealed
    assert len(glob.glob(f"{run_dir}/videos/*.mp4")) == 2  # the final evaluation's 2 episodes, nothing more


# ---- long runs: checkpoints, resume, signals, NaN, the end of a run, --evaluate, bad paths (issue 12)


def run_main(monkeypatch, *argv: str) -> None:
    """`python a2c.py ARGV` in this process (the main guard included)."""
    monkeypatch.setattr(sys, "argv", ["a2c.py", *argv])
    runpy.run_path(a2c.__file__, run_name="__main__")


def weights(path: str) -> dict:
    checkpoint = torch.load(path, weights_only=True)
    return {f"{net}.{k}": v for net in ("actor", "critic") for k, v in checkpoint[net].items()}


@pytest.mark.parametrize("normalize_obs", [False, True])
def test_resume_at_an_update_boundary_is_exact(chain, monkeypatch, normalize_obs):
    """Chain's episodes (3 and 4 steps, 3 envs) all end together every 12 steps: a checkpoint at step 36 (update
    3 of 3 x 4 steps) then --resume must give the uninterrupted run's final weights bit for bit (torch RNG,
    optimizer, step-size schedule, counters restored). With --normalize-obs the resumed envs start from the saved
    statistics: one more observation each (the reset that restarts them), not a fresh count."""
    copies = []
    real_save = a2c.Run.save

    def keep_copy(run, *args, **kwargs):
        real_save(run, *args, **kwargs)
        if run.step == 36:
            os.makedirs("copy", exist_ok=True)
            shutil.copy(run.path, "copy/checkpoint.pt")
            copies.append(run.path)

    monkeypatch.setattr(a2c.Run, "save", keep_copy)
    whole = train(Args(env_id=chain, seed=0, num_envs=3, num_steps=4, total_timesteps=120, checkpoint_every=36,
                       eval_every=120, eval_episodes=1, log_every=1, cuda=False, normalize_obs=normalize_obs))
    assert copies
    resumed = train(Args(resume="copy/checkpoint.pt", cuda=False))
    assert resumed["checkpoint"] == "copy/checkpoint.pt" and resumed["global_step"] == 120
    assert torch.load(resumed["checkpoint"], weights_only=True)["update"] == 10
    first, second = weights(whole["checkpoint"]), weights(resumed["checkpoint"])
    if not normalize_obs:
        assert all(torch.equal(first[k], second[k]) for k in first)
    else:
        counts = lambda path: [s["count"] for s in torch.load(path, weights_only=True)["ranks"][0]["obs_rms"]]
        assert counts(resumed["checkpoint"]) == [c + 1 for c in counts(whole["checkpoint"])]


def wait_for(condition, seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import a2c
real_save = a2c.Run.save

def save_then_die(run, *args, **kwargs):  # the second checkpoint never reaches the disk
    if run.step < 1600:
        return real_save(run, *args, **kwargs)
    run.writer.flush()  # what TensorBoard's timer (flush_secs) would have written: the events past the checkpoint
    os.kill(os.getpid(), signal.SIGKILL)

a2c.Run.save = save_then_die
a2c.train(a2c.Args(total_timesteps=4000, checkpoint_every=800, log_every=1, eval_every=4000, cuda=False))
"""


def test_sigkill_after_a_checkpoint_then_resume_gives_one_continuous_curve():
    """A run killed (SIGKILL) at step 1,600, its checkpoint from step 800 and its events up to 1,600 on disk
    (flushed just before the kill, as TensorBoard's timer would; left to its thread, the last ones may not land);
    --resume finishes the budget, and every TensorBoard tag's steps increase
    strictly up to the last step (no duplicated or overlapping part)."""
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN.format(repo=os.path.dirname(a2c.__file__))],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    path = glob.glob("runs/*/checkpoint.pt")[0]
    assert torch.load(path, weights_only=True)["global_step"] == 800
    assert max(s for s, _ in read_scalars(os.path.dirname(path))["losses/entropy"]) == 1600
    time.sleep(1.1)  # TensorBoard orders event files by the second in their names: a real resume comes later
    metrics = train(Args(resume=path, cuda=False))
    assert metrics["global_step"] == 4000 and metrics["checkpoint"] == path
    scalars = read_scalars(os.path.dirname(path))
    for tag, points in scalars.items():  # several episodes may end at one step: non-decreasing for those
        steps = [s for s, _ in points]
        assert steps == sorted(steps if tag.startswith("charts/episodic") else set(steps)), tag
        assert steps[-1] > 4000 - 40 * 10, tag
    assert [s for s, _ in scalars["losses/entropy"]] == list(range(40, 4001, 40))


def test_sigint_checkpoints_and_exits_130_without_traceback(monkeypatch, capsys):
    proc = subprocess.Popen([sys.executable, a2c.__file__, "--total-timesteps", "400000", "--checkpoint-every",
                             "400", "--eval-every", "400000", "--no-cuda"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_for(lambda: glob.glob("runs/*/checkpoint.pt"))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    path = glob.glob("runs/*/checkpoint.pt")[0]
    assert proc.returncode == 130 and "Traceback" not in err, err
    step = torch.load(path, weights_only=True)["global_step"]
    assert out.strip().splitlines()[-1] == (f"interrupted at step {step:,}: checkpoint {path}; resume with: "
                                            f"python a2c.py --resume {path}")
    run_main(monkeypatch, "--evaluate", path, "--eval-episodes", "2")
    assert re.fullmatch(rf"evaluation of {re.escape(path)} on CartPole-v1: mean return \d+\.\d ± \d+\.\d over 2 "
                        r"episodes\n", capsys.readouterr().out)
    assert len(glob.glob("runs/*")) == 1  # --evaluate made no run folder


def test_sigterm_in_process_stops_cleanly_and_restores_the_handlers(monkeypatch, capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    real_save = a2c.Run.save
    monkeypatch.setattr(a2c.Run, "save", lambda *a, **k: (real_save(*a, **k), os.kill(os.getpid(), signal.SIGTERM)))
    with pytest.raises(SystemExit) as exit_info:
        train(tiny(total_timesteps=4000, checkpoint_every=400))
    assert exit_info.value.code == 143
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    path = glob.glob("runs/*/checkpoint.pt")[0]
    assert torch.load(path, weights_only=True)["global_step"] == 400  # stopped after the update that got it
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("interrupted at step 400: checkpoint ")


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(monkeypatch, capsys):
    """The step size becomes 1e30 after the first checkpoint: the run stops with one line naming a loss, exit 1,
    and the checkpoint on disk is byte for byte the last one written with finite values."""
    real_save, written = a2c.Run.save, []

    def poison_after_first(run, *args, **kwargs):
        real_save(run, *args, **kwargs)  # (exits where a parameter is not finite)
        written.append(open(run.path, "rb").read())
        run.args.learning_rate = 1e30

    monkeypatch.setattr(a2c.Run, "save", poison_after_first)
    with pytest.raises(SystemExit) as exit_info:
        train(tiny(total_timesteps=40_000, checkpoint_every=40, eval_every=40_000))
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    path = glob.glob("runs/*/checkpoint.pt")[0]
    assert re.fullmatch(rf"error: (losses/\w+ is (nan|inf|-inf)|a parameter is not finite) at step [\d,]+; "
                        rf"stopped\. The last good checkpoint: {re.escape(path)}", line), line
    assert written and open(path, "rb").read() == written[-1]


def test_learning_rate_1e30_from_the_start(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(tiny(total_timesteps=40_000, learning_rate=1e30, eval_every=40_000))
    assert exit_info.value.code == 1
    assert re.fullmatch(r"error: losses/\w+ is (nan|inf|-inf) at step [\d,]+; stopped. No checkpoint was written yet.",
                        capsys.readouterr().err.strip().splitlines()[-1])


def test_parameters_are_checked_before_each_checkpoint(monkeypatch, capsys):
    real_save = a2c.Run.save

    def nan_then_save(run, *args, **kwargs):
        with torch.no_grad():
            next(run.things["actor"].parameters())[0, 0] = float("nan")
        return real_save(run, *args, **kwargs)

    monkeypatch.setattr(a2c.Run, "save", nan_then_save)
    with pytest.raises(SystemExit) as exit_info:
        train(tiny(checkpoint_every=40))
    assert exit_info.value.code == 1 and not glob.glob("runs/*/checkpoint.pt*")
    assert "error: a parameter is not finite at step 40; stopped." in capsys.readouterr().err


def test_a_failing_video_keeps_the_checkpoint_and_ends_normally(monkeypatch, capsys):
    class BrokenVideo(gym.Wrapper):
        def __init__(self, env, *args, **kwargs):
            super().__init__(env)

        def step(self, action):
            raise RuntimeError("no display to render with")

    monkeypatch.setattr(gym.wrappers, "RecordVideo", BrokenVideo)
    metrics = train(tiny(capture_video=True))
    assert os.path.exists(metrics["checkpoint"]) and math.isfinite(metrics["eval/episodic_return"])
    assert "warning: video not recorded: no display to render with" in capsys.readouterr().err


def test_evaluate_uses_the_checkpoint_env_unless_env_id_is_given(monkeypatch, capsys):
    metrics = train(tiny(env_id="Acrobot-v1"))
    capsys.readouterr()
    run_main(monkeypatch, "--evaluate", metrics["checkpoint"], "--eval-episodes", "1")
    assert " on Acrobot-v1: mean return " in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # the override is used: CartPole's spaces do not fit the actor
        run_main(monkeypatch, "--evaluate", metrics["checkpoint"], "--env-id", "CartPole-v1")
    assert str(exit_info.value.code) == ("error: --evaluate: the checkpoint's networks do not fit CartPole-v1's "
                                         "observation and action spaces")


@pytest.mark.parametrize("flag", ["--resume", "--evaluate"])
def test_bad_checkpoint_paths_exit_with_one_line(monkeypatch, flag):
    os.makedirs("folder")
    with open("notes.txt", "w") as f:
        f.write("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, "plain.pt")
    torch.save({"script": "sac", "args": {}}, "sac.pt")
    cases = {"missing.pt": "no such file", "folder": "is a directory", "notes.txt": "not a duet checkpoint (",
             "plain.pt": "not a duet checkpoint (no 'script' entry)", "sac.pt": "a checkpoint of sac.py, not a2c.py"}
    for path, reason in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            run_main(monkeypatch, flag, path)
        message = str(exit_info.value.code)
        assert message.startswith(f"error: {flag} {path}: {reason}") and "\n" not in message, message
        assert "weights_only" not in message
    assert not os.path.exists("runs")
