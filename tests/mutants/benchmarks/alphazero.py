"""benchmarks/alphazero.py's mutants (issue 25's standard judge and lever runs): the named fast tests of
tests/test_alphazero.py must catch every one.

    python tests/mutants/run.py benchmarks/alphazero
"""

JUDGE = "tests/test_alphazero.py -k standard_judge"
LEVERS = "tests/test_alphazero.py -k lever_run_of_the_benchmark"

MUTANTS = [
    ("a lever's settings passed beside the benchmark's own (lr_cosine's total_games: a crash at the start)",
     """alphazero.Args(**{"game": "connect4", "cuda": False, "total_games": 10**6, "eval_every": snapshot_every,
                             "checkpoint_every": 0, "exp_name": name} | overrides)""",
     """alphazero.Args(game="connect4", cuda=False, total_games=10**6, eval_every=snapshot_every,
                             checkpoint_every=0, exp_name=name, **overrides)""", LEVERS),
    ("snapshots counted from 0 games", "(len(snapshots) + 1) * snapshot_every", "len(snapshots) * snapshot_every",
     LEVERS),
    ("the lever run ignores its seed", """"exp_name": name} | overrides)""",
     """"exp_name": name} | overrides | {"seed": 1})""", LEVERS),
    ("the value-mix lever at 0.25, not the README's 0.5", '"value_mix": {"value_mix": 0.5}',
     '"value_mix": {"value_mix": 0.25}', LEVERS),
    ("the Wilson half-width without its z^2 / 4n^2 term", "+ z2 / (4 * n * n))", ")", JUDGE),
    ("the interval's centre at p, not Wilson's", "centre, half = (p + z2 / (2 * n)) / (1 + z2 / n)",
     "centre, half = p", JUDGE),
]
