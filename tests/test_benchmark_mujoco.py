"""benchmarks/mujoco_matrix.py, the resumable matrix runner, on a tiny matrix (td3 on Pendulum, two seeds, 1000 steps):
interrupted during its second run, then given the same command again, it finishes without redoing the first."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import torch
from helpers import REPO

RUNNER = os.path.join(REPO, "benchmarks", "mujoco_matrix.py")


def command(tmp_path) -> list[str]:
    return [sys.executable, RUNNER, "--scripts", "td3", "--env-ids", "Pendulum-v1", "--seeds", "1", "2",
            "--total-timesteps", "1000", "--checkpoint-every", "100", "--jobs", "1", "--runs-dir",
            str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--learning-starts", "100",
            "--eval-every", "100", "--eval-episodes", "1", "--batch-size", "16"]


def test_interrupted_matrix_resumes_and_skips_finished_runs(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    first, second = tmp_path / "results" / "td3_pendulum_seed1.json", tmp_path / "results" / "td3_pendulum_seed2.json"
    proc = subprocess.Popen(command(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the first run done, the second one checkpointed
        if first.exists() and glob.glob(str(tmp_path / "runs" / "td3_pendulum_seed2" / "runs" / "*" / "checkpoint.pt")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stopped td3_pendulum_seed2 (checkpointed; the same command resumes it)" in out, out
    assert first.exists() and not second.exists()
    before = first.read_bytes()
    (checkpoint,) = glob.glob(str(tmp_path / "runs" / "td3_pendulum_seed2" / "runs" / "*" / "checkpoint.pt"))
    interrupted_at = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 0 < interrupted_at < 1000

    result = subprocess.run(command(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1 of 2 runs finished; 1 to go")
    assert lines[1].startswith("resuming td3_pendulum_seed2") and "starting" not in result.stdout
    assert first.read_bytes() == before  # the finished run was not run again
    log = open(tmp_path / "runs" / "td3_pendulum_seed2" / "log.txt").read()
    assert f"resuming {checkpoint} at step {interrupted_at:,}" in log
    for path, seed in ((first, 1), (second, 2)):
        data = json.loads(path.read_text())
        assert data["script"] == "td3" and data["env_id"] == "Pendulum-v1" and data["seed"] == seed
        assert data["total_timesteps"] == 1000 and data["cpu_seconds"] > 0 and data["commit"]
        assert [step for step, _ in data["eval"]] == list(range(100, 1001, 100))  # every evaluation, once
        assert all(isinstance(value, float) for _, value in data["eval"])
    final = float(log.split("final evaluation return ")[-1].split()[0].replace(",", ""))
    assert round(json.loads(second.read_text())["eval"][-1][1], 1) == final  # the script's own closing line


def test_report_takes_each_seed_at_a_mark_as_the_mean_of_its_last_10k_steps(tmp_path):
    """Seed k's evaluation at step s is 1000 k + s / 1000: its value at 100k is the mean of the evaluations at 90k,
    95k and 100k, 1000 k + 95; over seeds 1 and 2 that is 1595 ± 500 (the population std), at 300k 1795 ± 500."""
    results = tmp_path / "results"
    results.mkdir()
    for seed in (1, 2):
        curve = [[step, 1000.0 * seed + step / 1000] for step in range(5000, 300_001, 5000)]
        (results / f"td3_hopper_seed{seed}.json").write_text(json.dumps(
            {"script": "td3", "env_id": "Hopper-v4", "seed": seed, "total_timesteps": 300_000, "eval": curve}))
    result = subprocess.run([sys.executable, RUNNER, "--report", "--results", str(results)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| Hopper-v4 |")]
    assert rows == ["| Hopper-v4 | 1595 ± 500 (n=2) | 660 ± 752 | 1795 ± 500 (n=2) | 2410 ± 900 |"]
    runs = [line for line in result.stdout.splitlines() if line.startswith("| td3_hopper_seed")]
    assert runs == ["| td3_hopper_seed1 | 1095 | 1295 | 1300 | 1300 (300k) | - |",  # last and best: 1000 + 300
                    "| td3_hopper_seed2 | 2095 | 2295 | 2300 | 2300 (300k) | - |"]
    assert (tmp_path / "results.png").stat().st_size > 10_000  # named after the results folder it draws
    iqm = [line for line in result.stdout.splitlines() if line.startswith("IQM at 300k, td3.py")]
    assert iqm == [] or iqm[0].startswith(f"IQM at 300k, td3.py, return / TD3 paper's mean: {1795 / 2410:.2f} ")


def test_a_runner_killed_with_its_run_keeps_the_cpu_time_the_run_had_spent(tmp_path):
    """A reboot, simulated: the runner and its run killed at once (SIGKILL, no checkpoint on the way out). The CPU
    time the runner last read from /proc is added when the run starts again, so the result's cpu_seconds covers both
    processes: at least the reading plus the second process's share."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    argv = command(tmp_path)[:] + ["--cpu-every", "0.5"]
    argv[argv.index("--seeds") + 1: argv.index("--seeds") + 3] = ["1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    state_path, reading, deadline = tmp_path / "runs" / "td3_pendulum_seed1" / "runner.json", 0.0, time.time() + 300
    while time.time() < deadline and proc.poll() is None and reading < 1.0:
        if state_path.exists():
            reading = json.loads(state_path.read_text()).get("cpu_running", 0.0)
        time.sleep(0.1)
    assert reading >= 1.0, "no CPU reading of the running run"
    children = subprocess.run(["pgrep", "-f", "td3.py --checkpoint-every 100"], capture_output=True, text=True)
    proc.kill()
    for pid in children.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = json.loads(state_path.read_text())
    assert saved["cpu_seconds"] == 0.0 and saved["cpu_running"] >= reading
    proc, counted = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env), 0.0
    while proc.poll() is None and not counted:  # the first count the resumed run's state shows: the lost process's
        counted = json.loads(state_path.read_text())["cpu_seconds"]
    assert counted == saved["cpu_running"]
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    data = json.loads((tmp_path / "results" / "td3_pendulum_seed1.json").read_text())
    assert data["cpu_seconds"] > round(saved["cpu_running"], 1)
    assert json.loads(state_path.read_text())["cpu_running"] == 0.0


def test_report_of_one_seed_shows_no_spread(tmp_path):
    """A cell of one seed is its value and n=1: a ± 0 would read as a measured spread."""
    results = tmp_path / "results"
    results.mkdir()
    curve = [[step, 2000.0] for step in range(5000, 300_001, 5000)]
    (results / "sac_walker2d_seed1.json").write_text(json.dumps(
        {"script": "sac", "env_id": "Walker2d-v4", "seed": 1, "total_timesteps": 300_000, "eval": curve}))
    result = subprocess.run([sys.executable, RUNNER, "--report", "--results", str(results)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| Walker2d-v4 |")]
    assert rows == ["| Walker2d-v4 | 2000 (n=1) | 770 ± 586 | 2000 (n=1) | 3336 ± 957 |"]


def test_commit_names_the_results_folder_it_wrote_to(tmp_path):
    """With --commit each result file is committed as its run ends, in a message naming its own results folder
    (a second matrix, e.g. with the paper's settings, writes to another folder than benchmarks/results/mujoco)."""
    repo = tmp_path / "repo"
    for args in (["init", "-q", str(repo)], ["-C", str(repo), "config", "user.email", "t@t"],
                 ["-C", str(repo), "config", "user.name", "t"], ["-C", str(repo), "commit", "-q", "--allow-empty",
                                                                 "-m", "start"]):
        subprocess.run(["git", *args], check=True, capture_output=True)
    cli = command(tmp_path)
    cli[cli.index("--seeds") + 1:cli.index("--total-timesteps")] = ["1"]
    cli[cli.index("--total-timesteps") + 1] = "200"
    cli[cli.index("--results") + 1] = str(repo / "benchmarks" / "results" / "mujoco_paper_settings")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([*cli, "--commit"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    log = subprocess.run(["git", "-C", str(repo), "log", "-1", "--format=%s", "--name-only"], capture_output=True,
                         text=True).stdout.split()
    assert " ".join(log) == "benchmarks/results/mujoco_paper_settings: td3_pendulum_seed1 (200 steps) " \
                            "benchmarks/results/mujoco_paper_settings/td3_pendulum_seed1.json"
