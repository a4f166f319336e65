import glob
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import only_run_dir, read_scalars, run_script

import ac
from ac import Actor, Args, Critic, env_actions, evaluate, final_observations, td_target, train

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


def test_train_bootstraps_from_final_observations_at_time_limits(monkeypatch):
    """The same, inside train: on CartPole cut after 5 steps (too short for the pole to fall, so every episode end
    is a truncation), each target that train computes at an episode end is r + gamma V(true final observation)."""
    gym.register("CartPole5-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=5)
    seen = {"ends": 0}

    def spy_final_observations(next_obs, infos):
        seen["infos"] = infos
        return final_observations(next_obs, infos)

    def spy_td_target(critic, reward, s_next, terminated, gamma):
        target = td_target(critic, reward, s_next, terminated, gamma)
        infos = seen["infos"]
        if "final_obs" in infos:
            ended = infos["_final_obs"]
            final = torch.as_tensor(np.stack(infos["final_obs"][ended]), dtype=torch.float32)
            with torch.no_grad():
                expected = reward[ended] + gamma * critic(final)
            assert torch.allclose(target[torch.as_tensor(ended)], expected)
            seen["ends"] += int(ended.sum())
        return target

    monkeypatch.setattr(ac, "final_observations", spy_final_observations)
    monkeypatch.setattr(ac, "td_target", spy_td_target)
    try:
        train(Args(env_id="CartPole5-v1", total_timesteps=320, eval_every=320, eval_episodes=1, cuda=False))
    finally:
        del gym.registry["CartPole5-v1"]
    assert seen["ends"] == 320 // 5


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


def test_continuous_actions_run():
    """Pendulum-v1 (Box actions, never terminates) and InvertedPendulum-v4 (MuJoCo) for a short budget."""
    for env_id in ("Pendulum-v1", "InvertedPendulum-v4"):
        metrics = train(Args(env_id=env_id, total_timesteps=1600, num_envs=4, eval_every=800, eval_episodes=1,
                             cuda=False))
        assert math.isfinite(metrics["eval/episodic_return"]) and metrics["global_step"] == 1600
        assert "charts/episodic_return" in read_scalars(metrics["run_dir"])


def test_same_seed_same_run(tmp_path, monkeypatch):
    returns = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(Args(seed=seed, total_timesteps=4000, eval_every=4000, eval_episodes=1, cuda=False))
        returns.append([v for _, v in read_scalars(metrics["run_dir"])["charts/episodic_return"]])
    assert returns[0] == returns[1]
    assert returns[0] != returns[2]


def test_checkpoint_loads_back_with_weights_only():
    metrics = train(Args(total_timesteps=2000, eval_every=2000, eval_episodes=3, save_model=True, cuda=False))
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) == {"actor", "critic", "actor_optimizer", "critic_optimizer", "args"}
    assert checkpoint["args"]["total_timesteps"] == 2000
    critic = Critic(4)
    critic.load_state_dict(checkpoint["critic"])
    returns = evaluate(metrics["model_path"], "CartPole-v1", episodes=3, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"])


def test_evaluate_seeds_episode_k_with_seed_plus_k():
    actor = Actor(4, gym.spaces.Discrete(2))
    both = evaluate(actor, "CartPole-v1", episodes=2, seed=5)
    assert both[1] == evaluate(actor, "CartPole-v1", episodes=1, seed=6)[0]
    assert both[0] == evaluate(actor, "CartPole-v1", episodes=1, seed=5)[0]


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("ac.py", "--total-timesteps", "2000", "--eval-every", "1000", "--eval-episodes", "2",
                        "--log-every", "50", "--no-cuda", "--capture-video")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    run_dir = only_run_dir()
    scalars = read_scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/actor_loss",
                "losses/critic_loss", "losses/entropy", "eval/episodic_return"):
        assert tag in scalars, tag
    # 16 envs (the default): 125 updates of 16 steps; evaluation at the first update past 1000 steps, and at the end
    assert [step for step, _ in scalars["eval/episodic_return"]] == [1008, 2000]
    assert [step for step, _ in scalars["losses/actor_loss"]] == [800, 1600]
    lengths = [v for _, v in scalars["charts/episodic_length"]]
    assert all(8 <= v <= 500 for v in lengths) and len(lengths) > 20
    assert len(glob.glob(f"{run_dir}/videos/*.mp4")) == 2


def test_help_documents_every_argument():
    result = run_script("ac.py", "--help")
    assert result.returncode == 0
    for field in ac.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--actor-lr", "0"], "--actor-lr must be positive"),
    (["--critic-lr", "-1e-3"], "--critic-lr must be positive"),
    (["--eval-every", "0"], "--eval-every must be positive"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--gamma", "0"], "--gamma must be in (0, 1]"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--num-envs", "8", "--total-timesteps", "4"], "--total-timesteps (4) must be at least --num-envs (8)"),
    (["--env-id", "Blackjack-v1"], "needs a flat Box observation space"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("ac.py", *argv)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


class MultiDiscreteActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.MultiDiscrete([2, 3])

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 0.0, True, False, {}


def test_unsupported_action_space_is_one_message():
    """No registered gymnasium env has such actions: register one, and check train's exit message."""
    gym.register("MultiDiscreteActions-v0", entry_point=MultiDiscreteActions)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train(Args(env_id="MultiDiscreteActions-v0", total_timesteps=100, cuda=False))
    finally:
        del gym.registry["MultiDiscreteActions-v0"]
    assert str(exit_info.value.code).startswith("error: unsupported action space MultiDiscrete([2 3])")
