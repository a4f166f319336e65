"""The published-benchmark matrix: scripts x env ids x seeds, as a resumable queue of runs, K at a time.

    python benchmarks/mujoco_matrix.py           # td3 and sac, Hopper/HalfCheetah/Walker2d-v4, seeds 1-3, 300k steps
    python benchmarks/mujoco_matrix.py --report  # the README's table and figure from whatever has finished

Each run is `python <script>.py --env-id E --seed k --total-timesteps T --checkpoint-every C --threads 1` in
its own folder under --runs-dir. Give the same command again after an interruption (Ctrl-C, a reboot, another
day): finished runs (their result file exists) are skipped, unfinished ones continue from their checkpoint with
the script's --resume, and the rest start. As each run finishes, benchmarks/results/mujoco/<script>_<env>_seed<k>
.json is written (with --commit, committed at once): the script, env id, seed, steps, the commits the run was
trained at, its CPU seconds, and "eval" as [step, mean deterministic return over the script's evaluation
episodes] from the run's TensorBoard events.

--report reads those files: per env, mean ± std across seeds at 100k and 300k, where a seed's value at a mark is
the mean of its evaluations from mark - 10k to mark (three evaluations at the default --eval-every 5000), beside
the TD3 paper's figures (Fujimoto et al. 2018, 10 seeds, read from its learning curves); the figure of mean
curves with a ± std band per script and the paper's mean ± std marked; and the interquartile mean over the
three envs with stratified-bootstrap 95% intervals (rliable; pip install rliable: a benchmark-only package).

Not named mujoco.py: run from benchmarks/, that name would hide the mujoco package from every script there.
"""

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "mujoco")
PAPER = {  # TD3 paper, Fujimoto et al. 2018, Figure 3: mean ± std over 10 seeds, MuJoCo v1 tasks
    "Hopper-v4": {100_000: (660, 752), 300_000: (2410, 900), 1_000_000: (3391, 378)},
    "HalfCheetah-v4": {100_000: (5514, 554), 300_000: (7697, 727), 1_000_000: (9567, 833)},
    "Walker2d-v4": {100_000: (770, 586), 300_000: (3336, 957), 1_000_000: (4413, 1030)},
}


def name_of(script: str, env_id: str, seed: int) -> str:
    return f"{script}_{env_id.split('-')[0].lower()}_seed{seed}"


def git(*args: str, cwd: str = ROOT) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def eval_curve(run_dir: str) -> list[list[float]]:
    """[step, value] of eval/episodic_return; where a resume rewrote a step, its latest value."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    points = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.tag == "eval/episodic_return":
                    v = value.simple_value if value.HasField("simple_value") else float(value.tensor.float_val[0])
                    if event.step not in points or event.wall_time >= points[event.step][0]:
                        points[event.step] = (event.wall_time, v)
    return [[step, points[step][1]] for step in sorted(points)]


class Run:
    """One cell of the matrix: its folder, its command, its state on disk."""

    def __init__(self, cli, script: str, env_id: str, seed: int):
        self.cli, self.script, self.env_id, self.seed = cli, script, env_id, seed
        self.name = name_of(script, env_id, seed)
        self.folder = os.path.join(cli.runs_dir, self.name)
        self.result = os.path.join(cli.results, self.name + ".json")
        self.state_path = os.path.join(self.folder, "runner.json")  # CPU seconds and commits over resumes

    def checkpoint(self) -> str | None:
        found = sorted(glob.glob(os.path.join(self.folder, "runs", "*", "checkpoint.pt")))
        return found[-1] if found else None

    def state(self) -> dict:
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                return json.load(f)
        return {"cpu_seconds": 0.0, "commits": []}

    def save_state(self, state: dict):
        with open(self.state_path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(self.state_path + ".tmp", self.state_path)

    def command(self) -> list[str]:
        base = [sys.executable, os.path.join(ROOT, f"{self.script}.py"), "--checkpoint-every",
                str(self.cli.checkpoint_every), "--threads", "1", "--no-cuda"]
        if self.checkpoint():
            return base + ["--resume", self.checkpoint()]
        return base + ["--env-id", self.env_id, "--seed", str(self.seed), "--total-timesteps",
                       str(self.cli.total_timesteps), *self.cli.extra]

    def start(self) -> subprocess.Popen:
        os.makedirs(self.folder, exist_ok=True)
        state = self.state()  # a process whose end no runner saw (killed with it, a reboot): its last CPU reading
        state["cpu_seconds"], state["cpu_running"] = state["cpu_seconds"] + state.get("cpu_running", 0.0), 0.0
        commit = git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no")
                                              else "")
        if commit not in state["commits"]:
            state["commits"].append(commit)
        self.save_state(state)
        self.log = open(os.path.join(self.folder, "log.txt"), "a")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.resumed = self.checkpoint() is not None
        process = subprocess.Popen(self.command(), cwd=self.folder, stdout=self.log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)  # the runner forwards Ctrl-C itself, once
        try:  # lowest priority: in a session of its own, Linux's autogroup ignores `nice` but for the group's own
            with open(f"/proc/{process.pid}/autogroup", "w") as f:
                f.write("19")
        except OSError:  # not Linux, or no autogroup scheduling: nothing to lower
            pass
        return process

    def running_cpu(self, pid: int):
        """Save the running process's CPU seconds so far (/proc/<pid>/stat), so a runner killed with it loses
        at most a minute of the count."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:  # not Linux, or already gone
            return
        state = self.state()
        state["cpu_running"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        self.save_state(state)

    def finish(self, cpu_seconds: float) -> bool:
        """Add this process's CPU time; if the run is complete, write its result file. True if written."""
        self.log.close()
        state = self.state()
        state["cpu_seconds"], state["cpu_running"] = state["cpu_seconds"] + cpu_seconds, 0.0
        self.save_state(state)
        path = self.checkpoint()
        if path is None:
            return False
        import torch
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        steps = checkpoint["global_step"]
        if steps < checkpoint["args"]["total_timesteps"] // checkpoint["args"]["num_envs"] * \
                checkpoint["args"]["num_envs"]:
            return False
        result = {"script": self.script, "env_id": self.env_id, "seed": self.seed, "total_timesteps": steps,
                  "commits": state["commits"], "commit": state["commits"][0], "cpu_seconds": round(
                      state["cpu_seconds"], 1), "args": checkpoint["args"], "eval": eval_curve(os.path.dirname(path)),
                  "command": "python benchmarks/mujoco_matrix.py " + " ".join(self.cli.argv)}
        os.makedirs(self.cli.results, exist_ok=True)
        with open(self.result + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(self.result + ".tmp", self.result)
        if self.cli.commit:
            repo = os.path.dirname(self.result)  # the message names the results folder from the repository's top
            top = git("rev-parse", "--show-toplevel", cwd=repo)
            folder = os.path.relpath(os.path.realpath(repo), os.path.realpath(top))
            message = f"{folder}: {self.name} ({steps:,} steps)"
            for _ in range(30):  # another git command may hold the index for a moment: try again
                add = subprocess.run(["git", "add", self.result], cwd=repo, capture_output=True)
                if add.returncode == 0 and subprocess.run(["git", "commit", "-q", "-m", message, "--", self.result],
                                                          cwd=repo, capture_output=True).returncode == 0:
                    break
                time.sleep(2)
            else:
                print(f"warning: could not commit {self.result}", flush=True)
        return True


def run_matrix(cli):
    runs = [Run(cli, script, env_id, seed) for seed in cli.seeds for env_id in cli.env_ids for script in cli.scripts]
    todo = [r for r in runs if not os.path.exists(r.result)]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs finished; {len(todo)} to go, {cli.jobs} at a time; "
          f"run folders in {cli.runs_dir}", flush=True)
    running: dict[int, Run] = {}
    stopping, failed = [], []

    def on_signal(signum, frame):  # each script checkpoints and stops on SIGINT; nothing new starts
        if not stopping:
            print("\nstopping: every running script checkpoints and exits; the same command resumes", flush=True)
        stopping.append(signum)
        for pid in running:
            os.kill(pid, signal.SIGINT if len(stopping) == 1 else signal.SIGKILL)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, on_signal)
    next_reading = time.time() + cli.cpu_every
    while (todo and not stopping) or running:
        while todo and not stopping and len(running) < cli.jobs:
            r = todo.pop(0)
            running[r.start().pid] = r
            print(f"{'resuming' if r.resumed else 'starting'} {r.name}  (log: {r.folder}/log.txt)", flush=True)
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == 0:  # all still running: every --cpu-every seconds, note their CPU time so far
            if time.time() >= next_reading:
                for running_pid, r in running.items():
                    r.running_cpu(running_pid)
                next_reading = time.time() + cli.cpu_every
            time.sleep(0.5)
            continue
        r = running.pop(pid, None)
        if r is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        done = r.finish(usage.ru_utime + usage.ru_stime)
        finished = sum(os.path.exists(x.result) for x in runs)
        if done:
            print(f"finished {r.name}: {r.result}  [{finished}/{len(runs)} runs done]", flush=True)
        elif not stopping or code not in (0, 130, 143, -2, -9, 137):
            failed.append(r.name)
            print(f"error: {r.name} exited with {code} unfinished; see {r.folder}/log.txt", flush=True)
        else:
            print(f"stopped {r.name} (checkpointed; the same command resumes it)", flush=True)
    if stopping:
        sys.exit(130)
    sys.exit(1 if failed else 0)


def report(cli):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    results = []
    for path in sorted(glob.glob(os.path.join(cli.results, "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    if not results:
        sys.exit(f"error: no result files in {cli.results} yet")

    def at(r: dict, mark: int) -> float | None:  # mean of the evaluations in [mark - 10k, mark]
        values = [v for step, v in r["eval"] if mark - 10_000 <= step <= mark]
        return float(np.mean(values)) if values and r["total_timesteps"] >= mark else None

    envs = [e for e in PAPER if any(r["env_id"] == e for r in results)]
    if not envs:
        sys.exit(f"error: no result files of the paper's tasks ({', '.join(PAPER)}) in {cli.results} yet")
    scripts = sorted({r["script"] for r in results})
    marks = [m for m in (100_000, 300_000, 1_000_000) if any(r["total_timesteps"] >= m for r in results)]
    lines = ["| env | " + " | ".join(f"{m // 1000}k: {s}" for m in marks for s in scripts + ["TD3 paper"]) + " |",
             "|---|" + "---|" * (len(marks) * (len(scripts) + 1))]
    scores = {s: {} for s in scripts}
    for env in envs:
        cells = []
        for m in marks:
            for s in scripts:
                values = [v for r in results if r["env_id"] == env and r["script"] == s and (v := at(r, m)) is not None]
                scores[s].setdefault(m, {})[env] = values
                spread = f" ± {np.std(values):.0f}" if len(values) > 1 else ""  # no spread to show of one seed
                cells.append(f"{np.mean(values):.0f}{spread} (n={len(values)})" if values else "-")
            cells.append("{} ± {}".format(*PAPER[env][m]))
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    print("\n| run | " + " | ".join(f"{m // 1000}k" for m in marks) + " | last | best (step) | CPU-min |")
    print("|---|" + "---|" * (len(marks) + 3))
    rank = {env: i for i, env in enumerate(envs)}  # the table's order of envs, then script and seed
    for r in sorted(results, key=lambda r: (rank.get(r["env_id"], len(envs)), r["env_id"], r["script"], r["seed"])):
        best_step, best = max(r["eval"], key=lambda point: point[1])
        cells = [f"{v:.0f}" if (v := at(r, m)) is not None else "-" for m in marks]
        cpu = f"{r['cpu_seconds'] / 60:.0f}" if "cpu_seconds" in r else "-"
        print(f"| {name_of(r['script'], r['env_id'], r['seed'])} | " + " | ".join(cells) +
              f" | {r['eval'][-1][1]:.0f} | {best:.0f} ({best_step // 1000:.0f}k) | {cpu} |")

    fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 4), squeeze=False)
    colors = {"td3": "tab:red", "sac": "tab:blue", "ddpg": "tab:green"}
    for ax, env in zip(axes[0], envs):
        for s in scripts:
            curves = [dict(map(tuple, r["eval"])) for r in results if r["env_id"] == env and r["script"] == s]
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            values = np.array([[c[x] for x in steps] for c in curves])
            mean, std = values.mean(0), values.std(0)
            ax.plot(steps, mean, color=colors.get(s), label=f"{s}.py ({len(curves)} seeds)")
            ax.fill_between(steps, mean - std, mean + std, color=colors.get(s), alpha=0.2)
        for m, (mu, sd) in PAPER[env].items():
            if m <= max(r["total_timesteps"] for r in results):
                ax.errorbar([m], [mu], yerr=[sd], fmt="ks", capsize=4, ms=4,
                            label="TD3 paper (mean ± std)" if m == min(PAPER[env]) else None)
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("deterministic evaluation return\n(mean ± std over seeds)")
    fig.tight_layout()
    figure = os.path.normpath(cli.results) + ".png"  # beside its folder: results/mujoco.png for results/mujoco
    fig.savefig(figure, dpi=100)
    print(f"figure: {os.path.relpath(figure, ROOT)}")

    try:
        from rliable import library as rly
        from rliable import metrics
    except ImportError:
        print("(the aggregate needs rliable: pip install rliable)")
        return
    for m in marks:  # normalised by the paper's mean at the same mark, so that the three envs add up
        table = {}
        for s in scripts:
            n = min((len(scores[s][m][e]) for e in envs), default=0)
            if n:
                table[s] = np.array([[scores[s][m][e][i] / PAPER[e][m][0] for e in envs] for i in range(n)])
        if table:
            point, interval = rly.get_interval_estimates(table, lambda x: np.array([metrics.aggregate_iqm(x)]),
                                                         reps=50_000)
            for s in table:
                print(f"IQM at {m // 1000}k, {s}.py, return / TD3 paper's mean: {point[s][0]:.2f} "
                      f"(95% CI {interval[s][0][0]:.2f}-{interval[s][1][0]:.2f}, {len(table[s])} seeds x "
                      f"{len(envs)} envs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scripts", nargs="+", default=["td3", "sac"], help="scripts to run (default: td3 sac)")
    parser.add_argument("--env-ids", nargs="+", default=list(PAPER), help="env ids (default: the three MuJoCo tasks)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds (default: 1 2 3)")
    parser.add_argument("--total-timesteps", type=int, default=300_000, help="env steps per run (default: 300000)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="runs at a time, one core each (default: the CPU count less one, for other work)")
    parser.add_argument("--checkpoint-every", type=int, default=20_000, help="each run's --checkpoint-every")
    parser.add_argument("--runs-dir", default=os.path.expanduser("~/duet-mujoco"),
                        help="the runs' folders (default: ~/duet-mujoco, outside the checkout)")
    parser.add_argument("--results", default=RESULTS, help="where result files go (default: benchmarks/results/mujoco)")
    parser.add_argument("--cpu-every", type=float, default=60.0,
                        help="seconds between readings of each running run's CPU time (kept if the runner is killed)")
    parser.add_argument("--commit", action="store_true", help="git-commit each result file as its run finishes")
    parser.add_argument("--report", action="store_true",
                        help="print the table and draw the figure (<results>.png); run nothing")
    cli, extra = parser.parse_known_args()
    cli.extra, cli.argv = extra, sys.argv[1:]  # anything else goes to each script as it starts (e.g. --eval-every)
    if cli.jobs < 1 or cli.checkpoint_every < 1:
        sys.exit("error: --jobs and --checkpoint-every must be positive")
    missing = [s for s in cli.scripts if not os.path.exists(os.path.join(ROOT, f"{s}.py"))]
    if missing:
        sys.exit(f"error: no such script: {', '.join(missing)}")
    cli.runs_dir, cli.results = os.path.abspath(cli.runs_dir), os.path.abspath(cli.results)
    report(cli) if cli.report else run_matrix(cli)
