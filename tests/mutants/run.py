"""Mutation check: break one line of a script at a time and see a fast test fail.

Each tests/mutants/<script>.py holds MUTANTS, a list of (name, old, new, tests): `old` must occur exactly once in
<script>.py; it is replaced by `new` in a throw-away copy of the repository, and `tests` (pytest arguments, e.g.
"tests/test_sac.py -k wiring") runs there. A mutant is caught when pytest fails. The working tree is never touched.

    python tests/mutants/run.py sac            # one script's mutants
    python tests/mutants/run.py                # every script's
    python tests/mutants/run.py sac -k target  # only the mutants whose name contains "target"
    python tests/mutants/run.py benchmarks/alphazero  # a benchmark's: tests/mutants/benchmarks/alphazero.py

Not part of the test suite (pytest collects test_*.py only): it takes minutes, a pytest run per mutant.
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ["regulator_1d", "ac", "a2c", "a3c", "ddpg", "td3", "sac", "alphazero", "benchmarks/alphazero",
           "benchmarks/mujoco_matrix"]


def load_mutants(script: str) -> list[tuple[str, str, str, str]]:
    spec = importlib.util.spec_from_file_location(f"mutants_{script}", os.path.join(REPO, "tests", "mutants",
                                                                                      f"{script}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MUTANTS


def run(script: str, only: str | None, timeout: float) -> list[tuple[str, str, float]]:
    source_path = os.path.join(REPO, f"{script}.py")
    source = open(source_path).read()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "repo")
        tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split()
        for path in tracked:
            if os.path.isfile(os.path.join(REPO, path)):
                os.makedirs(os.path.dirname(os.path.join(copy, path)), exist_ok=True)
                shutil.copy2(os.path.join(REPO, path), os.path.join(copy, path))
        for name, old, new, tests in load_mutants(script):
            if only and only not in name:
                continue
            if source.count(old) != 1:
                results.append((name, f"STALE (old text found {source.count(old)} times)", 0.0))
                continue
            with open(os.path.join(copy, f"{script}.py"), "w") as f:
                f.write(source.replace(old, new))
            start = time.time()
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            try:
                proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider",
                                       *tests.split()], cwd=copy, capture_output=True, text=True, timeout=timeout,
                                      env=env)
                outcome = "caught" if proc.returncode != 0 else "SURVIVED"
            except subprocess.TimeoutExpired:
                outcome = "caught (timeout)"
            results.append((name, outcome, time.time() - start))
            print(f"{script:>12} {outcome:<18} {time.time() - start:6.1f}s  {name}", flush=True)
        with open(os.path.join(copy, f"{script}.py"), "w") as f:
            f.write(source)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", default=SCRIPTS)
    parser.add_argument("-k", dest="only", default=None, help="only mutants whose name contains this")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutant's test run")
    args = parser.parse_args()
    total = survived = 0
    for script in args.scripts:
        for _, outcome, _ in run(script, args.only, args.timeout):
            total += 1
            survived += not outcome.startswith("caught")
    print(f"{total - survived} of {total} mutants caught, {survived} survived or stale")
    sys.exit(1 if survived else 0)


if __name__ == "__main__":
    main()
