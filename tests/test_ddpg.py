import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import only_run_dir, read_scalars, read_tags, run_script

import ddpg
from ddpg import Actor, Args, Critic, OUNoise, ReplayBuffer, evaluate, train

HOPPER_OBS = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
HOPPER_ACT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


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


def test_actor_update_gives_the_actor_its_gradient_and_the_critic_none():
    torch.manual_seed(0)
    actor, critic = Actor(HOPPER_OBS, HOPPER_ACT), Critic(HOPPER_OBS, HOPPER_ACT)
    obs = torch.randn(256, 11)
    ddpg.update_actor(obs, actor, critic, torch.optim.SGD(actor.parameters(), lr=0.0))  # lr 0: the grads stay
    assert all(p.grad is None for p in critic.parameters())
    grads = [p.grad.clone() for p in actor.parameters()]
    actor.zero_grad()
    (-critic(obs, actor(obs)).mean()).backward()  # the plain way: every weight gets a gradient
    for g, p in zip(grads, actor.parameters()):
        torch.testing.assert_close(g, p.grad)
    assert all(p.grad is not None for p in critic.parameters())


class Counter(gym.Env):
    """obs = [steps taken]; reward 1; terminates after 3 steps when `terminate`, else runs until a time limit."""

    observation_space = gym.spaces.Box(0, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, terminate: bool):
        self.terminate = terminate

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.terminate and self.t == 3, False, {}


def test_target_bootstraps_at_a_time_limit_but_not_at_termination():
    """Through train's own path: SAME_STEP vector env -> final_observations -> ReplayBuffer -> td_target."""
    envs = gym.vector.SyncVectorEnv([lambda: Counter(terminate=True), lambda: gym.wrappers.TimeLimit(
        Counter(terminate=False), max_episode_steps=3)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    rb = ReplayBuffer(10, envs.single_observation_space, envs.single_action_space, torch.device("cpu"))
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        actions = np.zeros((2, 1), np.float32)
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, ddpg.final_observations(next_obs, infos), actions, rewards, terminations)
        obs = next_obs
    assert np.array_equal(obs, [[0.0], [0.0]])  # both envs were reset in the step that ended them...
    last = [4, 5]  # ...but the stored transitions end in the true last state, s' = [3]
    assert rb.next_obs[last].flatten().tolist() == [3.0, 3.0]
    assert rb.terminations[last].tolist() == [1.0, 0.0]  # terminated, truncated
    torch.manual_seed(0)
    actor, critic = Actor(envs.single_observation_space, envs.single_action_space), Critic(
        envs.single_observation_space, envs.single_action_space)
    with torch.no_grad():
        next_q = critic(rb.next_obs[last], actor(rb.next_obs[last]))
        y = ddpg.td_target(rb.rewards[last], rb.terminations[last], next_q, gamma=0.9)
        s_final = torch.tensor([[3.0]])
        plain = torch.nn.Sequential(critic.layers[0], torch.nn.ReLU(), critic.layers[1], torch.nn.ReLU(),
                                    critic.layers[2])
        q_final = plain(torch.cat([s_final, actor(s_final)], -1)).item()  # Q'(s', mu'(s')), computed plainly
    assert y[0].item() == 1.0  # terminated: r alone
    assert y[1].item() == pytest.approx(1.0 + 0.9 * q_final, rel=1e-5)  # time limit: r + gamma Q'(s', mu'(s'))


def test_replay_buffer_wraps_around_and_samples_whole_transitions():
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (2,)), gym.spaces.Box(-1, 1, (1,))
    rb = ReplayBuffer(5, obs_space, act_space, torch.device("cpu"))
    for step in range(3):  # 3 vector steps of 2 envs: transition ids 0..5 into 5 slots
        ids = np.array([2 * step, 2 * step + 1], np.float32)
        rb.add(np.stack([ids, ids], 1), np.stack([ids, ids], 1) + 100, ids[:, None] / 10, ids, ids % 2)
    assert rb.count == 5 and rb.pos == 1
    assert rb.rewards.tolist() == [5.0, 1.0, 2.0, 3.0, 4.0]  # id 5 overwrote the oldest, id 0
    obs, actions, rewards, next_obs, terminations = rb.sample(1000)
    assert obs.shape == (1000, 2) and next_obs.shape == (1000, 2) and actions.shape == (1000, 1)
    assert rewards.shape == (1000,) and terminations.shape == (1000,)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    torch.testing.assert_close(next_obs[:, 0], rewards + 100)  # rows stay whole transitions
    torch.testing.assert_close(actions[:, 0], rewards / 10)
    torch.testing.assert_close(terminations, rewards % 2)


def test_replay_buffer_of_a_million_hopper_transitions_is_under_150_mb():
    rb = ReplayBuffer(1_000_000, HOPPER_OBS, HOPPER_ACT, torch.device("cpu"))
    tensors = (rb.obs, rb.next_obs, rb.actions, rb.rewards, rb.terminations)
    assert sum(t.numel() * t.element_size() for t in tensors) < 150e6


@pytest.mark.parametrize("noise", ["gaussian", "ou"])
def test_cli_end_to_end_and_tensorboard_events(noise):
    result = run_script("ddpg.py", "--env-id", "Pendulum-v1", "--total-timesteps", "600", "--learning-starts", "200",
                        "--eval-every", "300", "--eval-episodes", "2", "--noise", noise, "--no-cuda")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    run_dir = only_run_dir()
    scalars = read_scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/qf_loss",
                "losses/actor_loss", "eval/episodic_return"):
        assert tag in scalars, tag
    assert [step for step, _ in scalars["eval/episodic_return"]] == [300, 600]
    assert [step for step, _ in scalars["charts/episodic_return"]] == [200, 400, 600]  # Pendulum: 200-step episodes
    assert [step for step, _ in scalars["losses/qf_loss"]] == [300, 400, 500, 600]  # every 100, learning from 201
    assert all(np.isfinite(v) for _, v in scalars["losses/qf_loss"])
    assert "hyperparameters/text_summary" in read_tags(run_dir)["tensors"]


def test_help_documents_every_argument():
    result = run_script("ddpg.py", "--help")
    assert result.returncode == 0
    for field in ddpg.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field
    assert "4 updates per vector step" in " ".join(result.stdout.split())
    assert "charts/SPS counts learning-phase env steps only" in result.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--policy-lr", "0"], "--policy-lr must be positive"),
    (["--ou-theta", "0"], "--ou-theta must be positive"),
    (["--ou-theta", "2"], "--ou-theta times --ou-dt must be below 1"),
    (["--exploration-noise", "-1"], "--exploration-noise must not be negative"),
    (["--gamma", "0"], "--gamma must be in (0, 1]"),
    (["--total-timesteps", "1000"], "--learning-starts (25000) must be below --total-timesteps (1000)"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--env-id", "CartPole-v1", "--total-timesteps", "30000"], "needs a bounded 1-D Box action space"),
    (["--cudagraphs"], "--cudagraphs needs a CUDA device"),  # --no-cuda is added below
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("ddpg.py", *argv, "--no-cuda")
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_noise_choice_is_rejected():
    result = run_script("ddpg.py", "--noise", "uniform")
    assert result.returncode != 0 and "Traceback" not in result.stderr


def short_run(**kwargs) -> dict:
    return train(Args(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200, eval_every=600,
                      eval_episodes=2, cuda=False, **kwargs))


def test_same_seed_same_run(tmp_path, monkeypatch):
    runs = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        scalars = read_scalars(short_run(seed=seed, noise="ou")["run_dir"])
        runs.append([[v for _, v in scalars[tag]] for tag in ("charts/episodic_return", "losses/qf_loss",
                                                               "eval/episodic_return")])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_checkpoint_loads_back_with_weights_only():
    metrics = short_run(save_model=True)
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) >= {"actor", "critic", "actor_target", "critic_target", "actor_optimizer",
                               "critic_optimizer", "args"}
    assert checkpoint["args"]["noise"] == "gaussian"
    returns = evaluate(metrics["model_path"], "Pendulum-v1", episodes=2, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-6)


def test_updates_per_step_counts_the_env_steps_of_all_envs():
    """Learning runs from env step 201 to 600: 200 vector steps of 2 envs, 2 updates each."""
    metrics = short_run(num_envs=2)
    assert metrics["global_step"] == 600 and metrics["num_updates"] == 400
