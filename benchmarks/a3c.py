"""The chapter's A2C-vs-A3C claims, measured on this machine: a2c.py against a3c.py on CartPole-v1 at their defaults.

    python benchmarks/a3c.py               # about 8 minutes on 2 cores; run it on an otherwise idle machine
    python benchmarks/a3c.py --workers 2   # a3c's worker count (default: this machine's CPUs)

One run at a time, each `python <script>.py --seed s --eval-every 10000 --total-timesteps 200000` (a3c.py's budget)
in a fresh folder, timed from the start of the command (so a3c's process start-up counts). Parts:
  compare    seeds 1-5 of each: final evaluation, steps/s, CPU seconds, wall seconds and env steps until the mean
             of the last 20 training episodes first reaches 475
  repeat     seed 1 three more times each: a2c ends with the same weights every time, a3c does not
  staleness  a3c with 1 worker and with --workers: how many pushes had each staleness (charts/staleness)
Writes benchmarks/results/a3c.json and benchmarks/results/a3c.png.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from helpers import read_scalars  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results")
BAR = 475.0


def run(script: str, seed: int, *extra: str) -> dict:
    """One run: its curve (step, seconds since the command started, mean of the last 20 training returns), final
    evaluation, steps/s, CPU and wall seconds, staleness per push (a3c), and a hash of its final weights."""
    folder = tempfile.mkdtemp(prefix=f"bench_{script}_")
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    command = [sys.executable, os.path.join(ROOT, f"{script}.py"), "--seed", str(seed), "--eval-every", "10000",
               "--checkpoint-every", "0", "--total-timesteps", "200000", *extra]
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.time() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    finished = next(line for line in lines if line.startswith("finished "))
    run_dir = os.path.join(folder, next(line for line in lines if line.startswith("run folder: ")).split()[2])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    returns = sorted(events.Scalars("charts/episodic_return"), key=lambda e: e.step)
    curve = [(e.step, e.wall_time - start, float(np.mean([r.value for r in returns[max(0, i - 19):i + 1]])))
             for i, e in enumerate(returns)]
    reached = next(((step, seconds) for step, seconds, mean in curve if mean >= BAR), (None, None))
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    weights = float(sum(v.double().sum() * (k + 1) for k, v in enumerate(checkpoint["actor"].values())))
    scalars = read_scalars(run_dir)
    return {"script": script, "seed": seed, "args": list(extra), "final_eval": float(finished.split()[-1]),
            "sps": float(finished.split("(")[1].split()[0].replace(",", "")), "wall_seconds": wall,
            "cpu_seconds": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
            "steps_to_bar": reached[0], "seconds_to_bar": reached[1], "curve": curve[::5] + curve[-1:],
            "staleness_counts": np.bincount([int(v) for _, v in scalars.get("charts/staleness", [])]).tolist(),
            "weights_fingerprint": weights}


def summary(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if r[key] is not None]
    missed = len(runs) - len(values)
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" + (f" ({missed} never)" if missed else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    workers = parser.parse_args().workers
    a3c_args = ("--num-workers", str(workers))
    results = {"machine": f"{len(os.sched_getaffinity(0))} CPUs", "workers": workers, "compare": {}, "repeat": {}}
    for script, extra in (("a2c", ()), ("a3c", a3c_args)):
        results["compare"][script] = [run(script, seed, *extra) for seed in range(1, 6)]
        results["repeat"][script] = [results["compare"][script][0]] + [run(script, 1, *extra) for _ in range(3)]
        print(script, {key: summary(results["compare"][script], key) for key in (
            "final_eval", "sps", "cpu_seconds", "wall_seconds", "steps_to_bar", "seconds_to_bar")}, flush=True)
        print("  seed 1 four times, final evaluations:", [r["final_eval"] for r in results["repeat"][script]],
              "weights:", [r["weights_fingerprint"] for r in results["repeat"][script]], flush=True)
    add = lambda counts: np.sum([np.pad(c, (0, 16 - len(c))) for c in counts], axis=0).tolist()
    results["staleness"] = {"1": add([run("a3c", 1, "--num-workers", "1")["staleness_counts"]]),
                            str(workers): add([r["staleness_counts"] for r in results["compare"]["a3c"]])}
    for w, counts in results["staleness"].items():
        counts = np.array(counts)
        print(f"staleness with {w} worker(s): mean {counts @ np.arange(len(counts)) / counts.sum():.2f}, max "
              f"{np.flatnonzero(counts).max()}, share of pushes with staleness 0: {counts[0] / counts.sum():.2f}")
    with open(os.path.join(OUT, "a3c.json"), "w") as f:
        json.dump(results, f)
    figure(results)


def figure(results: dict):
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    colors = {"a2c": "tab:blue", "a3c": "tab:orange"}
    for script, runs in results["compare"].items():
        label = f"{script}.py" + (f" ({results['workers']} workers)" if script == "a3c" else "")
        for i, run_ in enumerate(runs):
            steps, seconds, means = zip(*run_["curve"])
            axes[0].plot(steps, means, color=colors[script], alpha=0.6, label=label if i == 0 else None)
            axes[1].plot(seconds, means, color=colors[script], alpha=0.6, label=label if i == 0 else None)
        for i, run_ in enumerate(results["repeat"][script]):
            steps, _, means = zip(*run_["curve"])
            axes[2].plot(steps, means, color=colors[script], alpha=0.7, label=f"{script}.py --seed 1" if i == 0
                         else None)
    axes[0].set(xlabel="env steps", ylabel="mean of the last 20 training returns", title="equal env steps (seeds 1-5)")
    axes[1].set(xlabel="wall seconds from the command's start", title="equal wall time (seeds 1-5)")
    axes[2].set(xlabel="env steps", title="the same seed, 4 runs each: a2c repeats, a3c does not")
    for w, counts in results["staleness"].items():
        counts = np.array(counts)[:np.flatnonzero(counts).max() + 1]
        axes[3].bar(np.arange(len(counts)) + (0.2 if w != "1" else -0.2), counts / counts.sum(), width=0.4,
                    label=f"{w} worker(s): mean {counts @ np.arange(len(counts)) / counts.sum():.2f}")
    axes[3].set(xlabel="staleness (global updates between pull and push)", ylabel="share of pushes",
                title="staleness against the number of workers")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle(f"a2c.py vs a3c.py on CartPole-v1 (defaults but 200k steps for both; {results['machine']}; "
                 "python benchmarks/a3c.py)")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "a3c.png"), dpi=80)


if __name__ == "__main__":
    main()
