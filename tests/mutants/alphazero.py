"""alphazero.py's mutants: each breaks one piece of the wiring; the named fast tests of tests/test_alphazero.py must
catch every one (the tests are those a developer would run for that piece; -k keeps the check to minutes).

    python tests/mutants/run.py alphazero
"""

WIRING = "tests/test_alphazero.py -k wiring"
NOISE = """    if noise is not None:
        gamma = rng.gamma(noise[0], size=tree.P[:, 0].shape) * tree.legal[:, 0]  # [noise] Dir: normed Gammas
        tree.P[:, 0] = (1 - noise[1]) * tree.P[:, 0] + noise[1] * gamma / gamma.sum(1, keepdims=True)
"""
SOLVER = " ".join(f"tests/test_alphazero.py::test_{name}" for name in (  # the solver's tests, by node id
    "agent_plays_a_win_in_one_and_the_only_move_that_does_not_lose_whatever_its_network_says",
    "a_proven_win_two_moves_deep_propagates_to_the_root", "winning_moves_match_one_move_lookahead",
    "terminal_nodes_are_valued_without_network_calls"))
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
    ("one minibatch update per iteration", "steps = max(1, round(args.replay_ratio * new_positions / args.batch_size))",
     "steps = 1", WIRING),
    ("value target paired with the wrong position", "F.mse_loss(v, z)", "F.mse_loss(v, z.roll(1))", WIRING),
    ("gradients accumulate across minibatches", "        optimizer.zero_grad()\n", "",
     "tests/test_alphazero.py -k one_gradient_step"),
    ("replay window twice as long", "window = deque(maxlen=args.replay_window)",
     "window = deque(maxlen=2 * args.replay_window)", WIRING),
    ("the last games never trained on", "if games >= next_update or games == args.total_games:",
     "if games >= next_update:", WIRING),
    ("Dirichlet noise in the evaluation's search",
     "search(game, boards, net_evaluator(net, game), simulations, args.c_puct, solver=args.solver)",
     "search(game, boards, net_evaluator(net, game), simulations, args.c_puct, (0.3, 0.5),"
     " np.random.default_rng(), args.solver)",
     WIRING),
    ("resume without the random generator's state",
     '        rng.bit_generator.state = resumed["rng"]["numpy_generator"]\n',
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
]
