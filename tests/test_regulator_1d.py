import inspect
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import tyro
from helpers import REPO, only_run_dir, read_scalars, read_tags, run_script

import regulator_1d
from regulator_1d import Actor, Args, Critic, Regulator, evaluate, td_losses, train


def test_dynamics_and_reward():
    env = Regulator(3, episode_length=2, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    s = env.reset().clone()
    reward, next_s, truncated, obs = env.step(torch.tensor([1.0, -1.0, 0.5]))
    assert torch.allclose(reward, -(s**2)) and torch.allclose(next_s, s + torch.tensor([1.0, -1.0, 0.5]))
    assert not truncated and torch.equal(obs, next_s)
    reward, next_s, truncated, obs = env.step(-next_s)  # the optimal action: s' = 0
    assert truncated and torch.equal(next_s, torch.zeros(3))  # the true next state survives the reset...
    assert not torch.equal(obs, next_s)  # ...and the observation is a fresh start state


def test_value_of_gaussian_policy_matches_closed_form():
    """V^pi(s) = -k s^2 - c from the docstring, against the Monte Carlo discounted return."""
    theta1, log_var, gamma = -0.6, math.log(0.2), 0.9
    g = (1 + theta1) ** 2
    k = 1 / (1 - gamma * g)
    c = gamma * k * math.exp(log_var) / (1 - gamma)
    generator = torch.Generator().manual_seed(0)
    s0 = torch.tensor([0.0, 1.0, -2.0]).repeat_interleave(20_000)
    s, ret = s0.clone(), torch.zeros_like(s0)
    for t in range(150):  # gamma^150 < 1e-6
        a = theta1 * s + math.exp(0.5 * log_var) * torch.randn(s.shape, generator=generator)
        ret += gamma**t * -(s**2)
        s = s + a
    monte_carlo = ret.view(3, -1).mean(1)
    closed_form = -k * torch.tensor([0.0, 1.0, 4.0]) - c
    assert torch.allclose(monte_carlo, closed_form, rtol=0.02), (monte_carlo, closed_form)


def networks(theta1: float, theta2: float, phi1: float, phi2: float) -> tuple[Actor, Critic]:
    actor, critic = Actor(theta2), Critic()
    with torch.no_grad():
        actor.theta1.fill_(theta1)
        critic.phi1.fill_(phi1)
        critic.phi2.fill_(phi2)
    return actor, critic


def test_losses_by_hand():
    """[td], [actor], [critic-loss] on a batch with s != s', against the Gaussian density written out."""
    actor, critic = networks(theta1=-0.5, theta2=math.log(0.25), phi1=0.3, phi2=-0.7)
    s, a = torch.tensor([1.0, -2.0]), torch.tensor([0.2, 1.5])
    reward, next_s, gamma = torch.tensor([-1.0, -4.0]), torch.tensor([1.2, -0.5]), 0.9
    actor_loss, critic_loss = td_losses(actor, critic, s, a, reward, next_s, gamma)
    delta = [r + gamma * (0.3 * s1 - 0.7 * s1**2) - (0.3 * s0 - 0.7 * s0**2)
             for s0, r, s1 in zip(s.tolist(), reward.tolist(), next_s.tolist())]
    log_prob = [-0.5 * math.log(2 * math.pi * 0.25) - (ai + 0.5 * si) ** 2 / (2 * 0.25)
                for si, ai in zip(s.tolist(), a.tolist())]  # variance exp(theta2) = 0.25: std 0.5
    assert actor_loss.item() == pytest.approx(-(log_prob[0] * delta[0] + log_prob[1] * delta[1]) / 2, rel=1e-5)
    assert critic_loss.item() == pytest.approx((delta[0] ** 2 + delta[1] ** 2) / 4, rel=1e-5)
    actor_loss.backward()  # delta is detached for the actor: no gradient reaches the critic through it
    assert critic.phi1.grad is None and critic.phi2.grad is None
    critic_loss.backward()  # the target is fixed: d/dphi of 1/2 delta^2 is -delta * (s, s^2), averaged
    assert critic.phi1.grad.item() == pytest.approx(-(delta[0] * 1.0 + delta[1] * -2.0) / 2, rel=1e-5)
    assert critic.phi2.grad.item() == pytest.approx(-(delta[0] * 1.0 + delta[1] * 4.0) / 2, rel=1e-5)


def test_evaluate_rolls_out_the_mean_action_by_hand():
    actor, _ = networks(theta1=-0.5, theta2=0.0, phi1=0.0, phi2=0.0)  # std 1: a sampled action would differ
    s = torch.randn(5, generator=torch.Generator().manual_seed(3))
    expected = sum(-((0.5**t) * s) ** 2 for t in range(4))  # s_{t+1} = (1 + theta1) s_t
    assert np.allclose(evaluate(actor, episodes=5, episode_length=4, seed=3), expected.numpy(), rtol=1e-5)


def test_train_wiring(monkeypatch):
    """train itself, 4 regulators cut after 3 steps, 7 updates: what it hands td_losses at each step (the true s'
    = s + a also at a time limit, never the restart), the SGD step each update takes with each step size, the
    logged episodic returns and the evaluation steps."""
    calls = []

    def spy(actor, critic, s, a, reward, next_s, gamma):
        params = [p.detach().clone() for p in (*actor.parameters(), *critic.parameters())]
        losses = td_losses(actor, critic, s, a, reward, next_s, gamma)
        grads = torch.autograd.grad(losses[0], list(actor.parameters()), retain_graph=True)
        grads += torch.autograd.grad(losses[1], list(critic.parameters()), retain_graph=True)
        calls.append({"s": s.clone(), "a": a.clone(), "r": reward.clone(), "next_s": next_s.clone(),
                      "gamma": gamma, "params": params, "grads": [g.clone() for g in grads]})
        return losses

    evaluations = []
    monkeypatch.setattr(regulator_1d, "td_losses", spy)
    monkeypatch.setattr(regulator_1d, "evaluate", lambda *args: evaluations.append(args) or np.zeros(1))
    args = Args(num_envs=4, episode_length=3, total_timesteps=28, eval_every=12, actor_lr=0.02, critic_lr=0.1,
                gamma=0.8, cuda=False, log_every=1)
    metrics = train(args)
    assert len(calls) == 7 and metrics["global_step"] == 28
    for t, call in enumerate(calls):
        assert call["gamma"] == 0.8
        assert torch.allclose(call["r"], -call["s"] ** 2)  # the reward of s
        assert torch.allclose(call["next_s"], call["s"] + call["a"])  # the true s', at a time limit too
        if t + 1 < len(calls):
            restarted = (t + 1) % 3 == 0
            assert torch.equal(calls[t + 1]["s"], call["next_s"]) != restarted  # a time limit restarts from s_0
            lrs = [0.02, 0.02, 0.1, 0.1]
            for before, grad, after, lr in zip(call["params"], call["grads"], calls[t + 1]["params"], lrs):
                assert torch.allclose(after, before - lr * grad), t  # one SGD step of each loss, each step size
    rewards = torch.stack([call["r"] for call in calls])
    returns = read_scalars(metrics["run_dir"])["charts/episodic_return"]
    assert [step for step, _ in returns] == [12, 24]
    for (_, logged), episode in zip(returns, (rewards[0:3], rewards[3:6])):
        assert logged == pytest.approx(episode.sum(0).mean().item(), rel=1e-5)
    assert [e[1:] for e in evaluations] == [(100, 3, 10_001)] * 3  # at steps 12, 24 and at the end (28)
    assert [step for step, _ in read_scalars(metrics["run_dir"])["eval/episodic_return"]] == [12, 24, 28]


def td_fixed_point_phi2(theta1: float, theta2: float, gamma: float, episode_length: int) -> float:
    """The module docstring's phi2 = -E[s^4] / (E[s^4] - gamma E[s^2 s'^2]), over the states of whole episodes."""
    generator = torch.Generator().manual_seed(0)
    s, s4, s2_next2 = torch.randn(200_000, generator=generator), 0.0, 0.0
    for _ in range(episode_length):
        s_next = (1 + theta1) * s + math.exp(theta2 / 2) * torch.randn(s.shape, generator=generator)
        s4, s2_next2, s = s4 + (s**4).mean(), s2_next2 + (s**2 * s_next**2).mean(), s_next
    return (-s4 / (s4 - gamma * s2_next2)).item()


def test_converges_to_the_optimal_regulator():
    metrics = train(Args(cuda=False))
    assert abs(metrics["theta1"] + 1) < 0.05, metrics  # mu*(s) = -s
    # V*(s) = -s^2, with part of V^pi's constant c folded into phi2 (the module docstring): a little below -1
    assert -1.02 < metrics["phi2"] < -1.0 and abs(metrics["phi1"]) < 0.01, metrics
    fixed_point = td_fixed_point_phi2(metrics["theta1"], metrics["theta2"], 0.9, 10)
    assert fixed_point < -1 and abs(metrics["phi2"] - fixed_point) < 0.002, (fixed_point, metrics)
    assert not metrics["diverged"]
    assert metrics["eval/episodic_return"] > -1.5  # near the best possible return, E[-s_0^2] = -1


def test_untrained_policy_is_far_from_optimal():
    """The evaluation can tell: theta1 = 0 (do nothing) pays -s_0^2 every step."""
    returns = evaluate(Actor(-1.0), episodes=1000, episode_length=10, seed=0)
    assert -12 < returns.mean() < -8


def test_large_actor_step_size_diverges(capsys):
    """The chapter's "try large alpha_actor": theta1 overshoots -1 and the closed loop blows up."""
    metrics = train(Args(actor_lr=3.0, cuda=False))
    assert metrics["diverged"] and metrics["checkpoint"] is None
    assert not os.path.exists(f"{metrics['run_dir']}/checkpoint.pt")
    assert "diverged at step" in capsys.readouterr().out


def test_same_seed_same_run(tmp_path, monkeypatch):
    returns = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        metrics = train(Args(seed=seed, total_timesteps=3200, cuda=False))
        returns.append([v for _, v in read_scalars(metrics["run_dir"])["charts/episodic_return"]])
    assert returns[0] == returns[1]
    assert returns[0] != returns[2]


def test_checkpoint_loads_back_with_weights_only():
    metrics = train(Args(total_timesteps=3200, cuda=False))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert set(checkpoint) >= {"script", "args", "global_step", "actor", "critic", "actor_optimizer",
                               "critic_optimizer"}
    assert checkpoint["script"] == "regulator_1d" and checkpoint["args"]["total_timesteps"] == 3200
    critic = Critic()
    critic.load_state_dict(checkpoint["critic"])
    assert critic.phi2.item() == pytest.approx(metrics["phi2"])
    returns = evaluate(metrics["checkpoint"], episodes=100, episode_length=10, seed=1 + 10_000)
    assert np.mean(returns) == pytest.approx(metrics["eval/episodic_return"], rel=1e-5)


def test_run_folders_are_unique(monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261202-183000")
    folders = [train(Args(total_timesteps=64, cuda=False))["run_dir"] for _ in range(3)]
    base = "runs/Regulator1D__regulator_1d__1__20261202-183000"
    assert folders == [base, base + "-2", base + "-3"]


def test_sigterm_in_process_stops_after_the_step(monkeypatch, capsys):
    """The first SIGTERM lets the step finish, writes the checkpoint and exits 143; the handlers are put back."""
    def signal_during_evaluation(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return np.zeros(1)

    monkeypatch.setattr(regulator_1d, "evaluate", signal_during_evaluation)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        train(Args(total_timesteps=640, eval_every=320, cuda=False))
    assert exit_info.value.code == 143 and signal.getsignal(signal.SIGTERM) is previous
    out = capsys.readouterr().out
    assert re.search(r"^interrupted at step 320: checkpoint runs/\S+/checkpoint.pt$", out, re.M), out
    assert torch.load(only_run_dir() + "/checkpoint.pt", weights_only=True)["global_step"] == 320


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("regulator_1d.py", "--total-timesteps", "3210", "--eval-every", "1600", "--no-cuda")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "device: cpu"
    assert lines[1] == "note: --total-timesteps 3,210 rounded to 3,200 (whole steps of 32 regulators)"
    run_dir = only_run_dir()
    assert re.fullmatch(r"finished 3,200 steps in 0:00:\d\d \([\d,]+ steps/s\); final evaluation return "
                        r"-\d+\.\d{3}; theta1 -0\.\d{3} phi2 -\d\.\d{3}", lines[-3]), lines[-3]
    assert lines[-2] == f"run folder: {run_dir}   (tensorboard --logdir runs)"
    assert lines[-1] == f"checkpoint: {run_dir}/checkpoint.pt"
    assert re.fullmatch(r"runs/Regulator1D__regulator_1d__1__\d{8}-\d{6}", run_dir)
    scalars = read_scalars(run_dir)
    for tag in ("params/theta1", "params/theta2", "params/phi1", "params/phi2", "charts/episodic_return",
                "charts/episodic_length", "charts/SPS", "losses/actor_loss", "losses/critic_loss",
                "eval/episodic_return"):
        assert tag in scalars, tag
    assert scalars["params/theta1"][-1][1] < -0.3  # it is learning already
    assert [step for step, _ in scalars["eval/episodic_return"]] == [1600, 3200]
    assert "panels" in read_tags(run_dir)["images"]
    with open(f"{run_dir}/panels.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_finishes_the_step_and_exits_130():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "regulator_1d.py"), "--total-timesteps",
                             "100000000", "--eval-every", "100000000", "--no-cuda"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not os.path.isdir("runs") or not os.listdir("runs"):  # the handlers are in place before the folder
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    run_dir = only_run_dir()
    step = int(re.search(rf"^interrupted at step ([\d,]+): checkpoint {run_dir}/checkpoint.pt$", out,
                         re.M).group(1).replace(",", ""))
    assert torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)["global_step"] == step
    assert read_scalars(run_dir)["params/theta1"][-1][0] <= step  # TensorBoard flushed and closed


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
    assert "use_deterministic_algorithms" in docs["torch_deterministic"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "error: --num-envs must be positive, got 0"),
    (["--total-timesteps", "-5"], "error: --total-timesteps must be positive"),
    (["--actor-lr", "0"], "error: --actor-lr must be positive"),
    (["--gamma", "1.5"], "error: --gamma must be in (0, 1], got 1.5"),
    (["--gamma", "0"], "error: --gamma must be in (0, 1]"),
    (["--env-id", "CartPole-v1"], "error: unknown --env-id 'CartPole-v1'"),
    (["--seed", "-1"], "error: --seed must be in [0, 2**32 - 1], got -1"),
    (["--seed", str(2**32)], "error: --seed must be in [0, 2**32 - 1]"),
    (["--total-timesteps", "16"], "error: --total-timesteps (16) must be at least --num-envs (32)"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    with pytest.raises(SystemExit) as exit_info:
        tyro.cli(Args, args=argv)
    assert str(exit_info.value.code).startswith(message) and "\n" not in str(exit_info.value.code)
    assert not os.path.exists("runs")
