"""alphazero.py's mutants: each breaks one piece of the wiring; the named fast tests of tests/test_alphazero.py must
catch every one (the tests are those a developer would run for that piece; -k keeps the check to minutes).

    python tests/mutants/run.py alphazero
"""

WIRING = "tests/test_alphazero.py -k wiring"
D = "tests/test_alphazero_distributed.py::test_"  # torchrun: 2 ranks
RANKS = D + "ranks_average_their_gradients_split_the_budget_and_end_with_the_same_weights"
NOISE = """    if noise is not None:
        gamma = rng.gamma(noise[0], size=tree.P[:, 0].shape) * tree.legal[:, 0]  # [noise] Dir: normed Gammas
        tree.P[:, 0] = (1 - noise[1]) * tree.P[:, 0] + noise[1] * gamma / gamma.sum(1, keepdims=True)
"""
SOLVER = " ".join(f"tests/test_alphazero.py::test_{name}" for name in (  # the solver's tests, by node id
    "agent_plays_a_win_in_one_and_the_only_move_that_does_not_lose_whatever_its_network_says",
    "a_proven_win_two_moves_deep_propagates_to_the_root", "winning_moves_match_one_move_lookahead",
    "terminal_nodes_are_valued_without_network_calls",
    "trained_connect4_agent_plays_a_win_in_one_and_the_only_move_that_does_not_lose"))
SEARCH = """    for _ in range(simulations):
        simulate(tree, game, evaluate_leaves, c_puct)
"""

MUTANTS = [
    # the survivors a review found (issue 13), then those only a learning test caught
    ("Dirichlet noise mixed in after the simulations", NOISE + SEARCH, SEARCH + NOISE, WIRING),
    ("update trains on the un-permuted policy target of a permuted board",
     "b, pi = game.symmetry(boards[i], pis[i], rng.integers(len(game.cell_perms), size=args.batch_size))",
     "b, pi = game.symmetry(boards[i], pis[i], rng.integers(len(game.cell_perms), size=args.batch_size))[0], pis[i]",
     WIRING),
    ("pure-MCTS rollout value never changes sides", "sign[active] *= -1", "sign[active] *= 1", WIRING),
    ("BatchNorm left in training mode during self-play", "            net.eval()\n            live",
     "            net.train()\n            live", WIRING),
    ("z with the wrong sign", "z = result * (-1.0) ** (length", "z = -result * (-1.0) ** (length", WIRING),
    ("z not alternating between the players", "(-1.0) ** (length - np.arange(length))",
     "(-1.0) ** (length - 0 * np.arange(length))", WIRING),
    ("temperature schedule inverted", "moves_played[live] < args.temperature_moves",
     "moves_played[live] >= args.temperature_moves", WIRING),
    ("one-hot policy target", "return np.where(explore, sampled, counts.argmax(1)), pi",
     "return np.where(explore, sampled, counts.argmax(1)), np.eye(pi.shape[1], dtype=pi.dtype)[counts.argmax(1)]",
     WIRING),
    # our own
    ("backup sign one move off", "signed = -values", "signed = values.copy()",
     "tests/test_alphazero.py -k puct"),
    ("backup sign never alternating", "signed[trees] *= -1", "signed[trees] *= 1", "tests/test_alphazero.py -k puct"),
    ("Dirichlet noise not normalised", "noise[1] * gamma / gamma.sum(1, keepdims=True)", "noise[1] * gamma",
     "tests/test_alphazero.py -k dirichlet"),
    ("N(s) without the expanding visit", "np.sqrt(1 + N.sum(-1, keepdims=True))", "np.sqrt(N.sum(-1, keepdims=True))",
     "tests/test_alphazero.py -k puct"),
    ("stored board seen by the wrong player", "= boards[live], pi\n", "= -boards[live], pi\n", WIRING),
    ("one minibatch update per iteration",
     "steps = max(1, round(args.replay_ratio * new_positions / (args.batch_size * world)))", "steps = 1", WIRING),
    ("value target paired with the wrong position", "F.mse_loss(v, z)", "F.mse_loss(v, z.roll(1))", WIRING),
    ("gradients accumulate across minibatches", "        optimizer.zero_grad()\n", "",
     "tests/test_alphazero.py -k one_gradient_step"),
    ("replay window twice as long", "window = deque(maxlen=args.replay_window)",
     "window = deque(maxlen=2 * args.replay_window)", WIRING),
    ("the last games never trained on", "if (games >= next_update or games == args.total_games) and ready:",
     "if games >= next_update and ready:", WIRING),
    ("Dirichlet noise in the evaluation's search",
     "search(game, boards, net_evaluator(net, game), simulations, args.c_puct, solver=args.solver)",
     "search(game, boards, net_evaluator(net, game), simulations, args.c_puct, (0.3, 0.5),"
     " np.random.default_rng(), args.solver)",
     WIRING),
    ("resume without the random generator's state",
     '        rng.bit_generator.state = own["rng"]["numpy_generator"]\n',
     "", "tests/test_alphazero.py -k exact_resume"),
    # the search that knows proven results (issue 14)
    ("solver off by default", "    solver: bool = True\n", "    solver: bool = False\n", SOLVER),
    ("no win-in-one check at new nodes", "        tree.find_wins(game, g, node[g])\n", "", SOLVER),
    ("no win-in-one check at the root",
     "            self.find_wins(game, np.arange(len(roots)), np.zeros(len(roots), np.int64))",
     "            pass", SOLVER),
    ("a node with a win in one valued as lost", "self.value[g[won], nodes[won]] = True, 1.0",
     "self.value[g[won], nodes[won]] = True, -1.0", SOLVER),
    ("a proven child's value backed up with the wrong sign",
     "tree.result[t, n, a] = -tree.value[t, tree.child[t, n, a]]",
     "tree.result[t, n, a] = tree.value[t, tree.child[t, n, a]]", SOLVER),
    ("a node solved when any move is proven", "~np.isnan(r).any(1)]", "~np.isnan(r).all(1)]", SOLVER),
    ("a solved node valued by its worst move", "np.fmax.reduce(r, 1)", "np.fmin.reduce(r, 1)", SOLVER),
    ("proofs propagated without --solver too", "        if not tree.solver:\n            continue\n", "", SOLVER),
    ("proven losses not excluded", "unlost = legal & (result == 1), legal & ~(result == -1)",
     "unlost = legal & (result == 1), legal", SOLVER),
    ("proven wins not forced", "np.where(wins.any(-1, keepdims=True), wins, np.where(",
     "np.where(False, wins, np.where(", SOLVER),
    ("root choice by raw visit counts", "counts = np.where(ok, tree.N[:, 0], 0)", "counts = tree.N[:, 0]", SOLVER),
    ("network called on solved new nodes", "~tree.solved[trees, node]", "~tree.terminal[trees, node]", SOLVER),
    ("win check without gravity's playable cell", "            g, gap = g[playable], gap[playable]\n", "", SOLVER),
    ("evaluation's pure MCTS with the solver", "solver=False).N[:, 0].argmax(1)", "solver=True).N[:, 0].argmax(1)",
     WIRING),
    ("--eval-simulations ignored", "simulations = args.eval_simulations or args.simulations",
     "simulations = args.simulations", "tests/test_alphazero.py -k eval_simulations"),
    ("--eval-simulations ignored by --evaluate",
     "args.eval_simulations = eval_games, simulations or args.eval_simulations",
     "args.eval_simulations = eval_games, args.eval_simulations", "tests/test_alphazero.py -k eval_simulations"),
    ("--eval-simulations not passed on by the command line",
     "evaluate_checkpoint(cli_args.evaluate, cli_args.eval_games, cli_args.eval_simulations)",
     "evaluate_checkpoint(cli_args.evaluate, cli_args.eval_games)", "tests/test_alphazero.py -k eval_simulations"),
    ("--eval-simulations ignored by --play", "    args.eval_simulations = simulations or args.eval_simulations\n", "",
     "tests/test_alphazero.py -k eval_simulations"),
    ("a run from before the solver resumed with it", 'Args(**{"solver": False} | resumed["args"]',
     'Args(**resumed["args"]', "tests/test_alphazero.py -k before_the_solver"),
    # torchrun (issue 15): tests/test_alphazero_distributed.py, 2 ranks
    ("torchrun: gradients not all-reduced", "torch.distributed.all_reduce(grads)", "None", RANKS),
    ("torchrun: gradients summed, not averaged", "(grads / world).split", "grads.split", RANKS),
    ("torchrun: ranks seeded alike", "seed = (args.seed + rank) % 2**32", "seed = args.seed", RANKS),
    ("torchrun: budget counted per rank", "share = args.total_games // world + (rank < args.total_games % world)",
     "share = args.total_games", RANKS),
    ("torchrun: budget rounded down to a multiple of the ranks", " + (rank < args.total_games % world)", "", RANKS),
    ("torchrun: each rank counts its own games", "ranks[:, :3].sum(0).astype(int)", "ranks[rank, :3].astype(int)",
     RANKS),
    ("torchrun: ranks start from their own weights", "torch.distributed.broadcast(tensor, src=0)", "tensor", RANKS),
    ("torchrun: BatchNorm statistics not shared", "torch.distributed.broadcast(buffer, src=0)", "buffer", RANKS),
    ("torchrun: every rank makes a run folder", "make_run_dir(args) if rank == 0 else None", "make_run_dir(args)",
     RANKS),
    ("torchrun: every rank writes the checkpoint", "        if rank == 0:\n            save_checkpoint(path",
     "        if True:\n            save_checkpoint(path", RANKS),
    ("torchrun: the checkpoint without the other ranks' self-play", 'own |= {"ranks": states[1:]}', "pass", RANKS),
    ("torchrun: every rank writes TensorBoard", "if rank == 0 else NoWriter()", "if True else NoWriter()",
     D + "torchrun_end_to_end"),
    ("torchrun: a resume gives every rank rank 0's self-play",
     'own = resumed if rank == 0 else resumed["ranks"][rank - 1]', "own = resumed",
     D + "resume_on_2_ranks_is_exact_and_on_1_rank_refused"),
    ("torchrun: a resume on another number of ranks accepted", 'resumed.get("world_size", 1) != world', "False",
     D + "resume_on_2_ranks_is_exact_and_on_1_rank_refused"),
    ("torchrun: a signal stops only the rank that got it",
     "signals[:] = [int(ranks[:, 4].max())] if ranks[:, 4].any() else []", "signals[:] = received[:1]",
     D + "sigterm_to_one_rank_stops_both_with_a_checkpoint"),
    ("torchrun: losses of one rank only", "        torch.distributed.all_reduce(losses)\n", "",
     D + "a_nan_on_one_rank_stops_both_ranks"),
]
