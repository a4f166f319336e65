"""The GPU kit (benchmarks/gpu.py) end to end on a CPU: `--dry-run` runs every phase with tiny budgets, and the JSON
has each phase with its figures or a recorded error (on a CPU, --cudagraphs is refused: an error the kit records
and goes past). About a minute on two free cores."""

import json
import math
import os
import subprocess
import sys

from helpers import REPO

OFFPOLICY = [f"{script}/{mode}" for script in ("sac", "td3") for mode in ("eager", "cudagraphs", "compile")]
SMALL = ["regulator_1d", "ac", "a2c", "alphazero"]


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_dry_run_records_every_phase(tmp_path):
    path = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("OUT", None)
    # a generous budget: on a loaded machine the kit's 240 s would cut the last phases, and this test is of the flow
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu.py"), "--dry-run", "--json",
                           str(path), "--budget", "600"], capture_output=True, text=True, timeout=700, env=env,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(path.read_text())
    phases = report["phases"]
    assert list(phases) == ["install", "info", *OFFPOLICY, *SMALL, "tests"]
    assert phases["install"]["status"].startswith("skipped")
    assert phases["info"]["status"] == "ok" and phases["info"]["torch"], phases["info"]
    for name in OFFPOLICY:
        result = phases[name]
        if name.endswith("cudagraphs"):  # no CUDA here: the script's own check refuses it, the kit records that
            assert "--cudagraphs needs" in result["status"], result
            continue
        assert result["status"] == "ok", (name, result)
        for key in ("random_phase_sps", "warmup_s", "learning_sps"):
            assert positive(result[key]), (name, key, result)
        assert result["steady_steps"] > 0 and positive(result["steady_s"]), result
        if name.endswith("eager"):  # one evaluation, timed apart from the learning steps
            assert len(result["evaluations"]) == 1 and positive(result["eval_s_per_episode"]), result
        assert 0 < result["eval_share_at_defaults"] < 1, result  # compile: eager's evaluation, its own speed
    for name in SMALL:
        result = phases[name]
        assert result["status"] == "ok", (name, result)
        assert positive(result["cpu"]["sps"]) and positive(result["cuda"]["sps"]), result
        assert positive(result["cuda_over_cpu"])
    assert phases["tests"]["status"] == "ok" and phases["tests"]["counts"].get("skipped", 0) > 0, phases["tests"]
    table = path.with_suffix(".md").read_text()
    assert "| sac | eager |" in table and "| alphazero" in table and "tests/test_gpu.py" in table
    assert table == report["markdown"] + "\n" and table.strip() in proc.stdout
    assert report["kit"]["wall_s"] < report["kit"]["budget_s"]
