import glob
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from helpers import only_run_dir, read_scalars, run_script

import a2c
from a2c import Actor, Args, Critic, compute_gae, evaluate, merged_obs_stats, time_limit_rewards, train

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


def test_train_hands_compute_gae_the_time_limit_bootstrap(monkeypatch):
    """Inside train: on CartPole cut after 5 steps (too short for the pole to fall, so every episode end is a
    truncation), compute_gae gets done = 1 at each episode end and the reward r + gamma V(true final observation),
    computed here from each step's infos, and done = 0, the bare reward elsewhere."""
    gym.register("CartPole5-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=5)
    expected, calls = [], []

    def spy_time_limit_rewards(critic, reward, terminated, truncated, infos, gamma):
        ended = infos.get("_final_obs", np.zeros(len(reward), dtype=bool))
        want = torch.as_tensor(reward, dtype=torch.float32)
        if ended.any():
            with torch.no_grad():
                want[ended] += gamma * critic(torch.as_tensor(np.stack(infos["final_obs"][ended])))
        expected.append((want, torch.as_tensor(ended, dtype=torch.float32)))
        return time_limit_rewards(critic, reward, terminated, truncated, infos, gamma)

    def spy_compute_gae(rewards, values, dones, last_value, gamma, lam):
        calls.append((rewards.clone(), dones.clone()))
        return compute_gae(rewards, values, dones, last_value, gamma, lam)

    monkeypatch.setattr(a2c, "time_limit_rewards", spy_time_limit_rewards)
    monkeypatch.setattr(a2c, "compute_gae", spy_compute_gae)
    try:
        train(Args(env_id="CartPole5-v1", total_timesteps=280, num_steps=7, eval_every=280, eval_episodes=1,
                   cuda=False))
    finally:
        del gym.registry["CartPole5-v1"]
    assert len(calls) == 280 // 56 and len(expected) == 280 // 8
    for k, (rewards, dones) in enumerate(calls):
        want_rewards, want_dones = (torch.stack(x) for x in zip(*expected[7 * k:7 * (k + 1)]))
        assert torch.allclose(rewards, want_rewards) and torch.equal(dones, want_dones)
    assert sum(d.sum() for _, d in calls) == 280 // 5
    assert all((r[d == 1] != 1).all() for r, d in calls)


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

    merged = merged_obs_stats(FakeEnvs())
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


def test_checkpoint_with_normalised_observations_loads_back():
    metrics = train(Args(total_timesteps=2000, eval_every=2000, eval_episodes=3, normalize_obs=True,
                         save_model=True, cuda=False))
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) == {"actor", "critic", "optimizer", "args", "obs_rms"}
    assert checkpoint["args"]["normalize_obs"] is True
    assert checkpoint["obs_rms"]["count"] > 2000  # every training observation (and each reset) counted
    assert (checkpoint["obs_rms"]["var"] < 0.9).any()  # not the initial variance of 1
    returns = evaluate(metrics["model_path"], "CartPole-v1", episodes=3, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"])
    critic = Critic(4)
    critic.load_state_dict(checkpoint["critic"])


def test_checkpoint_without_normalisation():
    metrics = train(Args(total_timesteps=1000, eval_every=1000, eval_episodes=2, save_model=True, cuda=False))
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert checkpoint["obs_rms"] is None
    returns = evaluate(metrics["model_path"], "CartPole-v1", episodes=2, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"])


def test_continuous_actions_run():
    """Pendulum-v1 (Box actions, time limit only) and InvertedPendulum-v4 (MuJoCo) for a short budget."""
    for env_id in ("Pendulum-v1", "InvertedPendulum-v4"):
        metrics = train(Args(env_id=env_id, total_timesteps=1000, eval_every=1000, eval_episodes=1, cuda=False,
                             normalize_obs=True))
        assert math.isfinite(metrics["eval/episodic_return"]) and metrics["global_step"] == 1000


def test_same_seed_same_run_sync_or_async(tmp_path, monkeypatch):
    """Same seed, same episodic returns, whether the envs step in this process or in subprocesses."""
    returns = []
    for folder, seed, async_envs in (("a", 7, False), ("b", 7, False), ("c", 7, True), ("d", 8, False)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(Args(seed=seed, total_timesteps=4096, num_envs=4, eval_every=4096, eval_episodes=1,
                             async_envs=async_envs, normalize_obs=True, cuda=False))
        returns.append([v for _, v in read_scalars(metrics["run_dir"])["charts/episodic_return"]])
    assert returns[0] == returns[1] == returns[2]
    assert returns[0] != returns[3]


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("a2c.py", "--total-timesteps", "2000", "--eval-every", "1000", "--eval-episodes", "2",
                        "--log-every", "4", "--no-cuda", "--async-envs", "--normalize-obs", "--capture-video")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    run_dir = only_run_dir()
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
    assert len(glob.glob(f"{run_dir}/videos/*.mp4")) == 2


def test_help_documents_every_argument():
    result = run_script("a2c.py", "--help")
    assert result.returncode == 0
    for field in a2c.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--num-steps", "-1"], "--num-steps must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--learning-rate", "0"], "--learning-rate must be positive"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be positive"),
    (["--ent-coef", "-0.01"], "--ent-coef must be non-negative"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--gae-lambda", "1.1"], "--gae-lambda must be in [0, 1]"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--total-timesteps", "30"], "--total-timesteps (30) must be at least --num-envs x --num-steps (40)"),
    (["--env-id", "Taxi-v4"], "needs a flat Box observation space"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("a2c.py", *argv)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


class TupleActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


def test_unsupported_action_space_is_one_message():
    """No registered gymnasium env has such actions: register one, and check train's exit message."""
    gym.register("TupleActions-v0", entry_point=TupleActions)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train(Args(env_id="TupleActions-v0", total_timesteps=1024, cuda=False))
    finally:
        del gym.registry["TupleActions-v0"]
    assert str(exit_info.value.code).startswith("error: unsupported action space Tuple(")
