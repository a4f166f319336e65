"""Speed of the scripts on the CPU, one torch thread. Four parts; each writes JSON and prints a table:

    python benchmarks/speed.py                # all four parts (about 12 minutes), or some:
    python benchmarks/speed.py offpolicy      # ~4-6 min (1.5 of it compiling): results/speed_offpolicy.json
    python benchmarks/speed.py sps            # ~3 min: results/speed_sps.json
    python benchmarks/speed.py alphazero      # ~1.5 min, benchmarks/alphazero.py speed(): results/alphazero_speed.json
    python benchmarks/speed.py relu_mask      # ~20 s: results/speed_relu_mask.json, bool masks in compiled code
    python benchmarks/speed.py --quick        # a smoke test, ~4 min: small budgets (alphazero's stays), and the JSON
                                              # goes to a temporary folder, not to results/

offpolicy: ddpg.py, td3.py, sac.py on Hopper-v4 shapes (batch 256, 256x256 networks, one update per env step),
with their own modules and update functions on a replay buffer of real Hopper transitions: CPU milliseconds
(time.process_time) per env step of env + acting (train's loop body: act, step, store), critic update (sampling
included), actor update, temperature update (sac), target update (each divided by policy_frequency where it runs
less often), their sum, and the matmul floor: the same matrix products as bare torch.mm calls (FlopCounterMode
checks them against the update's). The functions take turns in rounds and the best round counts, so a shared
machine's load hits all alike: compare ratios to the floor, not milliseconds across runs. Each (script, mode) is a
fresh process with an empty TORCHINDUCTOR_CACHE_DIR: "eager" (the default flags) beside two references, "plain"
(CleanRL-style: separate nn.Linear critics, for-loop Adam, critic weight gradients in the actor update, a Python
loop for the targets, sac's temperature loss running the actor again) and "separate_critics" (the scripts' choices
but separate critics); and "compile" (--compile: torch.compile of the same update functions, with the activation
memory budget train() sets), with its warm-up, timed beside "eager" in the same process: its speed-up over eager
(whole update and each piece) is a ratio of two timings under the same load.
"kernels" splits the eager critic + actor update: its own ATen calls (forward, backward, Adam) recorded once and
replayed bare, without Python, autograd or modules: its matrix products alone, then all its kernels back to back.

sps: the scripts' own metrics["charts/SPS"] from train(Args(...)) with short budgets, in a temporary folder.
alphazero: positions searched per second, batched against one by one (benchmarks/alphazero.py's speed()).
relu_mask: compiled ReLU kernels with and without the bool mask the compiled backward pass saves (see relu_mask).
"""

import argparse
import copy
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)  # the scripts first: benchmarks/alphazero.py would shadow alphazero.py
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch._functorch.config  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import ddpg  # noqa: E402
import sac  # noqa: E402
import td3  # noqa: E402

ALGOS = {"ddpg": ddpg, "td3": td3, "sac": sac}
PIECES = ("critic", "actor", "temperature", "target")  # the parts of one update, as learner() names them
B, H = 256, 256


# ---- offpolicy ---------------------------------------------------------------------------------------------------
# (m, k, n) of the products of an MLP with layer sizes `sizes` on a batch of B: forward X W, weight gradients
# X^T dY, input gradients dY W^T (the first layer's only where its input needs a gradient)
fwd = lambda sizes: [(B, i, o) for i, o in zip(sizes[:-1], sizes[1:])]
dw = lambda sizes: [(i, B, o) for i, o in zip(sizes[:-1], sizes[1:])]
dx = lambda sizes, to_input=False: [(B, o, i) for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])) if k or to_input]


def floor_shapes(name: str, obs_dim: int, act_dim: int) -> dict[str, list[tuple[int, int, int]]]:
    """The matrix products of one critic update and of one actor update, as the scripts compute them."""
    critic, n = [obs_dim + act_dim, H, H, 1], 1 if name == "ddpg" else 2
    if name == "sac":  # a backbone obs -> H -> H, then two heads H -> act (mean, log std)
        actor_fwd = fwd([obs_dim, H, H]) + 2 * fwd([H, act_dim])
        actor_bwd = dw([obs_dim, H, H]) + 2 * (dw([H, act_dim]) + dx([H, act_dim], to_input=True)) + dx([obs_dim, H, H])
    else:
        actor = [obs_dim, H, H, act_dim]
        actor_fwd, actor_bwd = fwd(actor), dw(actor) + dx(actor)
    q = 1 if name == "td3" else n  # critics in the actor update: td3 follows Q_1 alone, sac the min of both
    return {"critic": actor_fwd + 2 * n * fwd(critic) + n * (dw(critic) + dx(critic)),  # targets on s', critics
            "actor": actor_fwd + q * (fwd(critic) + dx(critic, to_input=True)) + actor_bwd}  # no critic weight grads


def matmuls(shapes):
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    return lambda: [torch.mm(a, b) for a, b in mats]


def copy_tensors(a):
    return a.clone() if isinstance(a, torch.Tensor) else [copy_tensors(x) for x in a] if isinstance(a, list) else a


MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
           torch.ops.aten.baddbmm.default)


class Recorder(TorchDispatchMode):
    """Records every ATen call (forward, backward, optimizer) of a piece of the update, with copies of its tensor
    arguments, so that the kernels can be replayed without Python, autograd or the modules around them."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, [copy_tensors(a) for a in args], kwargs or {}))
        return func(*args, **(kwargs or {}))


def replay(calls, only_matmuls: bool):
    calls = [c for c in calls if not only_matmuls or c[0] in MATMULS]
    return lambda: [func(*args, **kwargs) for func, args, kwargs in calls]


def interleaved(fns: dict, rounds: int, calls: int) -> tuple[dict, dict]:
    """CPU milliseconds per call of each function, timed in rounds that take turns: (best round, median round)."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            start = time.process_time()
            for _ in range(calls):
                fn()
            times[name].append((time.process_time() - start) / calls * 1e3)
    return {k: min(t) for k, t in times.items()}, {k: float(np.median(t)) for k, t in times.items()}


class SeparateCritics(torch.nn.Module):
    """The references' critics: separate nn.Linear MLPs (ddpg.Critic) called one after another, a drop-in for the
    scripts' Critic. `weight_grads` ignores `detach`: CleanRL computes the critics' weight gradients in the actor
    update too."""

    def __init__(self, observation_space, action_space, n: int, weight_grads: bool):
        super().__init__()
        self.critics = torch.nn.ModuleList(ddpg.Critic(observation_space, action_space) for _ in range(n))
        self.weight_grads = weight_grads
        self.q1 = lambda obs, action, detach=False: self.forward(obs, action, True, detach)[0]  # td3's actor update

    def forward(self, obs, action, first_only=False, detach=False):
        q = [c(obs, action, detach=detach and not self.weight_grads) for c in self.critics[: 1 if first_only else None]]
        return q[0] if len(self.critics) == 1 else torch.stack(q)


@torch.no_grad()
def loop_polyak(net, target, tau):  # CleanRL's target update: one Python iteration per tensor
    for p, t in zip(net.parameters(), target.parameters()):
        t.data.copy_(tau * p.data + (1 - tau) * t.data)


def every(name: str, piece: str, policy_frequency: int) -> int:  # critic updates per run of `piece`
    return policy_frequency if piece in ("actor", "temperature") or (piece == "target" and name != "sac") else 1


def learner(name: str, variant: str, args, envs) -> tuple[dict, torch.nn.Module]:
    """(the update's pieces, each a function of a batch, and `update`: one update as train runs it; the actor)."""
    module, spaces = ALGOS[name], (envs.single_observation_space, envs.single_action_space)
    torch.manual_seed(0)
    actor = module.Actor(*spaces)
    if variant in ("eager", "compile"):
        critic = (module.TwinCritic if name == "td3" else module.Critic)(*spaces)
    else:
        critic = SeparateCritics(*spaces, 1 if name == "ddpg" else 2, weight_grads=variant == "plain")
    actor_target, critic_target = (copy.deepcopy(m).requires_grad_(False) for m in (actor, critic))
    fused = variant != "plain"  # the default Adam on a CPU: a for-loop over the tensors
    actor_opt = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=fused)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=fused)
    polyak = loop_polyak if variant == "plain" else module.polyak_update
    steps = [module.update_critic, module.update_actor, getattr(module, "update_temperature", None)]
    if variant == "compile":
        torch._functorch.config.activation_memory_budget = 0.99  # as train() sets it with --compile
    critic_step, actor_step, temperature_step = (torch.compile(f) if variant == "compile" and f else f for f in steps)
    if name == "sac":
        log_alpha, last = torch.zeros((), requires_grad=True), {}
        alpha_opt = torch.optim.Adam([log_alpha], lr=args.alpha_lr, fused=fused)

        def actor_piece(batch):
            last["log_prob"] = actor_step(batch[0], actor, critic, actor_opt, log_alpha)[1]

        def temperature_piece(batch):
            log_prob = last["log_prob"]
            if variant == "plain":  # CleanRL runs the actor again for the temperature loss
                with torch.no_grad():
                    log_prob = actor.get_action(batch[0])[1]
            temperature_step(log_prob, log_alpha, alpha_opt, -float(spaces[1].shape[0]))

        pieces = {"critic": lambda b: critic_step(b, actor, critic, critic_target, critic_opt, log_alpha, args),
                  "actor": actor_piece, "temperature": temperature_piece,
                  "target": lambda b: polyak(critic, critic_target, args.tau)}
    else:
        pieces = {"critic": lambda b: critic_step(b, actor_target, critic, critic_target, critic_opt, args),
                  "actor": lambda b: actor_step(b[0], actor, critic, actor_opt),
                  "target": lambda b: (polyak(actor, actor_target, args.tau), polyak(critic, critic_target, args.tau))}
    count = [0]

    def update(batch):
        count[0] += 1
        for piece, fn in pieces.items():
            if count[0] % every(name, piece, args.policy_frequency) == 0:
                fn(batch)

    return pieces | {"update": update}, actor


def offpolicy_one(name: str, mode: str, quick: bool) -> dict:
    """One process: the script `name` in `mode`, "eager" (with the references) or "compile"."""
    torch.set_num_threads(1)
    module = ALGOS[name]
    args = module.Args(env_id="Hopper-v4", cuda=False)
    envs = gym.vector.SyncVectorEnv([module.make_env(args.env_id)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    rb = module.ReplayBuffer(100_000, envs.single_observation_space, envs.single_action_space, torch.device("cpu"))
    state = {"obs": envs.reset(seed=0)[0]}
    envs.action_space.seed(0)

    def env_step(actions):  # train's loop body after acting: step, store the transition
        next_obs, rewards, terminations, _, infos = envs.step(actions)
        rb.add(state["obs"], actions, rewards, module.final_observations(next_obs, infos), terminations)
        state["obs"] = next_obs

    for _ in range(2_000 if quick else 10_000):  # real Hopper transitions, uniformly random actions
        env_step(envs.action_space.sample())
    # the compile process times eager beside it: its speed-up is measured in one process, under the same load
    variants = ["eager", "plain"] + ["separate_critics"] * (name == "sac") if mode == "eager" else ["compile", "eager"]
    learners = {v: learner(name, v, args, envs) for v in variants}
    result, pf = {"algo": name, "mode": mode, "policy_frequency": args.policy_frequency}, args.policy_frequency
    if mode == "compile":  # the first updates compile every function (td3's actor waits for the second update)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(2 * pf):
            learners["compile"][0]["update"](rb.sample(B))
        result["compile_warmup_s"] = {"wall": time.perf_counter() - wall, "cpu_this_process": time.process_time() - cpu}
        result["graphs_compiled"] = {"warmup": counters["stats"]["unique_graphs"]}
    actor = learners[mode][1]

    def env_and_acting():  # the learning phase's action choice, exploration noise included
        with torch.no_grad():
            obs = torch.as_tensor(state["obs"], dtype=torch.float32)
            if name == "sac":
                actions = actor.get_action(obs)[0]
            else:
                action = actor(obs)
                actions = actor.clip(action + torch.randn_like(action) * args.exploration_noise * actor.action_scale)
        env_step(actions.numpy())

    shapes = floor_shapes(name, envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    batch = rb.sample(B)
    for piece in ("critic", "actor") if mode == "eager" else ():  # the floor's products against the update's
        with FlopCounterMode(display=False) as counter:
            learners["eager"][0][piece](batch)
        floor_flops = sum(2 * m * k * n for m, k, n in shapes[piece])
        result.setdefault("flops_floor_vs_update", {})[piece] = [floor_flops, counter.get_total_flops()]
    fns = {"env_and_acting": env_and_acting, "floor/critic": matmuls(shapes["critic"]),
           "floor/actor": matmuls(shapes["actor"])}
    for piece in ("critic", "actor") if mode == "eager" else ():  # the eager update's own kernels, replayed bare
        with Recorder() as recorder:
            learners["eager"][0][piece](batch)
        fns |= {f"replay_matmuls/{piece}": replay(recorder.calls, True),
                f"replay_all/{piece}": replay(recorder.calls, False)}
    for variant, (pieces, _) in learners.items():  # the critic samples its batch, as in train; the others reuse one
        fns |= {f"{variant}/{p}": lambda fn=fn, fresh=p in ("critic", "update"): fn(rb.sample(B) if fresh else batch)
                for p, fn in pieces.items()}
    best, median = interleaved(fns, *((2, 4) if quick else (9, 50)))
    floor = best["floor/critic"] + best["floor/actor"] / pf
    ms = {"env_and_acting": best["env_and_acting"], "floor": floor, "floor_critic": best["floor/critic"],
          "floor_actor": best["floor/actor"] / pf}
    flops = sum(2 * m * k * n for m, k, n in shapes["critic"]) + sum(2 * m * k * n for m, k, n in shapes["actor"]) / pf
    result["floor_gflop_per_s"] = flops / floor / 1e6  # the machine's matrix-product speed, one thread
    for variant, (pieces, _) in learners.items():
        split = {p: best[f"{variant}/{p}"] / every(name, p, pf) for p in pieces if p != "update"}
        total = sum(split.values())
        ms[variant] = split | {"update_total": total, "update_measured_whole": best[f"{variant}/update"],
                               "ratio_to_floor": total / floor, "total_with_env": total + ms["env_and_acting"]}
    if mode == "eager":  # critic + actor of the eager update against the same two pieces' kernels replayed bare
        pieces = lambda prefix: best[f"{prefix}/critic"] + best[f"{prefix}/actor"] / pf
        ms["kernels"] = {"floor": floor, "matmuls_replayed": pieces("replay_matmuls"),
                         "all_kernels_replayed": pieces("replay_all"), "update_critic_actor": pieces("eager")}
    if mode == "compile":
        result["graphs_compiled"]["at_end"] = counters["stats"]["unique_graphs"]  # none compiled while timing
    return result | {"ms_per_env_step": ms, "median_ms_per_call": median}


def machine() -> dict:
    """What the figures depend on: the ratios to the floor move with the CPU's matrix-product speed."""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")
    return {"cpu": model, "cores": os.cpu_count(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def offpolicy(out: str, quick: bool):
    results = {"setup": machine() | {"torch": torch.__version__, "threads": 1, "batch": B, "hidden": H,
                                     "env": "Hopper-v4",
                         "quick": quick, "load_average_at_start": os.getloadavg(),
                         "timer": "CPU time (time.process_time), best of interleaved rounds; ms per env step"}}
    print("CPU ms per env step     env+act  critic  actor   temp  target  update (whole)  floor  update/floor")
    for name in ALGOS:
        results[name] = {}
        for mode in ("eager", "compile"):  # a fresh process and an empty compile cache for each
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, OMP_NUM_THREADS="1", TORCHINDUCTOR_CACHE_DIR=cache, PYTHONWARNINGS="ignore")
                cmd = [sys.executable, __file__, "--child", f"{name}:{mode}"] + ["--quick"] * quick
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            results[name][mode] = res = json.loads(proc.stdout.strip().splitlines()[-1])
            ms = res["ms_per_env_step"]
            variants = ["compile"] if mode == "compile" else [v for v, s in ms.items() if isinstance(s, dict)
                                                              and v != "kernels"]
            for v, s in ((v, ms[v]) for v in variants):
                temp = f"{s['temperature']:6.3f}" if "temperature" in s else "     -"
                print(f"{name:4s} {v:18s} {ms['env_and_acting']:7.3f} {s['critic']:7.3f} {s['actor']:6.3f} {temp} "
                      f"{s['target']:7.3f} {s['update_total']:7.3f} ({s['update_measured_whole']:6.3f}) "
                      f"{ms['floor']:6.3f} {s['ratio_to_floor']:6.2f}x", flush=True)
        k = results[name]["eager"]["ms_per_env_step"]["kernels"]
        print(f"{name:4s} critic+actor {k['update_critic_actor']:.3f} ms: its matmuls replayed bare "
              f"{k['matmuls_replayed']:.3f} (floor {k['floor']:.3f}), all its kernels replayed bare "
              f"{k['all_kernels_replayed']:.3f}")
        same = results[name]["compile"]["ms_per_env_step"]  # compile and eager timed in one process
        speedups = {p: same["eager"][p] / same["compile"][p] for p in same["compile"] if p in PIECES}
        speedup = same["eager"]["update_total"] / same["compile"]["update_total"]
        results[name] |= {"compile_speedup_over_eager": speedup, "compile_speedup_over_eager_by_piece": speedups}
        warmup, check = results[name]["compile"]["compile_warmup_s"], results[name]["eager"]["flops_floor_vs_update"]
        print(f"{name:4s} floor runs at {results[name]['eager']['floor_gflop_per_s']:.0f} GFLOP/s")
        print(f"{name:4s} compile: warm-up {warmup['wall']:.0f} s wall ({warmup['cpu_this_process']:.0f} s CPU in this "
              f"process), speed x{speedup:.2f} of eager in the same process ("
              f"{', '.join(f'{p} x{v:.2f}' for p, v in speedups.items())}); floor flops "
              f"{'match' if all(a == b for a, b in check.values()) else 'DIFFER: ' + str(check)}")
    with open(os.path.join(out, "speed_offpolicy.json"), "w") as f:
        json.dump(results, f, indent=1)


# ---- sps ---------------------------------------------------------------------------------------------------------
def sps_runs(quick: bool) -> list[tuple[str, dict]]:
    div = 10 if quick else 1
    runs = [("regulator_1d", {"total_timesteps": 32_000 // div, "eval_every": 32_000 // div})]
    for (script, per_env), num_envs, async_envs in itertools.product((("ac", 3_000), ("a2c", 3_200)), (1, 8, 32),
                                                                      (False, True)):  # on their CartPole-v1
        total = per_env // div * num_envs
        runs.append((script, {"num_envs": num_envs, "async_envs": async_envs, "total_timesteps": total,
                              "eval_every": total, "eval_episodes": 1}))
    total = 800 if quick else 4_000
    for script in ALGOS:  # one evaluation episode, at the end
        runs.append((script, {"env_id": "Hopper-v4", "learning_starts": total // 4, "total_timesteps": total,
                              "eval_every": total, "eval_episodes": 1}))
    return runs + [("alphazero", {"game": "tictactoe", "total_games": 64 if quick else 256, "eval_every": 10**6,
                                  "eval_games": 10})]


def sps(out: str, quick: bool):
    """metrics["charts/SPS"] of train(Args(...)), one run at a time in this process (AsyncVectorEnv starts its own
    workers), in a temporary folder, so that the runs/ folders do not land in the repository."""
    rows, cwd, tmp = [], os.getcwd(), tempfile.mkdtemp(prefix="speed_sps_")
    os.chdir(tmp)
    try:
        for script, overrides in sps_runs(quick):
            module = importlib.import_module(script)
            wall, cpu = time.perf_counter(), time.process_time()
            metrics = module.train(module.Args(cuda=False, threads=1, **overrides))
            rows.append({"script": script, "overrides": overrides, "sps": metrics["charts/SPS"],
                         "global_step": metrics["global_step"], "wall_s": time.perf_counter() - wall,
                         "cpu_s": time.process_time() - cpu})
            if script == "alphazero":
                positions_per_game = module.Args(**overrides).simulations * metrics["charts/episodic_length"]
                rows[-1]["self_play_games_per_s"] = metrics["charts/SPS"] / positions_per_game
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    notes = {"sps": "the scripts' own metrics['charts/SPS'], wall clock, CPU, one torch thread. regulator_1d, ac, "
             "a2c: env steps / training seconds since the start; ddpg, td3, sac: learning-phase env steps / "
             "training seconds since learning started; every script leaves evaluation time out. alphazero: "
             "searched positions per second of self-play (updates and evaluation excluded); "
             "self_play_games_per_s = sps / (simulations x mean game length)",
             "quick": quick, "load_average_at_start": os.getloadavg(), "torch": torch.__version__}
    notes |= machine()
    with open(os.path.join(out, "speed_sps.json"), "w") as f:
        json.dump({"notes": notes, "rows": rows}, f, indent=1)
    print(f"{'script':13s} {'settings':56s} charts/SPS")
    for r in rows:
        settings = " ".join(f"{k}={v}" for k, v in r["overrides"].items() if k not in ("eval_every", "eval_episodes"))
        extra = f"  ({r['self_play_games_per_s']:.1f} self-play games/s)" if "self_play_games_per_s" in r else ""
        print(f"{r['script']:13s} {settings:56s} {r['sps']:8.0f}{extra}")


# ---- relu_mask ---------------------------------------------------------------------------------------------------
def relu_mask(out: str):
    """Why the scripts' --compile sets torch._functorch.config.activation_memory_budget: by default the compiled
    update saves each ReLU's mask (x <= 0) as a bool tensor for the backward pass, and torch 2.13's generated CPU
    kernel stores bool masks slowly (with the setting, the masks are recomputed from the saved activations). Three
    compiled functions on one critic layer's activations [2, 256, 256]: the ReLU alone, with the bool mask, with
    the mask as float; and the eager ReLU."""
    x = torch.randn(2, B, H)
    fns = {"relu": torch.compile(lambda x: torch.relu(x)),
           "relu_and_bool_mask": torch.compile(lambda x: (torch.relu(x), torch.relu(x) <= 0)),
           "relu_and_float_mask": torch.compile(lambda x: (torch.relu(x), (torch.relu(x) <= 0).float())),
           "eager_relu": lambda x: torch.relu(x)}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        best, _ = interleaved({name: lambda fn=fn: fn(x) for name, fn in fns.items()}, rounds=5, calls=100)
    us = {name: ms * 1e3 for name, ms in best.items()}
    with open(os.path.join(out, "speed_relu_mask.json"), "w") as f:
        json.dump({"setup": machine() | {"torch": torch.__version__, "shape": [2, B, H]}, "us_per_call": us}, f,
                  indent=1)
    for name, t in us.items():
        print(f"{name:20s} {t:8.1f} us per call (CPU time)")


# ---- alphazero ---------------------------------------------------------------------------------------------------
def alphazero(out: str):
    """benchmarks/alphazero.py's speed(), loaded from its path: by name it would be the script it imports."""
    spec = importlib.util.spec_from_file_location("alphazero_benchmark", os.path.join(ROOT, "benchmarks/alphazero.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.OUT = out
    bench.speed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", help="offpolicy, sps, alphazero, relu_mask (default: all four)")
    parser.add_argument("--quick", action="store_true", help="small budgets, JSON to a temporary folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "algo:mode": one of offpolicy's own processes
    cli = parser.parse_args()
    if cli.child:
        print(json.dumps(offpolicy_one(*cli.child.split(":"), cli.quick)))
        sys.exit()
    parts = {"offpolicy": lambda: offpolicy(out, cli.quick), "sps": lambda: sps(out, cli.quick),
             "alphazero": lambda: alphazero(out), "relu_mask": lambda: relu_mask(out)}
    if set(cli.parts) - set(parts):
        parser.error(f"unknown parts {sorted(set(cli.parts) - set(parts))}: choose from {', '.join(parts)}")
    out = tempfile.mkdtemp(prefix="speed_quick_") if cli.quick else OUT
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    for part in cli.parts or parts:
        start = time.perf_counter()
        parts[part]()
        print(f"{part}: {time.perf_counter() - start:.0f} s wall; JSON in {out}\n", flush=True)
