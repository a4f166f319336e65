"""alphazero.py's mutants: each breaks one piece of the wiring; the named fast tests of tests/test_alphazero.py must
catch every one (the tests are those a developer would run for that piece; -k keeps the check to minutes).

    python tests/mutants/run.py alphazero
"""

WIRING = "tests/test_alphazero.py -k wiring"
NOISE = """    if noise is not None:
        gamma = rng.gamma(noise[0], size=tree.P[:, 0].shape) * tree.legal[:, 0]  # [noise] Dir: normed Gammas
        tree.P[:, 0] = (1 - noise[1]) * tree.P[:, 0] + noise[1] * gamma / gamma.sum(1, keepdims=True)
"""
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
     "search(game, boards, net_evaluator(net, game), args.simulations, args.c_puct)",
     "search(game, boards, net_evaluator(net, game), args.simulations, args.c_puct, (0.3, 0.5),"
     " np.random.default_rng())",
     WIRING),
    ("resume without the random generator's state",
     '        rng.bit_generator.state = resumed["rng"]["numpy_generator"]\n',
     "", "tests/test_alphazero.py -k exact_resume"),
]
