import glob
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import only_run_dir, read_scalars, read_tags, run_script
from torch.distributions import AffineTransform, Independent, Normal, TanhTransform, TransformedDistribution

import sac
from sac import (
    Actor,
    Args,
    Critic,
    ReplayBuffer,
    evaluate,
    final_observations,
    make_env,
    polyak_update,
    td_target,
    train,
    update_actor,
    update_critic,
    update_temperature,
)

BOUNDS = gym.spaces.Box(low=np.array([-2, 0, -1], np.float32), high=np.array([2, 1, 3], np.float32))


def box(n: int) -> gym.spaces.Box:
    return gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)

TINY = ["--env-id", "Pendulum-v1", "--total-timesteps", "600", "--learning-starts", "200", "--eval-every", "300",
        "--eval-episodes", "1", "--log-every", "50", "--no-cuda"]


def tiny_args(**kwargs) -> Args:
    defaults = dict(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200, eval_every=300, eval_episodes=1,
                    log_every=50, cuda=False)
    return Args(**(defaults | kwargs))


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


def linear_critics(critic: Critic) -> list[nn.Sequential]:
    """Two plain nn.Linear critics holding the stacked critic's weights."""
    nets = []
    for j in range(2):
        layers = []
        for w, b in zip(critic.weights, critic.biases):
            linear = nn.Linear(*w.shape[1:])
            linear.weight.data.copy_(w[j].T)
            linear.bias.data.copy_(b[j, 0])
            layers += [linear, nn.ReLU()]
        nets.append(nn.Sequential(*layers[:-1]))
    return nets


def test_stacked_critics_compute_what_two_linear_critics_compute():
    torch.manual_seed(0)
    critic = Critic(box(11), box(3))
    assert not torch.equal(critic.weights[0][0], critic.weights[0][1])  # independently initialised
    nets = linear_critics(critic)
    obs, actions = torch.randn(256, 11), torch.randn(256, 3, requires_grad=True)
    q = critic(obs, actions)
    assert q.shape == (2, 256)
    q_ref = torch.stack([net(torch.cat([obs, actions], -1)).squeeze(-1) for net in nets])
    assert torch.allclose(q, q_ref, atol=1e-6, rtol=1e-5)
    (grad_a,) = torch.autograd.grad(q.sum(), actions, retain_graph=True)
    (grad_a_ref,) = torch.autograd.grad(q_ref.sum(), actions, retain_graph=True)
    assert torch.allclose(grad_a, grad_a_ref, atol=1e-6)
    q.square().sum().backward()
    q_ref.square().sum().backward()
    for k in range(3):
        for j in range(2):
            assert torch.allclose(critic.weights[k].grad[j], nets[j][2 * k].weight.grad.T, atol=1e-4, rtol=1e-4)
            assert torch.allclose(critic.biases[k].grad[j, 0], nets[j][2 * k].bias.grad, atol=1e-4, rtol=1e-4)


def test_detached_critic_weights_pass_gradients_to_actions_only():
    torch.manual_seed(0)
    critic = Critic(box(11), box(3))
    obs, actions = torch.randn(32, 11), torch.randn(32, 3, requires_grad=True)
    q = critic(obs, actions, detach=True)
    assert torch.equal(q, critic(obs, actions))
    q.sum().backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


def test_actor_update_leaves_the_critics_alone_and_critic_update_the_actor():
    torch.manual_seed(0)
    actor, qf, qf_target = Actor(box(3), BOUNDS), Critic(box(3), BOUNDS), Critic(box(3), BOUNDS)
    actor_opt, q_opt = torch.optim.Adam(actor.parameters()), torch.optim.Adam(qf.parameters())
    batch = (torch.randn(16, 3), torch.rand(16, 3), torch.randn(16), torch.randn(16, 3), torch.zeros(16))
    critic_before, actor_before = [p.clone() for p in qf.parameters()], [p.clone() for p in actor.parameters()]
    update_actor(batch[0], actor, qf, actor_opt, torch.zeros(()))
    assert all(torch.equal(a, b) for a, b in zip(critic_before, qf.parameters()))
    assert all(p.grad is None for p in qf.parameters())  # no weight gradients were even computed
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, actor.parameters()))
    actor_before = [p.clone() for p in actor.parameters()]
    update_critic(batch, actor, qf, qf_target, q_opt, torch.zeros(()), tiny_args())
    assert all(torch.equal(a, b) for a, b in zip(actor_before, actor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic_before, qf.parameters()))


@pytest.mark.parametrize(("log_prob", "direction"), [(-10.0, -1), (5.0, 1)])
def test_temperature_falls_when_entropy_exceeds_the_target(log_prob, direction):
    """H_target = -3: entropy -log_prob above it (log_prob = -10) lowers alpha, below it (log_prob = 5) raises it."""
    log_alpha = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([log_alpha], lr=0.1)
    loss = update_temperature(torch.full((8,), log_prob), log_alpha, optimizer, target_entropy=-3.0)
    assert loss.item() == pytest.approx(-(log_prob - 3.0))  # alpha = 1
    assert math.copysign(1, log_alpha.item()) == direction


def test_polyak_update_matches_the_formula():
    torch.manual_seed(0)
    qf, qf_target = Critic(box(4), box(2)), Critic(box(4), box(2))
    expected = [0.005 * p + 0.995 * t for p, t in zip(qf.parameters(), qf_target.parameters())]
    polyak_update(qf, qf_target, 0.005)
    for e, t in zip(expected, qf_target.parameters()):
        assert torch.allclose(e, t, atol=1e-7)


def test_replay_buffer_wraps_around_and_samples_on_its_device():
    rb = ReplayBuffer(5, box(3), box(2), device=torch.device("cpu"))

    def vector_step(first: int):  # two envs; transition t has every field filled with t (obs, next_obs, actions, ...)
        t = np.array([first, first + 1], dtype=np.float64)
        return np.repeat(t[:, None], 3, 1), np.repeat(t[:, None], 3, 1) + 0.5, np.repeat(t[:, None], 2, 1), t, t % 2

    rb.add(*vector_step(0))
    assert rb.count == 2 and set(rb.sample(1000)[0][:, 0].tolist()) == {0.0, 1.0}  # only filled slots are drawn
    rb.add(*vector_step(2))
    rb.add(*vector_step(4))  # transition 5 overwrites slot 0, the oldest
    assert rb.count == 5 and rb.pos == 1
    assert rb.obs[:, 0].tolist() == [5, 1, 2, 3, 4] and rb.next_obs[:, 0].tolist() == [5.5, 1.5, 2.5, 3.5, 4.5]
    assert rb.terminations.tolist() == [1, 1, 0, 1, 0] and rb.rewards.tolist() == [5, 1, 2, 3, 4]
    obs, actions, rewards, next_obs, terminations = rb.sample(64)
    assert obs.shape == (64, 3) and next_obs.shape == (64, 3) and actions.shape == (64, 2)
    assert rewards.shape == (64,) and terminations.shape == (64,)
    assert all(x.dtype == torch.float32 and x.device.type == "cpu" for x in (obs, next_obs, actions, rewards))
    assert torch.equal(next_obs, obs + 0.5) and torch.equal(actions[:, 0], rewards)  # rows stay together
    assert set(obs[:, 0].tolist()) <= {1, 2, 3, 4, 5}


def test_a_million_hopper_transitions_fit_in_150_mb():
    rb = ReplayBuffer(1_000_000, box(11), box(3), device=torch.device("meta"))  # sizes, no allocation
    nbytes = sum(t.numel() * t.element_size() for t in (rb.obs, rb.next_obs, rb.actions, rb.rewards,
                                                         rb.terminations))
    assert nbytes < 150e6, nbytes


def stored_episode_end(env_id: str):
    """Run one env as train does (SAME_STEP autoreset) until an episode ends; return what the buffer stored."""
    envs = gym.vector.SyncVectorEnv([make_env(env_id)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.action_space.seed(0)
    rb = ReplayBuffer(2000, envs.single_observation_space, envs.single_action_space, torch.device("cpu"))
    obs, _ = envs.reset(seed=0)
    while True:
        actions = envs.action_space.sample()
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        rb.add(obs, final_observations(next_obs, infos), actions, rewards, terminations)
        if terminations[0] or truncations[0]:
            return rb, rb.count - 1, next_obs[0], infos["final_obs"][0], bool(terminations[0]), rewards[0]
        assert np.array_equal(rb.next_obs[rb.count - 1].numpy(), next_obs[0].astype(np.float32))
        obs = next_obs


def test_truncation_bootstraps_from_the_true_final_observation():
    rb, i, reset_obs, final_obs, terminated, reward = stored_episode_end("Pendulum-v1")  # 200-step time limit
    assert not terminated and i == 199
    assert np.allclose(rb.next_obs[i].numpy(), final_obs) and not np.allclose(rb.next_obs[i].numpy(), reset_obs)
    assert rb.terminations[i] == 0
    next_q = torch.tensor([[5.0], [3.0]])  # the smaller target critic wins
    y = td_target(rb.rewards[i:i + 1], rb.terminations[i:i + 1], next_q, torch.tensor([-1.0]), 0.2, 0.99)
    assert y.item() == pytest.approx(reward + 0.99 * (3.0 + 0.2))


def test_termination_stops_the_bootstrap():
    rb, i, reset_obs, final_obs, terminated, reward = stored_episode_end("Hopper-v4")  # falls over: terminated
    assert terminated
    assert np.allclose(rb.next_obs[i].numpy(), final_obs) and not np.allclose(rb.next_obs[i].numpy(), reset_obs)
    assert rb.terminations[i] == 1 and rb.terminations[:i].sum() == 0
    y = td_target(rb.rewards[i:i + 1], rb.terminations[i:i + 1], torch.tensor([[5.0], [3.0]]),
                      torch.tensor([-1.0]), 0.2, 0.99)
    assert y.item() == pytest.approx(reward)


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("sac.py", *TINY, "--capture-video")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    run_dir = only_run_dir()
    scalars = read_scalars(run_dir)
    for tag in ("charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/qf_loss",
                "losses/actor_loss", "losses/alpha", "losses/alpha_loss", "losses/entropy", "eval/episodic_return"):
        assert tag in scalars, tag
    assert [step for step, _ in scalars["eval/episodic_return"]] == [300, 600]
    assert [step for step, _ in scalars["charts/episodic_length"]] == [200, 400, 600]
    assert [step for step, _ in scalars["losses/qf_loss"]] == list(range(250, 601, 50))  # every 50 of 400 updates
    assert scalars["losses/alpha"][-1][1] < 1  # the temperature is being learned (it starts at 1)
    assert "hyperparameters/text_summary" in read_tags(run_dir)["tensors"]
    assert len(glob.glob(f"{run_dir}/videos/*.mp4")) == 1  # the final evaluation's episode


def test_compiled_updates_train():
    """--compile (torch.compile of the update functions) runs the same loop; ~40 CPU-seconds of compiling."""
    metrics = train(tiny_args(compile=True, total_timesteps=400, log_every=10))
    scalars = read_scalars(metrics["run_dir"])
    assert metrics["num_updates"] == 200 and metrics["alpha"] < 1
    assert all(math.isfinite(v) for tag in ("losses/qf_loss", "losses/actor_loss") for _, v in scalars[tag])


def test_updates_per_step_counts_all_envs_together():
    metrics = train(tiny_args(num_envs=4, updates_per_step=0.5, total_timesteps=400, log_every=1000))
    assert metrics["global_step"] == 400 and metrics["num_updates"] == 100  # 200 learning steps * 0.5
    metrics = train(tiny_args(num_envs=2, total_timesteps=300, learning_starts=201, log_every=1000))
    assert metrics["num_updates"] == 98  # learning starts at step 202, a whole vector step: (300 - 202) * 1


def test_fixed_temperature_stays_fixed():
    metrics = train(tiny_args(autotune=False, alpha=0.1, total_timesteps=400, learning_starts=300))
    assert metrics["alpha"] == pytest.approx(0.1)
    assert "losses/alpha_loss" not in read_scalars(metrics["run_dir"])


def test_same_seed_same_run(tmp_path, monkeypatch):
    runs = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(tiny_args(seed=seed, total_timesteps=500, log_every=10))
        scalars = read_scalars(metrics["run_dir"])
        runs.append([v for _, v in scalars["charts/episodic_return"] + scalars["losses/qf_loss"]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_evaluation_leaves_the_training_run_alone():
    """Evaluating draws no random numbers (it acts with the squashed mean), so how often it runs changes nothing."""
    losses = []
    for eval_every in (100, 600):
        scalars = read_scalars(train(tiny_args(eval_every=eval_every, total_timesteps=400, log_every=10))["run_dir"])
        losses.append([v for _, v in scalars["losses/qf_loss"]])
    assert len(losses[0]) == 20 and losses[0] == losses[1]


def test_checkpoint_loads_back_with_weights_only():
    metrics = train(tiny_args(save_model=True, eval_episodes=2))
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) >= {"actor", "critic", "critic_target", "actor_optimizer", "critic_optimizer",
                               "alpha_optimizer", "log_alpha", "args"}
    assert checkpoint["args"]["total_timesteps"] == 600
    assert checkpoint["log_alpha"].exp().item() == pytest.approx(metrics["alpha"])
    critic = Critic(box(3), box(1))
    critic.load_state_dict(checkpoint["critic"])
    returns = evaluate(metrics["model_path"], "Pendulum-v1", episodes=2, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-6)


def test_help_documents_every_argument():
    result = run_script("sac.py", "--help")
    assert result.returncode == 0
    for field in sac.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field
    assert "all envs together" in result.stdout and "learning phase" in result.stdout


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--batch-size", "-1"], "--batch-size must be positive"),
    (["--q-lr", "0"], "--q-lr must be positive"),
    (["--updates-per-step", "0"], "--updates-per-step must be positive"),
    (["--learning-starts", "-1"], "--learning-starts must not be negative"),
    (["--total-timesteps", "100", "--learning-starts", "100"], "must be below --total-timesteps"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
    (["--tau", "0"], "--tau must be in (0, 1]"),
    (["--env-id", "NoSuchEnv-v0"], "unknown --env-id"),
    (["--env-id", "CartPole-v1"], "needs a bounded 1-D Box action space"),
    (["--cudagraphs", "--no-cuda"], "--cudagraphs needs a CUDA device"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("sac.py", *argv)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
