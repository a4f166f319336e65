"""Reproduces the README's learning figures of sac.py, td3.py and ddpg.py (CPU, one torch thread):

    python benchmarks/offpolicy.py pendulum                          # ~15 CPU-minutes: 3 scripts x seeds 1, 2
    python benchmarks/offpolicy.py mujoco --algo td3 --env-id Hopper-v4 --steps 100000 --seed 1   # ~6-15 CPU-minutes
                                                                                 # per 100k steps
    python benchmarks/offpolicy.py summary          # the README's MuJoCo table and results/offpolicy_mujoco.png

`pendulum` runs each script with the settings of its learning test (tests/test_*_learning.py), evaluating every
1000 steps for the curve (evaluation draws no random numbers, so it does not change the run: the final
evaluation is the test's), and writes results/offpolicy_pendulum.json and .png. `mujoco` runs one script on one
MuJoCo task (Hopper-v4, HalfCheetah-v4, Walker2d-v4) with its defaults for --steps env steps and writes
results/<algo>_<task>_<steps/1000>k_seed<seed>.json and .png (task: the id's name in lower case, e.g. halfcheetah).
`summary` reads every such JSON: one panel per task with every run's evaluation curve, and a Markdown table of
final and best evaluations beside the published 1M-step figures.
"""

import argparse
import importlib
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

PENDULUM = {  # the learning tests' settings; everything else is the script's default
    "sac": {"total_timesteps": 10_000},  # learning_starts 5000 (the default)
    "td3": {"total_timesteps": 15_000, "learning_starts": 1_000},
    "ddpg": {"total_timesteps": 20_000, "learning_starts": 1_000},
}
BARS = {"sac": -250, "td3": -250, "ddpg": -300}
PUBLISHED_1M = {  # issue #4's bars: the best published deterministic evaluations at 1M steps (td3 and ddpg, one
    # source: Fujimoto et al. 2018, Table 1, "TD3" and "Our DDPG", whose settings ddpg.py uses)
    "Hopper-v4": {"sac": "~3250", "td3": "3564", "ddpg": "1860"},
    "HalfCheetah-v4": {"sac": "~11250", "td3": "9637", "ddpg": "8577"},
    "Walker2d-v4": {"sac": "~4800", "td3": "4683", "ddpg": "3098"},
}


def run(algo: str, env_id: str, seed: int, **overrides) -> dict:
    """train(Args(...)) of one script; returns its metrics, the CPU seconds and the evaluation curve."""
    module = importlib.import_module(algo)
    torch.set_num_threads(1)
    start = time.process_time()
    metrics = module.train(module.Args(env_id=env_id, seed=seed, cuda=False, exp_name=f"bench_{algo}", **overrides))
    accumulator = EventAccumulator(metrics["run_dir"], size_guidance={"scalars": 0})
    accumulator.Reload()
    return {"algo": algo, "env_id": env_id, "seed": seed, "overrides": overrides,
            "cpu_seconds": time.process_time() - start, "final_eval_return": metrics["eval/episodic_return"],
            "learning_sps": metrics["charts/SPS"],
            "eval_curve": [(e.step, e.value) for e in accumulator.Scalars("eval/episodic_return")]}


def plot(runs: list[dict], title: str, path: str, bars: dict | None = None):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {"sac": "tab:blue", "td3": "tab:red", "ddpg": "tab:green"}
    for r in runs:
        ax.plot(*zip(*r["eval_curve"]), "o-", ms=3, color=colors[r["algo"]], alpha=0.5 + 0.5 * (r["seed"] == 1),
                label=f"{r['algo']} seed {r['seed']}")
    for algo, bar in (bars or {}).items():
        ax.axhline(bar, color=colors[algo], ls=":", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("deterministic evaluation return (10 episodes)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def pendulum():
    runs = []
    for algo, overrides in PENDULUM.items():
        for seed in (1, 2):
            runs.append(run(algo, "Pendulum-v1", seed, eval_every=1_000, **overrides))
            print(f"{algo} seed {seed}: final evaluation {runs[-1]['final_eval_return']:.1f} "
                  f"(bar {BARS[algo]}), {runs[-1]['cpu_seconds']:.0f} CPU-s", flush=True)
    with open(os.path.join(OUT, "offpolicy_pendulum.json"), "w") as f:
        json.dump({"command": "python benchmarks/offpolicy.py pendulum", "bars": BARS, "runs": runs}, f, indent=1)
    plot(runs, "Pendulum-v1, the learning tests' settings (dotted: the bars)",
         os.path.join(OUT, "offpolicy_pendulum.png"), BARS)


def mujoco(algo: str, env_id: str, steps: int, seed: int):
    result = run(algo, env_id, seed, total_timesteps=steps)
    result["command"] = (f"python benchmarks/offpolicy.py mujoco --algo {algo} --env-id {env_id} --steps {steps} "
                         f"--seed {seed}")
    name = f"{algo}_{env_id.split('-')[0].lower()}_{steps // 1000}k_seed{seed}"
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot([result], f"{algo}.py on {env_id}, seed {seed}, {steps:,} steps (CPU)", os.path.join(OUT, f"{name}.png"))
    print(json.dumps({k: v for k, v in result.items() if k != "eval_curve"}), flush=True)


def summary():
    runs = []
    for name in sorted(os.listdir(OUT)):
        if name.endswith(".json") and name.split("_")[0] in PENDULUM and "_seed" in name:
            with open(os.path.join(OUT, name)) as f:
                runs.append(json.load(f))
    tasks = [t for t in PUBLISHED_1M if any(r["env_id"] == t for r in runs)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    colors, styles = {"sac": "tab:blue", "td3": "tab:red", "ddpg": "tab:green"}, {1: "o-", 2: "s--", 3: "^:"}
    print("| task | script | steps | seed | final eval | best eval (step) | published at 1M | CPU minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for ax, task in zip(axes[0], tasks):
        for r in sorted((r for r in runs if r["env_id"] == task),
                        key=lambda r: (list(PENDULUM).index(r["algo"]), r["overrides"]["total_timesteps"], r["seed"])):
            steps, curve = r["overrides"]["total_timesteps"], r["eval_curve"]
            ax.plot(*zip(*curve), styles.get(r["seed"], "o-"), ms=2, color=colors[r["algo"]],
                    alpha=1.0 if steps > 100_000 else 0.4, label=f"{r['algo']} seed {r['seed']} ({steps // 1000}k)")
            best_step, best = max(curve, key=lambda point: point[1])
            print(f"| {task} | {r['algo']} | {steps // 1000}k | {r['seed']} | {r['final_eval_return']:.0f} | "
                  f"{best:.0f} ({best_step // 1000}k) | {PUBLISHED_1M[task][r['algo']]} | "
                  f"{r['cpu_seconds'] / 60:.1f} |")
        ax.set_title(f"{task}, defaults, CPU")
        ax.set_xlabel("environment steps")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("deterministic evaluation return (10 episodes)")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "offpolicy_mujoco.png"), dpi=100)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["pendulum", "mujoco", "summary"])
    parser.add_argument("--algo", choices=list(PENDULUM), default="sac")
    parser.add_argument("--env-id", choices=["Hopper-v4", "HalfCheetah-v4", "Walker2d-v4"], default="Hopper-v4")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    cli = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    os.chdir(ROOT)  # the runs/ folders land in the repository, as with `python sac.py`
    if cli.part == "pendulum":
        pendulum()
    elif cli.part == "summary":
        summary()
    else:
        mujoco(cli.algo, cli.env_id, cli.steps, cli.seed)
