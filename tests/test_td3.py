import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import only_run_dir, read_scalars, read_tags, run_script

import td3
from td3 import Actor, Args, Critic, ReplayBuffer, evaluate, train

HOPPER_OBS = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
HOPPER_ACT = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def separate_critics(critic: Critic) -> list[nn.Sequential]:
    """Two plain nn.Linear critics holding the stacked critic's weights."""
    nets = []
    for i in range(critic.weights[0].shape[0]):
        layers = []
        for k, (weight, bias) in enumerate(zip(critic.weights, critic.biases)):
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[i].T)
                linear.bias.copy_(bias[i, 0])
            layers += [linear, nn.ReLU()] if k < len(critic.weights) - 1 else [linear]
        nets.append(nn.Sequential(*layers))
    return nets


def test_stacked_critics_compute_what_two_separate_critics_compute():
    torch.manual_seed(0)
    critic = Critic(HOPPER_OBS, HOPPER_ACT)
    nets = separate_critics(critic)
    obs, action = torch.randn(256, 11), torch.rand(256, 3) * 2 - 1
    q = critic(obs, action)
    assert q.shape == (2, 256)
    expected = torch.stack([net(torch.cat([obs, action], -1)).squeeze(-1) for net in nets])
    torch.testing.assert_close(q, expected)
    assert not torch.allclose(q[0], q[1])  # two independently initialised critics
    # the same weight gradients as the separate critics, for a loss on both
    target = torch.randn(256)
    ((q - target) ** 2).mean(1).sum().backward()
    sum(((e - target) ** 2).mean() for e in [net(torch.cat([obs, action], -1)).squeeze(-1) for net in nets]).backward()
    for k in range(3):
        for i, net in enumerate(nets):
            torch.testing.assert_close(critic.weights[k].grad[i], net[2 * k].weight.grad.T)
            torch.testing.assert_close(critic.biases[k].grad[i, 0], net[2 * k].bias.grad)
    # Q_1 alone, and with detached weights: the same values, a gradient for the action, none for the weights
    critic.zero_grad(set_to_none=True)
    action.requires_grad_(True)
    q1 = critic(obs, action, first_only=True, detach=True)
    torch.testing.assert_close(q1, expected[:1])
    q1.sum().backward()
    assert all(p.grad is None for p in critic.parameters())
    action_grad = torch.autograd.grad(nets[0](torch.cat([obs, action], -1)).sum(), action)[0]
    torch.testing.assert_close(action.grad, action_grad)


def test_stacked_critic_initialisation_is_nn_linear():
    """Each critic's layers are initialised as nn.Linear's: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    torch.manual_seed(0)
    critic = Critic(HOPPER_OBS, HOPPER_ACT)
    for weight, bias in zip(critic.weights, critic.biases):
        bound = 1 / weight.shape[1] ** 0.5
        for tensor in (weight, bias):
            assert tensor.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)  # the std of U(-b, b)


def test_polyak_update_matches_formula():
    torch.manual_seed(0)
    for net in (Critic(HOPPER_OBS, HOPPER_ACT), Actor(HOPPER_OBS, HOPPER_ACT)):
        target = copy.deepcopy(net).requires_grad_(False)
        for p in target.parameters():
            p.data.normal_()
        before = [p.clone() for p in target.parameters()]
        td3.polyak_update(net, target, 0.005)
        for p, t, t0 in zip(net.parameters(), target.parameters(), before):
            torch.testing.assert_close(t, 0.005 * p + 0.995 * t0)
        assert not any(p.requires_grad for p in target.parameters())


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
        rb.add(obs, td3.final_observations(next_obs, infos), actions, rewards, terminations)
        obs = next_obs
    assert np.array_equal(obs, [[0.0], [0.0]])  # both envs were reset in the step that ended them...
    last = [4, 5]  # ...but the stored transitions end in the true last state, s' = [3]
    assert rb.next_obs[last].flatten().tolist() == [3.0, 3.0]
    assert rb.terminations[last].tolist() == [1.0, 0.0]  # terminated, truncated
    torch.manual_seed(0)
    actor, critic = Actor(envs.single_observation_space, envs.single_action_space), Critic(
        envs.single_observation_space, envs.single_action_space)
    next_actions = td3.smoothed_target_action(actor, rb.next_obs[last], policy_noise=0.0, noise_clip=0.5)
    y = td3.td_target(rb.rewards[last], rb.terminations[last], critic(rb.next_obs[last], next_actions), gamma=0.9)
    s_final = torch.tensor([[3.0]])
    with torch.no_grad():  # policy_noise 0: the target action is mu'(s'); min over two plain critics
        q_final = min(net(torch.cat([s_final, actor(s_final)], -1)).item() for net in separate_critics(critic))
    assert y[0].item() == 1.0  # terminated: r alone
    assert y[1].item() == pytest.approx(1.0 + 0.9 * q_final, rel=1e-5)  # time limit: r + gamma min_i Q'_i(s', a')


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
    # clip(eps, -c, c) * scale: with a large sigma' all but 0.4% of the draws sit at +-c * scale
    with torch.no_grad():
        action = td3.smoothed_target_action(actor, obs, policy_noise=100.0, noise_clip=0.5)
    assert action[:, 0].min() == -0.5 * scale[0] and action[:, 0].max() == 0.5 * scale[0]
    assert (action[:, 0].abs() == 0.5 * scale[0]).float().mean() > 0.99
    assert action[:, 1].max() == 10.0  # mu + c * scale = 8.81 + 2.5 is clipped to the upper bound...
    assert torch.allclose(action[:, 1].min(), mu[1] - 0.5 * scale[1])  # ...mu - c * scale is inside


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
    assert obs.dtype == torch.float32
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    torch.testing.assert_close(next_obs[:, 0], rewards + 100)  # rows stay whole transitions
    torch.testing.assert_close(actions[:, 0], rewards / 10)
    torch.testing.assert_close(terminations, rewards % 2)


def test_replay_buffer_of_a_million_hopper_transitions_is_under_150_mb():
    rb = ReplayBuffer(1_000_000, HOPPER_OBS, HOPPER_ACT, torch.device("cpu"))
    tensors = (rb.obs, rb.next_obs, rb.actions, rb.rewards, rb.terminations)
    assert sum(t.numel() * t.element_size() for t in tensors) < 150e6


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("td3.py", "--env-id", "Pendulum-v1", "--total-timesteps", "600", "--learning-starts", "200",
                        "--eval-every", "300", "--eval-episodes", "2", "--no-cuda")
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
    result = run_script("td3.py", "--help")
    assert result.returncode == 0
    for field in td3.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field
    assert "4 updates per vector step" in " ".join(result.stdout.split())
    assert "charts/SPS counts learning-phase env steps only" in result.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--total-timesteps", "-5"], "--total-timesteps must be positive"),
    (["--q-lr", "0"], "--q-lr must be positive"),
    (["--updates-per-step", "0"], "--updates-per-step must be positive"),
    (["--log-every", "0"], "--log-every must be positive"),
    (["--policy-noise", "-0.1"], "--policy-noise must not be negative"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--tau", "2"], "--tau must be in (0, 1]"),
    (["--total-timesteps", "1000"], "--learning-starts (25000) must be below --total-timesteps (1000)"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--env-id", "CartPole-v1", "--total-timesteps", "30000"], "needs a bounded 1-D Box action space"),
    (["--cudagraphs"], "--cudagraphs needs a CUDA device"),  # --no-cuda is added below
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("td3.py", *argv, "--no-cuda")
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def short_run(**kwargs) -> dict:
    return train(Args(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200, eval_every=600,
                      eval_episodes=2, cuda=False, **kwargs))


def test_same_seed_same_run(tmp_path, monkeypatch):
    runs = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        scalars = read_scalars(short_run(seed=seed)["run_dir"])
        runs.append([[v for _, v in scalars[tag]] for tag in ("charts/episodic_return", "losses/qf_loss",
                                                               "eval/episodic_return")])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_checkpoint_loads_back_with_weights_only():
    metrics = short_run(save_model=True)
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) >= {"actor", "critic", "actor_target", "critic_target", "actor_optimizer",
                               "critic_optimizer", "args"}
    assert checkpoint["args"]["total_timesteps"] == 600
    returns = evaluate(metrics["model_path"], "Pendulum-v1", episodes=2, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-6)


@pytest.mark.parametrize(("num_envs", "updates_per_step", "updates"), [(1, 1.0, 400), (2, 1.0, 400), (2, 0.5, 200)])
def test_updates_per_step_counts_the_env_steps_of_all_envs(num_envs, updates_per_step, updates):
    """Learning runs from env step 201 to 600: 400 env steps, as 400 vector steps of 1 env or 200 of 2 envs."""
    metrics = short_run(num_envs=num_envs, updates_per_step=updates_per_step)
    assert metrics["global_step"] == 600
    assert metrics["num_updates"] == updates


@pytest.mark.slow
def test_compiled_updates_equal_eager_updates(monkeypatch):
    """--compile changes the speed, not the numbers (a minute of compiling: kept out of CI)."""
    monkeypatch.setattr(torch._functorch.config, "activation_memory_budget", 0.99)  # as train() sets it
    torch.manual_seed(0)
    actor, critic = Actor(HOPPER_OBS, HOPPER_ACT), Critic(HOPPER_OBS, HOPPER_ACT)
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
