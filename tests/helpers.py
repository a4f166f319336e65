"""Helpers for tests: run a script as a user would, and read its TensorBoard events back."""

import glob
import os
import socket
import subprocess
import sys
import time

import torch
import torch.multiprocessing
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python <script> <args>` in the current directory, one torch thread, output captured."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run folder, as {tag: [(step, value), ...]}."""
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def read_tags(run_dir: str) -> dict[str, list[str]]:
    accumulator = EventAccumulator(run_dir)
    accumulator.Reload()
    return accumulator.Tags()


def only_run_dir() -> str:
    """The single run folder under ./runs (tests run in a fresh directory each)."""
    runs = glob.glob("runs/*")
    assert len(runs) == 1, runs
    return runs[0]


def spawn_ranks(rank_main, *args, world: int = 2, timeout: float = 60) -> list[dict]:
    """rank_main(rank, port, *args) in `world` spawned processes, as torchrun's ranks on a free local port; each
    saves what it saw to rank<r>.pt, returned in rank order. Fails if a rank still runs after `timeout` s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = torch.multiprocessing.get_context("spawn")
    processes = [context.Process(target=rank_main, args=(rank, port, *args)) for rank in range(world)]
    for process in processes:
        process.start()
    deadline = time.time() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.time()))
    hung = [rank for rank, process in enumerate(processes) if process.is_alive()]
    for rank in hung:
        processes[rank].kill()
    assert not hung, f"ranks {hung} still running after {timeout} s"
    return [torch.load(f"rank{rank}.pt", weights_only=True) for rank in range(world)]
