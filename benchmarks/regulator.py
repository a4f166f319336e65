"""Reproduces the README's regulator figures: final parameters for seeds 1-10, the diverging step sizes,
and the chapter's two panels.

    python benchmarks/regulator.py        # ~1 minute on one CPU core
"""

import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch  # noqa: E402

import regulator_1d  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

if __name__ == "__main__":
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for seed in range(1, 11):
        start = time.process_time()
        metrics = regulator_1d.train(regulator_1d.Args(seed=seed))
        rows.append({k: metrics[k] for k in ("theta1", "theta2", "phi1", "phi2", "eval/episodic_return")}
                    | {"seed": seed, "cpu_seconds": time.process_time() - start})
    shutil.copy(os.path.join(metrics["run_dir"], "panels.png"), os.path.join(OUT, "regulator_panels.png"))
    sweep = []
    for actor_lr in (0.05, 0.2, 0.5, 1.0, 3.0):
        metrics = regulator_1d.train(regulator_1d.Args(actor_lr=actor_lr))
        sweep.append({"actor_lr": actor_lr, "theta1": metrics["theta1"], "diverged": metrics["diverged"],
                      "global_step": metrics["global_step"]})
    with open(os.path.join(OUT, "regulator.json"), "w") as f:
        json.dump({"seeds": rows, "actor_lr_sweep": sweep}, f, indent=1)
    print("seed  theta1   phi1     phi2    eval_return  cpu_s")
    for r in rows:
        print(f"{r['seed']:4d} {r['theta1']:8.4f} {r['phi1']:8.4f} {r['phi2']:8.4f} {r['eval/episodic_return']:9.3f}"
              f" {r['cpu_seconds']:6.2f}")
    for r in sweep:
        print(f"actor_lr {r['actor_lr']}: theta1 {r['theta1']:.4f}, diverged {r['diverged']}"
              f" at step {r['global_step']}")
