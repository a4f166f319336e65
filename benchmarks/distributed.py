"""a2c.py's steps per second with 1 and 2 processes (torchrun, issue 15) on CartPole-v1 at the same total budget.

    python benchmarks/distributed.py                  # 100k steps per setting, about 2-3 minutes on 2 cores
    python benchmarks/distributed.py --steps 20000    # shorter

Each setting runs as a user would (`python a2c.py ...` or `python -m torch.distributed.run --standalone
--nproc-per-node 2 a2c.py ...`) one after the other, CPU only, one torch thread per process, evaluations only at the
end (--eval-every = the budget). Reported: the script's own SPS (rank 0's steps of all ranks over its training time,
evaluations excluded), the wall time of the whole command (start-up and final evaluation included) and its CPU time
(user + system of all its processes). Writes benchmarks/results/distributed.json.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = [  # (name, processes, --num-envs per process)
    ("1 process x 8 envs", 1, 8),
    ("2 processes x 4 envs (same N = 8)", 2, 4),
    ("2 processes x 8 envs (N = 16)", 2, 8),
]


def run(processes: int, num_envs: int, steps: int, seed: int) -> dict:
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [*launcher, os.path.join(ROOT, "a2c.py"), "--no-cuda", "--seed", str(seed), "--num-envs", str(num_envs),
               "--total-timesteps", str(steps), "--eval-every", str(steps), "--checkpoint-every", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.mkdtemp(prefix="dist_"))
    wall, after = time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    finished = re.search(r"finished ([\d,]+) steps .*\(([\d,]+) steps/s.*final evaluation return ([\d.]+)",
                         result.stdout)
    return {"processes": processes, "num_envs": num_envs, "steps": int(finished[1].replace(",", "")),
            "sps": int(finished[2].replace(",", "")), "final_eval_return": float(finished[3]),
            "wall_s": round(wall, 1),
            "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
            "command": " ".join("python" if c == sys.executable else c for c in command).replace(ROOT + "/", "")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    cli = parser.parse_args()
    rows = []
    print(f"{'setting':36s} {'SPS':>6s} {'wall s':>7s} {'CPU s':>6s} {'eval':>6s}")
    for name, processes, num_envs in SETTINGS:
        rows.append({"setting": name, **run(processes, num_envs, cli.steps, cli.seed)})
        r = rows[-1]
        print(f"{name:36s} {r['sps']:6d} {r['wall_s']:7.1f} {r['cpu_s']:6.1f} {r['final_eval_return']:6.1f}",
              flush=True)
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "distributed.json"), "w") as f:
        json.dump({"cpus": os.cpu_count(), "load_before": os.getloadavg(), "rows": rows}, f, indent=1)
