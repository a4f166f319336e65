"""Bit-identical training across a refactor: save each script's final checkpoint for a fixed small run, change the
code, run again and compare every tensor, array and number in the two checkpoints.

    python benchmarks/identical.py --save /tmp/before       # before the change (a few CPU-minutes in all)
    python benchmarks/identical.py --compare /tmp/before    # after it: one line per script, exit 1 on a difference

Each run is the script as a user runs it (`python <script>.py ...`, one torch thread, CPU) in a fresh folder.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFF_POLICY = "--env-id Pendulum-v1 --total-timesteps 700 --learning-starts 200 --eval-every 300 --eval-episodes 2 " \
             "--buffer-size 5000 --batch-size 32 --seed 3"
RUNS = {  # name: (script, arguments)
    "sac": ("sac", OFF_POLICY),
    "sac_2envs": ("sac", OFF_POLICY.replace("--seed 3", "--seed 4 --num-envs 2 --updates-per-step 0.5")),
    "td3": ("td3", OFF_POLICY),
    "ddpg": ("ddpg", OFF_POLICY),
    "ddpg_ou": ("ddpg", OFF_POLICY + " --noise ou"),
    "ac": ("ac", "--total-timesteps 3200 --num-envs 4 --eval-every 1600 --eval-episodes 2 --seed 3"),
    "a2c": ("a2c", "--total-timesteps 3200 --num-envs 4 --eval-every 1600 --eval-episodes 2 --seed 3"),
    "a2c_pendulum": ("a2c", "--env-id Pendulum-v1 --normalize-obs --total-timesteps 3200 --num-envs 4 "
                            "--eval-every 1600 --eval-episodes 2 --seed 3"),
    "alphazero": ("alphazero", "--total-games 64 --num-envs 16 --simulations 8 --eval-every 32 --eval-games 4 "
                               "--rollouts 4 --checkpoint-every 32 --seed 3"),
    "regulator_1d": ("regulator_1d", "--total-timesteps 6400 --eval-every 3200 --seed 3"),
}


def run(name: str) -> str:
    script, arguments = RUNS[name]
    folder = tempfile.mkdtemp()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, f"{script}.py"), "--no-cuda", *arguments.split()],
                          cwd=folder, capture_output=True, text=True, env=env)
    found = glob.glob(os.path.join(folder, "runs", "*", "*.pt"))
    if proc.returncode != 0 or not found:
        sys.exit(f"error: {name}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return found[0]


def normalised(checkpoint: dict) -> dict:
    """The harness's checkpoint layout ("step", "counters", "ranks") and the older ones, as one flat dict: the
    counters by name, and the random states as (python, numpy key and position, torch)."""
    out = dict(checkpoint)
    rng = out.pop("ranks")[0]["rng"] if "ranks" in out else out.pop("rng", None)
    if rng is None:  # regulator_1d saves no random states
        return out
    out.update(out.pop("counters", {}))
    if "action_space" in rng:  # older td3/ddpg kept it with the other random states
        out["action_space_rng"] = rng["action_space"]
    numpy = rng["numpy"]
    key, pos = (numpy["state"]["key"], numpy["state"]["pos"]) if isinstance(numpy, dict) else (numpy[1], numpy[2])
    out["rng"] = {"python": [rng["python"][0], list(rng["python"][1]), rng["python"][2]],
                  "numpy": [list(np.asarray(key).tolist()), pos], "torch": rng["torch"]}
    for name in ("finished", "recent_returns", "world_size"):  # new in the harness's layout
        out.pop(name, None)
    return out


def differences(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in one" for k in set(a) ^ set(b)]
        return out + [d for k in sorted(set(a) & set(b), key=str) for d in differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} and {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [f"{path}: tensors differ"]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return [] if np.array_equal(np.asarray(a), np.asarray(b)) else [f"{path}: arrays differ"]
    return [] if a == b or (a != a and b != b) else [f"{path}: {a!r} != {b!r}"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", metavar="DIR", help="write <DIR>/<name>.pt for every run")
    group.add_argument("--compare", metavar="DIR", help="run again and compare with <DIR>/<name>.pt")
    parser.add_argument("--only", nargs="*", default=list(RUNS), help="these runs only")
    parser.add_argument("--ignore", nargs="*", default=[], help="checkpoint keys not compared (e.g. a renamed one)")
    cli = parser.parse_args()
    failed = 0
    for name in cli.only:
        path = run(name)
        if cli.save:
            os.makedirs(cli.save, exist_ok=True)
            shutil.copy(path, os.path.join(cli.save, f"{name}.pt"))
            print(f"{name}: saved", flush=True)
            continue
        before = torch.load(os.path.join(cli.compare, f"{name}.pt"), weights_only=True)
        after = torch.load(path, weights_only=True)
        before, after = normalised(before), normalised(after)
        for key in cli.ignore:
            before.pop(key, None), after.pop(key, None)
        diffs = differences(before, after)
        failed += bool(diffs)
        print(f"{name}: {'bit-identical' if not diffs else 'DIFFERENT: ' + '; '.join(diffs[:8])}", flush=True)
    sys.exit(1 if failed else 0)
