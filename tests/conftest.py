"""Test set-up shared by every test file: one torch thread per process, and each test in its own folder."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # two pytest workers on two cores: never let them fight over threads


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Scripts write runs/ and videos/ into the working directory: give each test a fresh one."""
    monkeypatch.chdir(tmp_path)
