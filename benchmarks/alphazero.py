"""Reproduces the README's AlphaZero figures (one torch thread; CPU seconds by time.process_time()):

    python benchmarks/alphazero.py                     # all three parts, in this order:
    python benchmarks/alphazero.py --part speed        # searched positions/s, batched vs one-by-one (~2 CPU-min)
    python benchmarks/alphazero.py --part tictactoe    # seeds 1-5 at the defaults, checked against every reply (~3)
    python benchmarks/alphazero.py --part connect4     # the 30 CPU-minute Connect Four run and its evaluation,
    python benchmarks/alphazero.py --part strength     #   which ends with this: its agent against stronger MCTS
    python benchmarks/alphazero.py --part connect4-long  # the long run: 30,000 games (~70 CPU-min), then the same
    python benchmarks/alphazero.py --part solver       # the search with and without proven results (~20 CPU-min)
    python benchmarks/alphazero.py --part hour         # the bar: Connect Four within 60 training CPU-minutes, its
                                                       #   snapshots against MCTS-1000 (~80 CPU-min in all)
    python benchmarks/alphazero.py --part hour-32      # the same with --simulations 32 (the ablation's best at 6)
    python benchmarks/alphazero.py --part ablation     # one change at a time, 6 training CPU-minutes each (~80)
    python benchmarks/alphazero.py --part judge        # the hour's network against the standard judge, MCTS-solver
                                                       #   at 1,000 and 10,000 simulations, 200 games each

Outputs in benchmarks/results/: alphazero_speed.json, alphazero_tictactoe.json, alphazero_connect4.json and
alphazero_connect4.png (win rates against random and pure MCTS with 100 rollouts, by self-play games); the long
run writes alphazero_connect4_long.json and .png; the solver part alphazero_solver.json; the hour parts
alphazero_hour.json, alphazero_hour_32.json and alphazero_strength.png (and the defaults' final network becomes
tests/data/connect4_net.pt); the ablation alphazero_ablation.json; the judge alphazero_judge.json.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
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


class OverBudget(Exception):
    """Raised from the evaluation hook once a run's training CPU has passed its budget."""


def budget_run(name, cpu_minutes, snapshot_every, **overrides):
    """A Connect Four run (seed 1, the defaults but for `overrides`) that stops at the first multiple of
    `snapshot_every` games past `cpu_minutes` of training CPU. The evaluation hook is replaced: at every
    multiple it saves the network instead, with the games and training CPU so far (evaluation excluded).
    Returns those snapshots: [(games, train_cpu_s, path)]."""
    torch.set_num_threads(1)
    args = alphazero.Args(**{"game": "connect4", "cuda": False, "total_games": 10**6, "eval_every": snapshot_every,
                             "checkpoint_every": 0, "exp_name": name} | overrides)  # a lever may set total_games
    folder, snapshots, start = os.path.join("runs", "bench_" + name), [], time.process_time()
    os.makedirs(folder, exist_ok=True)

    def snapshot(net, game, args):
        path, games = os.path.join(folder, f"{len(snapshots) + 1:03d}.pt"), (len(snapshots) + 1) * snapshot_every
        train_cpu = time.process_time() - start
        torch.save({"script": "alphazero", "args": dataclasses.asdict(args), "net": net.state_dict()}, path)
        snapshots.append((games, train_cpu, path))
        if train_cpu > cpu_minutes * 60:
            raise OverBudget
        return {}

    alphazero.evaluate_opponents, evaluate_opponents = snapshot, alphazero.evaluate_opponents
    try:
        alphazero.train(args)
    except OverBudget:
        pass
    finally:
        alphazero.evaluate_opponents = evaluate_opponents
    return snapshots


def judge(path, games=200, rollouts=1000, seed=123):
    """A snapshot against random play and pure MCTS with `rollouts` rollouts per move, `games` games each (the
    agent first in half): win/draw/loss rates with the agent first and second separately."""
    torch.set_num_threads(1)
    net, args = alphazero.load(path)
    row = {}
    for opponent in ("random", "mcts"):
        args.rollouts = rollouts
        start = time.process_time()
        results = alphazero.evaluate(net, opponent, games, seed=seed, args=args)
        name = "random" if opponent == "random" else f"mcts{rollouts}"
        for side, r in (("first", results[0::2]), ("second", results[1::2]), ("all", results)):
            row[f"{name}_{side}"] = {"win": float(np.mean(r > 0)), "draw": float(np.mean(r == 0)),
                                     "loss": float(np.mean(r < 0))}
        row[f"{name}_cpu_s"] = time.process_time() - start
    return row


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate (95% by default): unlike p +- z sqrt(p (1 - p) / n), it stays inside
    [0, 1] and keeps its coverage near 0% and 100%."""
    p, z2 = successes / n, z * z
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(centre - half), float(centre + half)


def mcts_solver_moves(game, simulations: int, c_puct: float, rng: np.random.Generator):
    """The standard judge's move function: MCTS with uniform priors, one random playout per simulation and
    proven-result backup (MCTS-solver: a proven win is played, a proven loss avoided), the most visited move."""
    return lambda boards: alphazero.root_visits(alphazero.search(
        game, boards, alphazero.rollout_evaluator(game, rng), simulations, c_puct, solver=True)).argmax(1)


def standard_judge(path, simulations=1000, games=200, seed=123):
    """A network against the standard judge (MCTS-solver with `simulations` per move), `games` games, the agent first
    in half: the win rate (draws count as not won) with its 95% Wilson interval, overall and per colour."""
    torch.set_num_threads(1)
    net, args = alphazero.load(path)
    net.eval()
    game = alphazero.make_env(args.game, args.rows, args.cols, args.win_length)
    judge_moves = mcts_solver_moves(game, simulations, args.c_puct, np.random.default_rng(seed))
    start = time.process_time()
    results = alphazero.play_games(game, lambda b: alphazero.agent_moves(game, net, args, b), judge_moves,
                                   np.arange(games) % 2 == 0)
    row = {"judge": f"MCTS-solver, {simulations} simulations per move", "games": games,
           "cpu_s": time.process_time() - start}
    for side, r in (("all", results), ("first", results[0::2]), ("second", results[1::2])):
        wins = int((r > 0).sum())
        row[side] = {"won": wins, "drawn": int((r == 0).sum()), "lost": int((r < 0).sum()),
                     "win_rate": wins / len(r), "win_rate_95ci": wilson(wins, len(r))}
    print(json.dumps(row), flush=True)
    return row


def judge_standard():
    """tests/data/connect4_net.pt (the hour's network) against the standard judge at 1,000 and 10,000 simulations."""
    path = os.path.join(os.path.dirname(OUT), "..", "tests", "data", "connect4_net.pt")
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(standard_judge, [path, path], [1000, 10_000]))
    with open(os.path.join(OUT, "alphazero_judge.json"), "w") as f:
        json.dump({"command": "python benchmarks/alphazero.py --part judge", "network": "tests/data/connect4_net.pt",
                   "rows": rows}, f, indent=1)


def hour(cpu_minutes=60, name="hour", **overrides):
    """The bar: Connect Four at the defaults (but for `overrides`) within 60 CPU-minutes of training. Snapshots
    every 1,024 games; every other one and the last within the budget are judged (200 games against random and
    against pure MCTS with 1,000 rollouts), two processes side by side."""
    snapshots = budget_run(name, cpu_minutes, 1_024, **overrides)
    within = [s for s in snapshots if s[1] <= cpu_minutes * 60]
    judged = sorted(set(within[1::2] + within[-1:]))
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(judge, [path for *_, path in judged]))
    curve = [{"games": g, "train_cpu_min": cpu / 60} | row for (g, cpu, _), row in zip(judged, rows)]
    command = "python benchmarks/alphazero.py --part " + name.replace("_", "-")
    result = {"command": command, "cpu_minutes": cpu_minutes, "overrides": overrides, "snapshots": snapshots,
              "curve": curve, "final": curve[-1]}
    print(json.dumps(result["final"]), flush=True)
    with open(os.path.join(OUT, f"alphazero_{name}.json"), "w") as f:
        json.dump(result, f, indent=1)
    if not overrides:  # the defaults' network: the trained Connect Four network of the tests
        shutil.copy(judged[-1][2], os.path.join(OUT, "..", "..", "tests", "data", "connect4_net.pt"))
    strength_figure()


def strength_figure():
    """alphazero_strength.png: win rate against pure MCTS with 1,000 rollouts (agent first, second) and against
    random, by training CPU-minutes, for each --part hour run there is a result of."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, marker in (("hour", "o"), ("hour_32", "s")):
        if not os.path.exists(os.path.join(OUT, f"alphazero_{name}.json")):
            continue
        with open(os.path.join(OUT, f"alphazero_{name}.json")) as f:
            result = json.load(f)
        label = "defaults" if name == "hour" else ", ".join(f"{k}={v}" for k, v in result["overrides"].items())
        x = [row["train_cpu_min"] for row in result["curve"]]
        for key, color in (("mcts1000_first", "tab:red"), ("mcts1000_second", "tab:purple"),
                           ("random_all", "tab:blue")):
            ax.plot(x, [row[key]["win"] for row in result["curve"]], marker=marker, color=color,
                    linestyle="-" if name == "hour" else "--", label=f"{label}: vs {key.replace('_', ', ')}")
    ax.axhline(0.9, color="grey", linewidth=0.8)
    ax.set_xlabel("training CPU-minutes (one core)")
    ax.set_ylabel("win rate (100 games per colour)")
    ax.set_ylim(0, 1.02)
    ax.set_title("Connect Four, seed 1: strength against training compute")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "alphazero_strength.png"), dpi=100)

ABLATIONS = [{}, {"simulations": 32}, {"simulations": 128}, {"channels": 64}, {"replay_ratio": 8.0},
             {"replay_ratio": 2.0}, {"replay_window": 6_000}]  # changes from the defaults


def ablation(cpu_minutes=6):
    """One change at a time from the defaults, each run given the same training CPU (seed 1, stopped at the first 256
    games past it), its last network judged like the bar's. Rows are written as they come
    (alphazero_ablation.json)."""
    rows, out = [], os.path.join(OUT, "alphazero_ablation.json")
    for k, change in enumerate(ABLATIONS):
        snapshots = budget_run(f"ablation{k}", cpu_minutes, 256, **change)
        games, train_cpu, path = snapshots[-1]
        rows.append({"change": change, "games": games, "train_cpu_min": train_cpu / 60} | judge(path))
        print(json.dumps(rows[-1]), flush=True)
        with open(out, "w") as f:
            json.dump({"command": "python benchmarks/alphazero.py --part ablation", "cpu_minutes": cpu_minutes,
                       "rows": rows}, f, indent=1)


LEVERS = {  # issue 25's levers, one at a time from the defaults (the chapter's PUCT search)
    "puct": {},
    "gumbel": {"search": "gumbel"},
    "playout_cap": {"playout_cap": 0.25},
    "value_mix": {"value_mix": 0.5},
    # the defaults' games in the hour on 6 December (seed 2): 11,264 (seed 1, a slower day) would end the run at
    # about 40 CPU-minutes on such a day, since --total-games also stops it
    "lr_cosine": {"lr_schedule": "cosine", "total_games": 17_408},
}


def lever(name: str, seed: int, cpu_minutes=60, judge_10k=True):
    """One lever, one seed: a Connect Four run of `cpu_minutes` training CPU-minutes (snapshots every 1,024 games,
    the last within the budget judged), then that network against the standard judge at 1,000 and 10,000
    simulations. Resumable: a finished training run leaves runs/bench_lever_<name>_<seed>/snapshots.json, a judged
    row lands in alphazero_levers.json at once, and both are skipped next time."""
    out = os.path.join(OUT, "alphazero_levers.json")
    rows = json.load(open(out))["rows"] if os.path.exists(out) else []
    if any(r["lever"] == name and r["seed"] == seed and (r["judge10000"] or not judge_10k) for r in rows):
        return  # judged (a row without its 10,000-simulation judge, stopped early, is judged again)
    run_name, overrides = f"lever_{name}_{seed}", dict(LEVERS[name], seed=seed)
    done = os.path.join("runs", f"bench_{run_name}", "snapshots.json")
    if (name, seed) == ("puct", 1):  # the defaults at seed 1 are --part hour's run: its network, its snapshots
        hour_run = json.load(open(os.path.join(OUT, "alphazero_hour.json")))
        games, train_cpu = hour_run["final"]["games"], hour_run["final"]["train_cpu_min"] * 60
        snapshots = [[games, train_cpu, os.path.join(os.path.dirname(OUT), "..", "tests", "data", "connect4_net.pt")]]
        os.makedirs(os.path.dirname(done), exist_ok=True)
        json.dump(snapshots, open(done, "w"))
    if not os.path.exists(done):
        snapshots = budget_run(run_name, cpu_minutes, 1_024, **overrides)
        json.dump(snapshots, open(done, "w"))
    snapshots = json.load(open(done))
    games, train_cpu, path = [s for s in snapshots if s[1] <= cpu_minutes * 60][-1]
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        judged = list(pool.map(standard_judge, [path, path][: 1 + judge_10k], [1000, 10_000][: 1 + judge_10k]))
    row = {"lever": name, "seed": seed, "overrides": overrides, "games": games, "train_cpu_min": train_cpu / 60,
           "judge1000": judged[0], "judge10000": judged[1] if judge_10k else None}
    saved = json.load(open(out)) if os.path.exists(out) else {}
    rows = [r for r in saved.get("rows", []) if (r["lever"], r["seed"]) != (name, seed)] + [row]
    with open(out, "w") as f:
        json.dump(saved | {"command": "python benchmarks/alphazero.py --part levers --lever NAME --seed S",
                           "cpu_minutes": cpu_minutes, "rows": rows}, f, indent=1)
    print(json.dumps(row), flush=True)


def lever_curves(marks=(10, 20, 30, 40, 50), games=100):
    """alphazero_levers.png: each judged lever run's strength against training CPU-minutes. At each mark, the last
    snapshot within it plays `games` games against the standard judge at 1,000 simulations; the hour's point is
    the row's own 200-game judge. Resumable: judged points are kept in alphazero_levers_curves.json. PUCT seed 1
    (--part hour's run) kept only its final network, so it has the hour's point alone."""
    out = os.path.join(OUT, "alphazero_levers_curves.json")
    curves = json.load(open(out))["curves"] if os.path.exists(out) else {}
    rows = json.load(open(os.path.join(OUT, "alphazero_levers.json")))["rows"]
    for row in rows:
        key, done = f"{row['lever']}_{row['seed']}", os.path.join("runs", f"bench_lever_{row['lever']}_{row['seed']}")
        path = os.path.join(done, "snapshots.json")
        snapshots = json.load(open(path)) if os.path.exists(path) else []  # another machine: the points judged before
        todo = [[s for s in snapshots if s[1] <= mark * 60][-1] for mark in marks
                if snapshots and snapshots[0][1] <= mark * 60]
        todo = [s for s in todo if os.path.exists(s[2]) and s[2] != snapshots[-1][2]]
        points = {p["games"]: p for p in curves.get(key, [])}
        missing = [s for s in todo if s[0] not in points]
        with concurrent.futures.ProcessPoolExecutor(2) as pool:
            judged = list(pool.map(standard_judge, [s[2] for s in missing], [1000] * len(missing),
                                   [games] * len(missing)))
        for (g, cpu, _), j in zip(missing, judged):
            points[g] = {"games": g, "train_cpu_min": cpu / 60, "judge_games": games,
                         "win_rate": j["all"]["win_rate"], "win_rate_95ci": j["all"]["win_rate_95ci"]}
        at_hour = row["judge1000"]["all"]
        final = {"games": row["games"], "train_cpu_min": row["train_cpu_min"], "judge_games": 200,
                 "win_rate": at_hour["win_rate"], "win_rate_95ci": at_hour["win_rate_95ci"]}
        curves[key] = sorted([p for g, p in points.items() if g != row["games"]], key=lambda p: p["games"]) + [final]
        with open(out, "w") as f:
            json.dump({"command": "python benchmarks/alphazero.py --part lever-curves", "curves": curves}, f,
                      indent=1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {name: f"C{i}" for i, name in enumerate(LEVERS)}
    for key, points in sorted(curves.items()):
        name, seed = key.rsplit("_", 1)
        x, y = [p["train_cpu_min"] for p in points], [p["win_rate"] for p in points]
        lo, hi = zip(*[p["win_rate_95ci"] for p in points])
        ax.errorbar(x, y, yerr=[np.subtract(y, lo), np.subtract(hi, y)], marker="os"[int(seed) - 1], capsize=2,
                    color=colors[name], linestyle="-" if seed == "1" else "--", label=f"{name}, seed {seed}")
    if "puct_1" not in curves:  # --part hour's network, judged by --part judge; its run kept no snapshots
        hour_cpu = json.load(open(os.path.join(OUT, "alphazero_hour.json")))["final"]["train_cpu_min"]
        judged = json.load(open(os.path.join(OUT, "alphazero_judge.json")))["rows"][0]["all"]
        (lo, hi), y = judged["win_rate_95ci"], judged["win_rate"]
        ax.errorbar([hour_cpu], [y], yerr=[[y - lo], [hi - y]], marker="o", capsize=2, color=colors["puct"],
                    label="puct, seed 1 (--part hour, an earlier day)")
    ax.axhline(0.95, color="grey", linewidth=0.8)
    ax.set_xlabel("training CPU-minutes (one core)")
    ax.set_ylabel("win rate against MCTS-solver-1000")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Connect Four, the levers: {games} games a point, 200 at the hour; 95% intervals", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "alphazero_levers.png"), dpi=100)


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
                                           "hour", "hour-32", "ablation", "judge", "levers", "lever-curves", "all"),
                        default="all")
    parser.add_argument("--lever", choices=tuple(LEVERS), help="with --part levers: the lever (default: all)")
    parser.add_argument("--seed", type=int, action="append", help="with --part levers: a seed (default: 1 and 2)")
    parsed = parser.parse_args()
    part = parsed.part
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    parts = (("speed", speed), ("tictactoe", tictactoe), ("connect4", connect4), ("strength", strength),
             ("connect4-long", lambda: connect4(30_000, "alphazero_connect4_long")), ("solver", solver), ("hour", hour),
             ("hour-32", lambda: hour(name="hour_32", simulations=32)),
             ("ablation", ablation), ("judge", judge_standard),
             ("levers", lambda: [lever(name, seed) for name in ([parsed.lever] if parsed.lever else LEVERS)
                                 for seed in parsed.seed or (1, 2)]), ("lever-curves", lever_curves))
    for name, run in parts:
        long = ("strength", "connect4-long", "solver", "hour", "hour-32", "ablation", "judge", "levers", "lever-curves")
        if part == name or (part == "all" and name not in long):  # connect4 ends
            run()
