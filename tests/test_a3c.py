"""a3c.py: the math against independent computations, the asynchronous wiring through train() and real worker
processes (gradients reach the shared networks, one shared Adam state, staleness, the budget), and what a user
meets: bad input, a dying worker, Ctrl-C and resume, NaN, --help."""

import glob
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import fields

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.multiprocessing
from a3c_envs import Chain, Crash, Die, SlowChain, push_once
from helpers import REPO, read_scalars, run_script

import a3c
from a3c import Actor, Args, Clock, Critic, compute_gae, train


@pytest.fixture
def chain():
    for name, entry_point in [("Chain", Chain), ("SlowChain", SlowChain), ("Crash", Crash), ("Die", Die)]:
        gym.register(f"A3C{name}-v0", entry_point=entry_point, max_episode_steps=4)
    yield "A3CChain-v0"
    for name in ["Chain", "SlowChain", "Crash", "Die"]:
        del gym.registry[f"A3C{name}-v0"]


@pytest.fixture
def deadline():
    """A run that hangs fails the test after 120 s instead of hanging the suite."""
    def hung(signum, frame):
        raise TimeoutError("the run still ran after 120 s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def tiny(**overrides) -> Args:
    return Args(**dict(env_id="A3CChain-v0", num_workers=1, num_envs=3, num_steps=5, total_timesteps=30,
                       eval_every=1000, eval_episodes=1, checkpoint_every=0, log_every=1) | overrides)


def worker_actions(N: int) -> list[list[int]]:
    """The actions the workers' Chain envs took, per env index, in order (lines of this process left out)."""
    actions = [[] for _ in range(N)]
    for line in open("actions.txt"):
        pid, index, action = map(int, line.split())
        if pid != os.getpid():
            actions[index].append(action)
    return actions


# --- the math ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_matches_the_brute_force_sum(lam):
    g = torch.Generator().manual_seed(0)
    T, N, gamma = 7, 4, 0.9
    rewards, values = torch.randn(T, N, generator=g), torch.randn(T, N, generator=g)
    dones, last = (torch.rand(T, N, generator=g) < 0.3).float(), torch.randn(N, generator=g)
    advantages, returns = compute_gae(rewards, values, dones, last, gamma, lam)
    assert torch.allclose(advantages, brute_force_advantages(rewards, values, dones, last, gamma, lam), atol=1e-5)
    assert torch.allclose(returns, advantages + values)


def brute_force_advantages(rewards, values, dones, last_value, gamma, lam):
    """A_t = sum_l (gamma lambda)^l delta_{t+l}, the sum cut after the first done."""
    T, N = rewards.shape
    next_values = torch.cat([values[1:], last_value[None]]).double()
    delta = rewards.double() + gamma * next_values * (1 - dones.double()) - values.double()
    advantages = torch.zeros(T, N, dtype=torch.float64)
    for t in range(T):
        for n in range(N):
            for step in range(t, T):
                advantages[t, n] += (gamma * lam) ** (step - t) * delta[step, n]
                if dones[step, n]:
                    break
    return advantages.float()


def test_staleness_is_counted_right_on_a_constructed_schedule():
    """Three workers, A, B and C, interleaved by hand: a push's staleness is the pushes of others since its pull."""
    clock = Clock(total=100)
    a = b = c = clock.updates()  # all three pull the initial weights
    assert clock.pushed(a) == (1, 0)  # A: nobody pushed since its pull
    assert clock.pushed(b) == (2, 1)  # B: A did
    a = clock.updates()
    assert clock.pushed(c) == (3, 2)  # C: A and B did
    assert clock.pushed(a) == (4, 1)  # A again: C did, since A's second pull
    b = clock.updates()
    assert clock.pushed(b) == (5, 0)


def test_the_budget_is_reserved_in_whole_rollouts_and_never_overrun():
    clock = Clock(total=100, steps=10)
    assert [clock.reserve(30) for _ in range(4)] == [40, 70, 100, None] and clock.steps() == 100
    clock = Clock(total=95, steps=10)  # a rollout that would cross the budget is not taken
    assert [clock.reserve(30) for _ in range(3)] == [40, 70, None] and clock.steps() == 70


# --- real worker processes ---------------------------------------------------------------------------------------

def test_a_workers_gradient_reaches_the_shared_networks_through_one_shared_adam():
    """Two pushes from two other processes, by hand: the first moves every shared weight by -lr g / (|g| + eps)
    (Adam's first step); the second follows Adam's second step with the first's statistics, which it can only do
    if the two processes' Adam share one state. A per-worker state would make the second step -lr g2 / |g2| too."""
    torch.manual_seed(0)
    actor, critic = Actor(2, gym.spaces.Discrete(2)), Critic(2)
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters()])
    states = a3c.share_adam_state(optimizer)
    for net in (actor, critic):
        net.share_memory()
    before = [p.detach().clone() for p in [*actor.parameters(), *critic.parameters()]]
    clock, lr, (g1, g2) = Clock(total=10), 0.01, (0.5, -2.0)
    context = torch.multiprocessing.get_context("spawn")
    for gradient in (g1, g2):
        process = context.Process(target=push_once, args=(actor, critic, states, clock, gradient, lr, 0))
        process.start()
        process.join(60)
        assert process.exitcode == 0
    b1, b2, eps = 0.9, 0.999, 1e-8
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1 ** 2
    first = lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2 ** 2
    second = lr * (m2 / (1 - b1 ** 2)) / (math.sqrt(v2 / (1 - b2 ** 2)) + eps)
    for p, p0 in zip([*actor.parameters(), *critic.parameters()], before):
        assert torch.allclose(p.detach(), p0 - first - second, atol=1e-7)
    assert all(float(s["step"]) == 2 for s in states) and clock.updates() == 2
    assert clock.pushed(0) == (3, 2)  # the second push, pulled at 0 too, counted the first


def test_train_wiring_on_a_chain_with_known_ends(chain, deadline):
    """train itself, one worker, two rollouts of 3 envs x 5 steps on Chain: the final shared weights against the
    chapter's algorithm done here by hand from the actions the worker took (they are the only random part):
    the rollouts (the time-limit bootstrap only where an episode was truncated and not terminated), GAE, the loss,
    the clip, the annealed step size, and two Adam steps written out."""
    U, T, N, gamma, lam, lr, c1, c2, clip = 2, 5, 3, 0.9, 0.8, 0.01, 0.7, 0.3, 0.05
    result = train(tiny(seed=0, gamma=gamma, gae_lambda=lam, learning_rate=lr, vf_coef=c1, ent_coef=c2,
                        max_grad_norm=clip, total_timesteps=U * T * N))
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    taken = worker_actions(N)
    assert [len(a) for a in taken] == [U * T] * N  # the budget: every step of the workers, no more
    torch.manual_seed(0)  # the run's initial weights: seeded as every script's, actor first
    actor, critic = Actor(2, gym.spaces.Discrete(2)), Critic(2)
    params = [*actor.parameters(), *critic.parameters()]
    m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    features = lambda ks: torch.tensor([[k / 10, 1.0] for k in ks])
    k, term_at = [0] * N, [3, 4, 99]  # envs seeded seed + worker * N + i = i
    for u in range(U):
        ks, rewards, dones, acts = [], [], [], []
        for t in range(T):
            ks.append(list(k))
            row_r, row_d = [], []
            for n in range(N):
                k[n] += 1
                terminated, truncated = k[n] == term_at[n], k[n] == 4
                bootstrap = gamma * critic(features([k[n]])).item() if truncated and not terminated else 0.0
                row_r.append(k[n] + bootstrap)
                row_d.append(float(terminated or truncated))
                k[n] = 0 if terminated or truncated else k[n]
            rewards.append(row_r), dones.append(row_d), acts.append([taken[n][u * T + t] for n in range(N)])
        obs = torch.stack([features(row) for row in ks])
        rewards, dones, acts = torch.tensor(rewards), torch.tensor(dones), torch.tensor(acts)
        with torch.no_grad():
            values, last = critic(obs), critic(features(k))
        advantages = brute_force_advantages(rewards, values, dones, last, gamma, lam)
        dist = actor(obs.flatten(0, 1))
        loss = (-(dist.log_prob(acts.flatten()) * advantages.flatten()).mean()
                + c1 * 0.5 * ((critic(obs.flatten(0, 1)) - (advantages + values).flatten()) ** 2).mean()
                - c2 * dist.entropy().mean())
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        grads = [g * min(1.0, clip / (norm + 1e-6)) for g in grads]
        step, step_lr = u + 1, lr * (1 - u / U)
        with torch.no_grad():
            for p, g, m_, v_ in zip(params, grads, m, v):
                m_.mul_(0.9).add_(0.1 * g)
                v_.mul_(0.999).add_(0.001 * g * g)
                p -= step_lr * (m_ / (1 - 0.9 ** step)) / ((v_ / (1 - 0.999 ** step)).sqrt() + 1e-8)
    for name, net in (("actor", actor), ("critic", critic)):
        for key, want in net.state_dict().items():
            assert torch.allclose(checkpoint[name][key], want, atol=1e-6), (name, key)
    assert checkpoint["update"] == U and checkpoint["global_step"] == U * T * N
    # the kinds of episode end all occurred: termination (env 0), both at once (env 1), truncation (env 2)
    assert term_at == [3, 4, 99] and U * T > 4


def test_the_budget_counts_every_workers_steps_and_the_adam_state_is_one(chain, deadline):
    """Two workers, 1,500 steps of 15: the envs of both took 1,500 steps in all, 100 pushes were counted, each
    logged with its staleness, and the checkpoint's Adam (the main process's, never stepped there) counted them."""
    result = train(tiny(num_workers=2, total_timesteps=1500, checkpoint_every=300))
    assert sum(len(a) for a in worker_actions(3)) == 1500 and result["global_step"] == 1500
    checkpoint = torch.load(result["checkpoint"], weights_only=True)
    assert checkpoint["update"] == result["update"] == 100
    assert {float(s["step"]) for s in checkpoint["optimizer"]["state"].values()} == {100.0}
    scalars = read_scalars(result["run_dir"])
    staleness = [value for _, value in scalars["charts/staleness"]]
    assert len(staleness) == 100 and result["staleness_max"] == max(staleness)
    assert result["staleness_mean"] == pytest.approx(np.mean(staleness))
    for tag in ["charts/episodic_return", "charts/episodic_length", "charts/SPS", "losses/actor_loss",
                "losses/value_loss", "losses/entropy", "eval/episodic_return"]:
        assert tag in scalars, tag
    assert sorted(step for step, _ in scalars["losses/actor_loss"]) == list(range(15, 1501, 15))
    assert not torch.multiprocessing.active_children()


# --- what a user meets -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, message", [
    ("A3CCrash-v0", "error: worker 0: RuntimeError: the simulator lost its licence; stopped. No checkpoint was "
                    "written yet."),
    ("A3CDie-v0", "error: worker 0: died (exit code 3); stopped. No checkpoint was written yet."),
])
def test_a_failing_or_dying_worker_stops_the_run_with_one_line(chain, deadline, capsys, env, message):
    with pytest.raises(SystemExit) as exit_info:
        train(tiny(env_id=env, total_timesteps=3000))
    assert exit_info.value.code == 1 and capsys.readouterr().err.strip().splitlines()[-1] == message
    assert not torch.multiprocessing.active_children()  # nothing left running


def test_an_env_the_workers_cannot_import_is_one_line(capsys):
    gym.register("A3CLocal-v0", entry_point=lambda: Chain(), max_episode_steps=4)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train(tiny(env_id="A3CLocal-v0"))
    finally:
        del gym.registry["A3CLocal-v0"]
    assert str(exit_info.value.code).startswith("error: --env-id A3CLocal-v0: its registration cannot be sent to "
                                                "the worker processes")
    assert not glob.glob("runs/*")


@pytest.mark.parametrize("argv, message", [
    (["--num-workers", "0"], "error: --num-workers must be positive, got 0"),
    (["--num-workers", str(a3c.CPUS + 1)],
     f"error: --num-workers {a3c.CPUS + 1} is more than this machine's {a3c.CPUS} CPUs: one worker per CPU at most"),
    (["--num-envs", "0"], "error: --num-envs must be positive, got 0"),
    (["--total-timesteps", "10"], "error: --total-timesteps (10) must be at least --num-envs x --num-steps (40)"),
    (["--env-id", "NoSuchEnv-v0"], "error: unknown --env-id 'NoSuchEnv-v0' (not in gymnasium's registry)"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("a3c.py", *argv)
    assert result.returncode == 1 and result.stderr.strip() == message and result.stdout == ""


def test_torchrun_is_refused_with_one_line(chain, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        train(tiny())
    assert exit_info.value.code == "error: a3c.py starts its own worker processes: run it with python, not torchrun"


def test_help_documents_every_argument():
    result = run_script("a3c.py", "--help")
    assert result.returncode == 0
    for field in fields(Args):
        assert f"--{field.name.replace('_', '-')}" in result.stdout, field.name


def test_ctrl_c_checkpoints_stops_every_process_and_resume_finishes_the_budget(chain, tmp_path):
    """A Ctrl-C reaches the whole process group, workers included: the main process checkpoints and exits 130,
    no worker is left, and --resume trains to the end of the budget, counting the pushes on."""
    script = (f"import sys; sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]\n"
              "import gymnasium as gym, a3c\nfrom a3c_envs import SlowChain\n"
              "gym.register('A3CSlowChain-v0', entry_point=SlowChain, max_episode_steps=4)\n"
              "if __name__ == '__main__':  # spawned workers import this file too\n    a3c.main(a3c.Args)\n")
    (tmp_path / "run.py").write_text(script)
    argv = [sys.executable, str(tmp_path / "run.py"), "--env-id", "A3CSlowChain-v0", "--num-workers", "1",
            "--num-envs", "3", "--total-timesteps", "3000", "--eval-episodes", "1", "--checkpoint-every", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.time() + 120
    while not (os.path.exists("actions.txt") and len(open("actions.txt").readlines()) > 150):
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to every process of the group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in err, err
    line = out.strip().splitlines()[-1]
    assert line.startswith("interrupted at step ") and "; resume with: python a3c.py --resume " in line, out
    time.sleep(0.5)
    session = subprocess.run(["ps", "-o", "stat=,args=", "-s", str(process.pid)], capture_output=True, text=True)
    running = [line for line in session.stdout.splitlines() if not line.startswith("Z")]  # (zombies: init's to reap)
    assert running == [], running  # no worker, nor multiprocessing's resource tracker, outlived the run
    path = line.split("--resume ")[1]
    stopped = torch.load(path, weights_only=True)
    assert 0 < stopped["global_step"] < 3000 and stopped["global_step"] % 15 == 0
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), "--resume", path], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"resuming {path} at step {stopped['global_step']:,}" in result.stdout
    final = torch.load(path, weights_only=True)
    assert final["finished"] and final["global_step"] == 3000
    assert final["update"] >= 200 and {float(s["step"]) for s in final["optimizer"]["state"].values()} == \
        {float(final["update"])}


def test_a_nan_stops_every_worker_with_one_line(deadline, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train(Args(num_workers=1, num_envs=2, total_timesteps=2000, learning_rate=1e30, eval_episodes=1))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 1 and re.match(r"error: \S+ is (nan|inf) at step [\d,]+; stopped\. ", err), err
    assert not torch.multiprocessing.active_children()


def test_cli_learns_nothing_wrong_end_to_end_and_evaluates_its_checkpoint():
    result = run_script("a3c.py", "--num-workers", "1", "--total-timesteps", "400", "--eval-episodes", "2")
    assert result.returncode == 0 and result.stderr.count("Traceback") == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "device: cpu" and lines[1].startswith("finished 400 steps in ")
    assert lines[-1].startswith("staleness (global updates between a worker's pull and its push): mean 0.00, max 0 "
                                "over 10 pushes")
    path = next(line.split(": ")[1] for line in lines if line.startswith("checkpoint: "))
    evaluation = run_script("a3c.py", "--evaluate", path, "--eval-episodes", "2")
    assert evaluation.returncode == 0 and evaluation.stdout.startswith(f"evaluation of {path} on CartPole-v1: ")
