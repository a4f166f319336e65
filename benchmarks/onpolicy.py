"""Reproduces the README's on-policy figures (ac.py, a2c.py): CartPole-v1 returns at the bar budgets for
seeds 1-3, InvertedPendulum-v4 returns, and learning curves (steps per second: benchmarks/speed.py sps).

    python benchmarks/onpolicy.py                 # everything: about 6 CPU minutes, 2 runs at a time
    python benchmarks/onpolicy.py cartpole        # only some parts: cartpole, pendulum

Writes benchmarks/results/onpolicy_<part>.json and onpolicy_<part>.png. Every run is `train(Args(...))` with
the scripts' defaults except what the table below sets, on the CPU with one torch thread.
"""

import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from multiprocessing.pool import Pool

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results")
SEEDS = (1, 2, 3)
PENDULUM = {  # InvertedPendulum-v4 at the budget of tests/test_*_learning.py (evaluation does not change training)
    "ac": {"env_id": "InvertedPendulum-v4", "total_timesteps": 100_000, "eval_every": 10_000},
    "a2c": {"env_id": "InvertedPendulum-v4", "total_timesteps": 100_000, "eval_every": 10_000},
}
CARTPOLE = {"ac": {"eval_every": 20_000}, "a2c": {"eval_every": 10_000}}  # budgets: the defaults, 300k and 100k


def run(job: tuple[str, dict, int, float]) -> dict:
    """One training run in a fresh folder; the curve is the mean of the last 20 episodic returns at each episode,
    and "first_step_at_bar" the first step where that mean reaches `bar`."""
    script, overrides, seed, bar = job
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
    import torch

    torch.set_num_threads(1)
    module = __import__(script)
    from helpers import read_scalars

    os.chdir(tempfile.mkdtemp(prefix=f"onpolicy_{script}_"))
    start = time.process_time()
    metrics = module.train(module.Args(seed=seed, cuda=False, **overrides))
    cpu_seconds = time.process_time() - start
    scalars = read_scalars(metrics["run_dir"])
    steps, returns = zip(*scalars["charts/episodic_return"])
    last20 = [float(np.mean(returns[max(0, i - 19):i + 1])) for i in range(len(returns))]
    first = next((s for s, r, i in zip(steps, last20, range(len(steps))) if i >= 19 and r >= bar), None)
    return {"script": script, "seed": seed, "overrides": overrides, "cpu_seconds": round(cpu_seconds, 1),
            "final_last20_return": metrics["charts/episodic_return"],
            "final_eval_return": metrics["eval/episodic_return"],
            "bar": bar, "first_step_at_bar": first, "eval": scalars["eval/episodic_return"],
            "curve": list(zip(steps, last20)), "sps": metrics["charts/SPS"]}


def learning(part: str, settings: dict, bar: float, pool: Pool) -> None:
    jobs = [(script, overrides, seed, bar) for script, overrides in settings.items() for seed in SEEDS]
    rows = pool.map(run, jobs, chunksize=1)
    fig, axes = plt.subplots(1, len(settings), figsize=(6 * len(settings), 4), squeeze=False)
    for ax, script in zip(axes[0], settings):
        for row in (r for r in rows if r["script"] == script):
            steps, curve = zip(*row["curve"])
            (line,) = ax.plot(steps, curve, label=f"seed {row['seed']}")
            ax.plot(*zip(*row["eval"]), ".", color=line.get_color(), markersize=6)
        ax.set_title(f"{script}.py on {settings[script].get('env_id', 'CartPole-v1')}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episodic return")
        ax.legend(loc="lower right")
    fig.suptitle("lines: mean of the last 20 training episodes; dots: deterministic evaluation (10 episodes)")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, f"onpolicy_{part}.png"), dpi=100)
    with open(os.path.join(OUT, f"onpolicy_{part}.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if k != "curve"} for r in rows], f, indent=1)
    print(f"{part}: script seed  last20  eval  first step with last20 >= {bar}  cpu_s")
    for r in rows:
        print(f"  {r['script']:6s} {r['seed']:4d} {r['final_last20_return']:7.1f} {r['final_eval_return']:6.1f} "
              f"{str(r['first_step_at_bar']):>10s} {r['cpu_seconds']:6.1f}")


if __name__ == "__main__":
    parts = sys.argv[1:] or ["cartpole", "pendulum"]
    os.makedirs(OUT, exist_ok=True)
    with mp.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        if "cartpole" in parts:
            learning("cartpole", CARTPOLE, 475, pool)
        if "pendulum" in parts:
            learning("pendulum", PENDULUM, 950, pool)
