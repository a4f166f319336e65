"""SAC speed on Hopper-v4 shapes (batch 256, 256x256 networks, one update per env step), and a Hopper-v4 run.

    python benchmarks/offpolicy_sac.py speed            # ~5 CPU-minutes: writes results/sac_speed.json
    python benchmarks/offpolicy_sac.py hopper --steps 100000 --seed 1   # hours on one CPU core: sac_hopper_seed1.*

`speed` times, on one torch thread, sac.py's own update functions in three modes, each in a fresh process (with
an empty torch.compile cache, so that the warm-up is the real one): eager (the default flags), --compile, and
--compile with torch._functorch.config.aggressive_recomputation. Each process also times the matmul floor: the
same matrix products as bare torch.mm calls. Every timed call is interleaved with the others in rounds, so that
the load of a shared machine hits all of them alike, and timed in CPU time of the process. The eager process
also times what sac.py rejected: two separate nn.Linear critics instead of the stacked module, and the critics'
weight gradients left on during the actor update.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._functorch.config  # noqa: E402
import torch.nn as nn  # noqa: E402

import sac  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
B, H = 256, 256
MODES = ("eager", "compile", "compile_recompute")


def interleaved(fns: dict, rounds: int = 15, calls: int = 20) -> dict[str, float]:
    """Median CPU milliseconds per call of each function, timed in rounds that take turns."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls):
                start = time.process_time()
                fn()
                times[name].append(time.process_time() - start)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def matmul_shapes(obs_dim: int, act_dim: int) -> dict[str, list[tuple[int, int, int]]]:
    """(m, k, n) of every matrix product in one SAC update, as sac.py computes it (two critics)."""
    d = obs_dim + act_dim
    actor_fwd = [(B, obs_dim, H), (B, H, H), (B, H, act_dim), (B, H, act_dim)]  # backbone, mean and log-std heads
    critic_fwd = 2 * [(B, d, H), (B, H, H), (B, H, 1)]
    critic_dw = 2 * [(d, B, H), (H, B, H), (H, B, 1)]  # weight gradients X^T dY
    critic_dx = 2 * [(B, 1, H), (B, H, H)]  # input gradients dY W^T of layers 3 and 2
    actor_dw = [(obs_dim, B, H), (H, B, H), (H, B, act_dim), (H, B, act_dim)]
    actor_dx = [(B, act_dim, H), (B, act_dim, H), (B, H, H)]  # heads -> backbone, layer 2 -> layer 1
    return {"critic": actor_fwd + 2 * critic_fwd + critic_dw + critic_dx,  # actor and target on s', critic on s
            "actor": actor_fwd + critic_fwd + critic_dx + 2 * [(B, H, d)] + actor_dw + actor_dx}


def matmul_floor(shapes):
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    return lambda: [torch.mm(a, b) for a, b in mats]


def speed_one(mode: str) -> dict:
    """One process, one mode: the update's pieces, a whole update, and the matmul floor, interleaved."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = gym.make("Hopper-v4")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = sac.Actor(obs_dim, env.action_space)
    qf, qf_target = sac.Critic(obs_dim, act_dim), sac.Critic(obs_dim, act_dim)
    qf_target.load_state_dict(qf.state_dict())
    actor_opt = torch.optim.Adam(actor.parameters(), 3e-4, fused=True)
    q_opt = torch.optim.Adam(qf.parameters(), 3e-4, fused=True)
    log_alpha = torch.zeros((), requires_grad=True)
    alpha_opt = torch.optim.Adam([log_alpha], 3e-4, fused=True)
    rb = sac.ReplayBuffer(10_000, obs_dim, act_dim, torch.device("cpu"))
    rb.add(np.random.randn(10_000, obs_dim), np.random.randn(10_000, obs_dim),
           np.random.uniform(-1, 1, (10_000, act_dim)), np.random.randn(10_000), np.zeros(10_000))
    fns = [sac.update_critic, sac.update_actor, sac.update_temperature]
    critic_step, actor_step, temperature_step = fns if mode == "eager" else [torch.compile(f) for f in fns]
    torch._functorch.config.aggressive_recomputation = mode == "compile_recompute"
    batch = rb.sample(B)

    def update():  # what train does per update
        batch = rb.sample(B)
        critic_step(batch, actor, qf, qf_target, q_opt, log_alpha, 0.99)
        _, log_prob = actor_step(batch[0], actor, qf, actor_opt, log_alpha)
        temperature_step(log_prob, log_alpha, alpha_opt, -float(act_dim))
        sac.update_targets(qf, qf_target, 0.005)

    result = {"mode": mode, "torch": torch.__version__, "threads": 1, "batch": B, "hidden": H}
    wall, cpu = time.perf_counter(), time.process_time()
    update()
    result["first_update_wall_s"], result["first_update_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    for _ in range(20):
        update()
    _, log_prob = actor_step(batch[0], actor, qf, actor_opt, log_alpha)
    pieces = {
        "update": update,
        "critic": lambda: critic_step(batch, actor, qf, qf_target, q_opt, log_alpha, 0.99),
        "actor": lambda: actor_step(batch[0], actor, qf, actor_opt, log_alpha),
        "temperature": lambda: temperature_step(log_prob, log_alpha, alpha_opt, -float(act_dim)),
        "target": lambda: sac.update_targets(qf, qf_target, 0.005),
        "sample": lambda: rb.sample(B),
    }
    shapes = matmul_shapes(obs_dim, act_dim)
    pieces |= {"floor_critic": matmul_floor(shapes["critic"]), "floor_actor": matmul_floor(shapes["actor"])}
    if mode == "eager":
        pieces["actor_with_critic_weight_grads"] = lambda: actor_weight_grads(batch[0], actor, qf, actor_opt,
                                                                              log_alpha)
        pieces["critic_with_two_linear_critics"] = two_critics_update(obs_dim, act_dim, actor, batch)
    result |= interleaved(pieces)
    result["floor"] = result["floor_critic"] + result["floor_actor"]
    result["update_over_floor"] = result["update"] / result["floor"]
    return result


def speed():
    results = {}
    for mode in MODES:  # a fresh process and an empty compile cache for each
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, OMP_NUM_THREADS="1", TORCHINDUCTOR_CACHE_DIR=cache, PYTHONWARNINGS="ignore")
            out = subprocess.run([sys.executable, __file__, "speed-one", "--mode", mode], env=env, check=True,
                                 capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
    for mode in MODES[1:]:  # each against the eager update, both as multiples of their own process's floor
        results[mode]["speedup_over_eager"] = results["eager"]["update_over_floor"] / results[mode]["update_over_floor"]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "sac_speed.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


def actor_weight_grads(obs, actor, qf, actor_optimizer, log_alpha):
    """sac.update_actor, but with the critics' weight gradients computed (and thrown away)."""
    actions, log_prob, _ = actor.get_action(obs)
    q = qf(obs, actions).min(0).values
    actor_loss = (log_alpha.exp().detach() * log_prob - q).mean()
    actor_optimizer.zero_grad()
    qf.zero_grad(set_to_none=True)
    actor_loss.backward()
    actor_optimizer.step()


def two_critics_update(obs_dim, act_dim, actor, batch):
    """sac.update_critic's work with two separate nn.Sequential critics (and targets) instead of one stacked one."""
    make = lambda: nn.Sequential(nn.Linear(obs_dim + act_dim, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                 nn.Linear(H, 1))
    qfs, targets = [make(), make()], [make(), make()]
    opt = torch.optim.Adam([p for q in qfs for p in q.parameters()], 3e-4, fused=True)
    obs, next_obs, actions, rewards, terminations = batch

    def step():
        with torch.no_grad():
            next_actions, next_log_prob, _ = actor.get_action(next_obs)
            x = torch.cat([next_obs, next_actions], -1)
            next_q = torch.stack([t(x).squeeze(-1) for t in targets])
            y = sac.soft_q_target(rewards, terminations, next_q, next_log_prob, 1.0, 0.99)
        x = torch.cat([obs, actions], -1)
        loss = sum(0.5 * ((q(x).squeeze(-1) - y) ** 2).mean() for q in qfs)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def hopper(steps: int, seed: int, eval_every: int):
    torch.set_num_threads(1)
    start = time.process_time()
    metrics = sac.train(sac.Args(env_id="Hopper-v4", total_timesteps=steps, seed=seed, eval_every=eval_every,
                                 cuda=False, exp_name="sac_hopper"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(metrics["run_dir"], size_guidance={"scalars": 0})
    acc.Reload()
    curve = [(e.step, e.value) for e in acc.Scalars("eval/episodic_return")]
    result = {"env_id": "Hopper-v4", "seed": seed, "total_timesteps": steps, "eval_episodes": 10,
              "eval_curve": curve, "cpu_seconds": time.process_time() - start,
              "final_eval_return": metrics["eval/episodic_return"], "sps": metrics["charts/SPS"]}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"sac_hopper_seed{seed}.json"), "w") as f:
        json.dump(result, f, indent=1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*curve), marker="o")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return (10 episodes)")
    ax.set_title(f"sac.py on Hopper-v4, seed {seed}, CPU")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, f"sac_hopper_seed{seed}.png"), dpi=100)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "speed-one", "hopper"])
    parser.add_argument("--mode", choices=MODES, default="eager")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=5_000)
    cli = parser.parse_args()
    if cli.what == "speed":
        speed()
    elif cli.what == "speed-one":
        print(json.dumps(speed_one(cli.mode)))
    else:
        hopper(cli.steps, cli.seed, cli.eval_every)
