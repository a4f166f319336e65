"""Reproduces the README's AlphaZero figures (one torch thread; CPU seconds by time.process_time()):

    python benchmarks/alphazero.py                     # all three parts, in this order:
    python benchmarks/alphazero.py --part speed        # searched positions/s, batched vs one-by-one (~2 CPU-min)
    python benchmarks/alphazero.py --part tictactoe    # seeds 1-5 at the defaults, checked against every reply (~3)
    python benchmarks/alphazero.py --part connect4     # the 30 CPU-minute Connect Four run and its evaluation,
    python benchmarks/alphazero.py --part strength     #   which ends with this: its agent against stronger MCTS
    python benchmarks/alphazero.py --part connect4-long  # the long run: 30,000 games (~70 CPU-min), then the same
    python benchmarks/alphazero.py --part solver       # the search with and without proven results (~20 CPU-min)

Outputs in benchmarks/results/: alphazero_speed.json, alphazero_tictactoe.json, alphazero_connect4.json and
alphazero_connect4.png (win rates against random and pure MCTS with 100 rollouts, by self-play games); the long
run writes alphazero_connect4_long.json and .png; the solver part alphazero_solver.json.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import alphazero  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def positions(game, n, seed):
    """n non-terminal positions from random play: the kind of roots self-play searches from."""
    rng, boards = np.random.default_rng(seed), []
    while len(boards) < n:
        board = game.initial_state()
        while not game.terminal_value(board)[0][0] and rng.random() > 0.1:
            boards.append(board[0])
            board = game.next_state(board, rng.choice(np.flatnonzero(game.legal_moves(board)[0]), size=1))
    return np.stack(boards[:n])


def speed():
    """Positions searched per second: every simulation adds one position to a tree."""
    rows = []
    for name in ("tictactoe", "connect4"):
        args = alphazero.Args(game=name, cuda=False)
        game = alphazero.make_env(name, args.rows, args.cols, args.win_length)
        net = alphazero.Net(game, args.channels, args.blocks).eval()
        for num_envs in (1, 16, 64, 256):
            roots = positions(game, num_envs, seed=0)
            row = {"game": name, "num_envs": num_envs, "simulations": args.simulations}
            for batched in (True, False):
                evaluate_leaves = alphazero.net_evaluator(net, game, batched)
                repeats = max(1, 256 // num_envs)
                start, wall = time.process_time(), time.perf_counter()
                for _ in range(repeats):
                    alphazero.search(game, roots, evaluate_leaves, args.simulations, args.c_puct)
                searched = repeats * num_envs * args.simulations
                key = "batched" if batched else "one_by_one"
                row[f"{key}_positions_per_cpu_s"] = searched / (time.process_time() - start)
                row[f"{key}_positions_per_wall_s"] = searched / (time.perf_counter() - wall)
            row["speedup"] = row["batched_positions_per_cpu_s"] / row["one_by_one_positions_per_cpu_s"]
            rows.append(row)
            print(f"{name:9s} {num_envs:4d} games: batched {row['batched_positions_per_cpu_s']:8.0f} positions/CPU-s,"
                  f" one-by-one {row['one_by_one_positions_per_cpu_s']:8.0f}, x{row['speedup']:.1f}", flush=True)
    with open(os.path.join(OUT, "alphazero_speed.json"), "w") as f:
        json.dump({"device": "cpu, 1 torch thread", "rows": rows}, f, indent=1)


def timed_train(args):
    """train(args), with the CPU seconds spent in evaluation counted apart from those of training."""
    evaluation = [0.0]
    evaluate_opponents = alphazero.evaluate_opponents

    def timed(*a, **k):
        start = time.process_time()
        result = evaluate_opponents(*a, **k)
        evaluation[0] += time.process_time() - start
        return result

    alphazero.evaluate_opponents = timed
    start = time.process_time()
    try:
        metrics = alphazero.train(args)
    finally:
        alphazero.evaluate_opponents = evaluate_opponents
    total = time.process_time() - start
    return metrics, total - evaluation[0], evaluation[0]


def tictactoe():
    rows = []
    for seed in range(1, 6):
        metrics, train_cpu, eval_cpu = timed_train(alphazero.Args(seed=seed, cuda=False))
        rows.append({"seed": seed, "train_cpu_s": train_cpu, "eval_cpu_s": eval_cpu, "games": metrics["global_step"]}
                    | {k: v for k, v in metrics.items() if k.startswith("eval/")})
        print(rows[-1], flush=True)
    args = alphazero.Args(cuda=False)
    game = alphazero.make_env(args.game, args.rows, args.cols, args.win_length)
    untrained = []
    for seed in range(5):  # the control: the same search on untrained networks
        torch.manual_seed(seed)
        net = alphazero.Net(game, args.channels, args.blocks).eval()
        agent = lambda boards, net=net: alphazero.agent_moves(game, net, args, boards)
        untrained.append([alphazero.exhaustive_losses(game, agent, first) for first in (True, False)])
    print("untrained networks, losing lines (agent first, second):", untrained)
    with open(os.path.join(OUT, "alphazero_tictactoe.json"), "w") as f:
        json.dump({"trained": rows, "untrained_losing_lines_first_second": untrained}, f, indent=1)


def connect4(total_games=10_000, name="alphazero_connect4"):
    args = alphazero.Args(game="connect4", cuda=False, total_games=total_games,
                          eval_every=total_games // 4, eval_games=200)
    metrics, train_cpu, eval_cpu = timed_train(args)
    accumulator = EventAccumulator(metrics["run_dir"], size_guidance={"scalars": 0})
    accumulator.Reload()
    curve = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
             if tag.startswith("eval/")}
    part = "connect4" if name == "alphazero_connect4" else "connect4-long"
    result = {"command": f"python benchmarks/alphazero.py --part {part}", "args": vars(args),
              "train_cpu_s": train_cpu, "eval_cpu_s": eval_cpu, "games": metrics["global_step"],
              "final": {k: v for k, v in metrics.items() if k.startswith(("eval/", "charts/"))}, "curve": curve,
              "model_path": os.path.abspath(metrics["checkpoint"])}
    print(json.dumps(result["final"]), f"train CPU {train_cpu:.0f} s, evaluation CPU {eval_cpu:.0f} s", flush=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    fig, ax = plt.subplots(figsize=(6, 4))
    for opponent, color in (("random", "tab:blue"), ("mcts", "tab:red")):
        steps, wins = zip(*curve[f"eval/{opponent}_win"])
        ax.plot(steps, wins, "o-", color=color, label=f"win rate vs {opponent} ({args.eval_games} games)")
    ax.set_xlabel("self-play games")
    ax.set_ylabel("win rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Connect Four, {train_cpu / 60:.0f} CPU-minutes of training")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, f"{name}.png"), dpi=100)
    strength(name)


def strength(name="alphazero_connect4"):
    """The trained Connect Four agent against stronger pure MCTS: 400 and 1000 rollouts per move, 100 games each."""
    with open(os.path.join(OUT, f"{name}.json")) as f:
        result = json.load(f)
    net, args = alphazero.load(result["model_path"])
    result["stronger_mcts"] = {}
    for rollouts in (400, 1000):
        args.rollouts = rollouts
        start = time.process_time()
        outcomes = alphazero.evaluate(net, "mcts", 100, seed=123, args=args)
        result["stronger_mcts"][rollouts] = {"win": float(np.mean(outcomes > 0)), "draw": float(np.mean(outcomes == 0)),
                                             "loss": float(np.mean(outcomes < 0)), "cpu_s": time.process_time() - start}
        print(f"vs pure MCTS with {rollouts} rollouts:", result["stronger_mcts"][rollouts], flush=True)
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(result, f, indent=1)


def solver_speed(repeats=8):
    """Searched positions (simulations) per CPU-second with and without --solver, interleaved on the same 64 roots
    per game and the same untrained network; --no-solver is the search before the solver, tree for tree."""
    rows = []
    for name in ("tictactoe", "connect4"):
        args = alphazero.Args(game=name, cuda=False)
        game = alphazero.make_env(name, args.rows, args.cols, args.win_length)
        torch.manual_seed(0)
        evaluate_leaves = alphazero.net_evaluator(alphazero.Net(game, args.channels, args.blocks).eval(), game)
        roots, cpu = positions(game, 64, seed=0), {True: 0.0, False: 0.0}
        for _ in range(repeats):
            for solver in (False, True):
                start = time.process_time()
                alphazero.search(game, roots, evaluate_leaves, args.simulations, args.c_puct, solver=solver)
                cpu[solver] += time.process_time() - start
        searched = repeats * len(roots) * args.simulations
        rows.append({"game": name, "simulations": args.simulations, "roots": len(roots),
                     "no_solver_positions_per_cpu_s": searched / cpu[False],
                     "solver_positions_per_cpu_s": searched / cpu[True], "ratio": cpu[False] / cpu[True]})
        print(rows[-1], flush=True)
    return rows


def solver_strength(solver, total_games=1_280):
    """A short Connect Four run (seed 1) with or without --solver; its agent then against random and pure MCTS with
    100 and 1,000 rollouts, 100 games each (agent first in half), results per colour. The solver's games are longer
    (more positions per game), so the run without it also gets 1,600 games: about the solver run's CPU time."""
    torch.set_num_threads(1)
    args = alphazero.Args(game="connect4", cuda=False, total_games=total_games, solver=solver, eval_every=total_games,
                          eval_games=2, exp_name=f"solver_{solver}")
    metrics, train_cpu, _ = timed_train(args)
    net, args = alphazero.load(metrics["checkpoint"])
    row = {"solver": solver, "games": metrics["global_step"], "train_cpu_s": train_cpu}
    for opponent, rollouts in (("random", 100), ("mcts", 100), ("mcts", 1000)):
        args.rollouts = rollouts
        results = alphazero.evaluate(net, opponent, 100, seed=123, args=args)
        for side, r in (("first", results[0::2]), ("second", results[1::2])):
            row[f"{opponent}{rollouts if opponent == 'mcts' else ''}_{side}"] = {
                "win": float(np.mean(r > 0)), "draw": float(np.mean(r == 0)), "loss": float(np.mean(r < 0))}
    print(row, flush=True)
    return row


def solver():
    result = {"command": "python benchmarks/alphazero.py --part solver", "speed": solver_speed()}
    with concurrent.futures.ProcessPoolExecutor(2) as pool:  # the two runs side by side, one thread each
        result["strength"] = list(pool.map(solver_strength, (True, False, False), (1_280, 1_280, 1_600)))
    with open(os.path.join(OUT, "alphazero_solver.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("speed", "tictactoe", "connect4", "strength", "connect4-long", "solver",
                                           "all"),
                        default="all")
    part = parser.parse_args().part
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    parts = (("speed", speed), ("tictactoe", tictactoe), ("connect4", connect4), ("strength", strength),
             ("connect4-long", lambda: connect4(30_000, "alphazero_connect4_long")), ("solver", solver))
    for name, run in parts:
        if part == name or (part == "all" and name not in ("strength", "connect4-long", "solver")):  # connect4 ends
            run()
