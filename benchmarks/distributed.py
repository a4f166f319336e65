"""1 and 2 processes (torchrun, issue 15) at the same budget: a2c.py's steps/s, alphazero.py's searched positions/s.

    python benchmarks/distributed.py                  # a2c: 100k steps per setting, about 2-3 minutes on 2 cores
    python benchmarks/distributed.py --steps 20000    # shorter
    python benchmarks/distributed.py --part alphazero --games 128 --connect4-games 64   # tic-tac-toe, Connect Four

Each setting runs as a user would (`python a2c.py ...` or `python -m torch.distributed.run --standalone
--nproc-per-node 2 a2c.py ...`) one after the other, CPU only, one torch thread per process, evaluations only at the
end (--eval-every = the budget). Reported: the script's own SPS (rank 0's steps of all ranks over its training time,
evaluations excluded), the wall time of the whole command (start-up and final evaluation included) and its CPU time
(user + system of all its processes). Writes benchmarks/results/distributed.json.

--part alphazero: tic-tac-toe (--games) and Connect Four (--connect4-games) self-play games in all, with 1 process x
64 games at once, 2 processes x 32 (the same games at once) and 2 x 64; evaluation only at the end with 2 games per
opponent. Reported: the script's searched positions per second (all ranks' searches over rank 0's self-play time,
the waits for the other rank included), the command's wall and CPU time. Writes
benchmarks/results/distributed_alphazero.json.
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


def launch(processes: int, script: str, *args: str) -> tuple[str, str, float, float]:
    """`python script args` (under torchrun with 2+ processes), CPU only, one thread a process: (command as a
    user types it, stdout, wall seconds, CPU seconds of all its processes). One `error:` line if it fails."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [*launcher, os.path.join(ROOT, script), "--no-cuda", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tempfile.mkdtemp(prefix="dist_"))
    wall, after = time.time() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    typed = " ".join("python" if c == sys.executable else c for c in command).replace(ROOT + "/", "")
    return typed, result.stdout, round(wall, 1), round(cpu, 1)


def run(processes: int, num_envs: int, steps: int, seed: int) -> dict:
    command, stdout, wall, cpu = launch(processes, "a2c.py", "--seed", str(seed), "--num-envs", str(num_envs),
                                        "--total-timesteps", str(steps), "--eval-every", str(steps),
                                        "--checkpoint-every", "0")
    finished = re.search(r"finished ([\d,]+) steps .*\(([\d,]+) steps/s.*final evaluation return ([\d.]+)", stdout)
    return {"processes": processes, "num_envs": num_envs, "steps": int(finished[1].replace(",", "")),
            "sps": int(finished[2].replace(",", "")), "final_eval_return": float(finished[3]),
            "wall_s": wall, "cpu_s": cpu, "command": command}



AZ_SETTINGS = [("1 process x 64 games", 1, 64), ("2 processes x 32 games", 2, 32), ("2 processes x 64 games", 2, 64)]


def run_alphazero(game: str, processes: int, num_envs: int, games: int, seed: int) -> dict:
    command, stdout, wall, cpu = launch(processes, "alphazero.py", "--game", game, "--seed", str(seed), "--num-envs",
                                        str(num_envs), "--total-games", str(games), "--eval-every", str(games),
                                        "--eval-games", "2", "--rollouts", "10", "--checkpoint-every", "0")
    finished = re.search(r"finished ([\d,]+) self-play games .*\(([\d,]+) positions searched/s", stdout)
    return {"game": game, "processes": processes, "num_envs": num_envs, "games": int(finished[1].replace(",", "")),
            "positions_per_s": int(finished[2].replace(",", "")), "wall_s": wall, "cpu_s": cpu, "command": command}



def main_alphazero(cli: argparse.Namespace):
    rows, load_before = [], os.getloadavg()
    print(f"{'game':10s} {'setting':24s} {'pos/s':>7s} {'wall s':>7s} {'CPU s':>6s}")
    for game, games in (("tictactoe", cli.games), ("connect4", cli.connect4_games)):
        for name, processes, num_envs in AZ_SETTINGS:
            rows.append({"setting": name, **run_alphazero(game, processes, num_envs, games, cli.seed)})
            r = rows[-1]
            print(f"{game:10s} {name:24s} {r['positions_per_s']:7d} {r['wall_s']:7.1f} {r['cpu_s']:6.1f}", flush=True)
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benchmarks", "results", "distributed_alphazero.json"), "w") as f:
        json.dump({"cpus": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(), "rows": rows},
                  f, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a2c", "alphazero"], default="a2c")
    parser.add_argument("--steps", type=int, default=100_000, help="a2c: environment steps per setting")
    parser.add_argument("--games", type=int, default=256, help="alphazero: tic-tac-toe games per setting")
    parser.add_argument("--connect4-games", type=int, default=128, help="alphazero: Connect Four games per setting")
    parser.add_argument("--seed", type=int, default=1)
    cli = parser.parse_args()
    if cli.part == "alphazero":
        main_alphazero(cli)
        sys.exit(0)
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
