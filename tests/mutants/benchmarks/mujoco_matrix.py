"""benchmarks/mujoco_matrix.py's mutants (issue 23's runner and report): the fast tests of
tests/test_benchmark_mujoco.py must catch every one.

    python tests/mutants/run.py benchmarks/mujoco_matrix
"""

REPORT = "tests/test_benchmark_mujoco.py -k report"
RESUME = "tests/test_benchmark_mujoco.py -k interrupted_matrix"
COMMIT = "tests/test_benchmark_mujoco.py -k commit"

MUTANTS = [
    ("a mark's window of 5k steps, not 10k", "mark - 10_000 <= step <= mark", "mark - 5_000 <= step <= mark", REPORT),
    ("the sample std (ddof 1), not the README's numpy default", 'f" ± {np.std(values):.0f}"',
     'f" ± {np.std(values, ddof=1):.0f}"', REPORT),
    ("one seed shown with a spread of 0", "if len(values) > 1 else", "if len(values) > 0 else", REPORT),
    ("a run's best evaluation is its worst", 'best_step, best = max(r["eval"]', 'best_step, best = min(r["eval"]',
     REPORT),
    ("a run's last evaluation is its first", "{r['eval'][-1][1]:.0f} | {best:.0f}",
     "{r['eval'][0][1]:.0f} | {best:.0f}", REPORT),
    ("the figure of every results folder is mujoco.png", 'os.path.normpath(cli.results) + ".png"',
     'os.path.join(os.path.dirname(cli.results), "mujoco.png")', REPORT),
    ("finished runs run again", "todo = [r for r in runs if not os.path.exists(r.result)]", "todo = list(runs)",
     RESUME),
    ("an unfinished run starts over instead of resuming", "        if self.checkpoint():\n            return base +",
     "        if False:\n            return base +", RESUME),
    ("every commit message names benchmarks/results/mujoco", 'message = f"{folder}: {self.name}',
     'message = f"benchmarks/results/mujoco: {self.name}', COMMIT),
    ("the result file is written but not committed", 'add = subprocess.run(["git", "add", self.result]',
     'add = subprocess.run(["git", "status"]', COMMIT),
]
