"""alphazero.py's levers beyond the chapter (issue 25): --search gumbel (Gumbel top-k at the root, sequential halving,
the completed-Q policy target), --playout-cap, --value-mix and --lr-schedule. The search's mechanics on constructed
positions with values worked out by hand; the other levers through SelfPlay and train."""
import math

import numpy as np
import pytest

import alphazero
from alphazero import Args, SelfPlay, Tree, gumbel_search, halving_schedule, make_env, train

TTT, C4 = ("tictactoe", 3, 3, 3), ("connect4", 6, 7, 4)
TINY = dict(total_games=13, num_envs=3, simulations=6, temperature_moves=2, replay_window=5, batch_size=8,
            replay_ratio=1.0, eval_every=1_000, eval_games=2, rollouts=2, cuda=False)
Q = np.array([-0.5, 0.1, 0.3, 0.9, 0.0, -0.2, 0.2])  # the root mover's value of each first Connect Four move


def first_move_values(priors, root_value=0.25, q=Q):
    """A Connect Four leaf evaluator for trees grown from the empty board: fixed priors; the value is root_value at
    the root, -Q[column] one move in (the player to move there is the opponent), 0 deeper. So a root move visited
    N times has mean value q[column] / N."""
    def evaluate_leaves(boards):
        stones, values = (boards != 0).sum(1), np.zeros(len(boards), np.float32)
        values[stones == 0] = root_value
        one = stones == 1
        values[one] = -q[np.abs(boards[one]).argmax(1) % 7]
        legal = make_env(*C4).legal_moves(boards)
        return np.where(legal, priors, 0).astype(np.float32), values
    return evaluate_leaves


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_halving_schedule_by_hand():
    """The visit count, before the simulation, of the root move each simulation goes to."""
    assert halving_schedule(4, 8).tolist() == [0, 0, 0, 0, 1, 1, 2, 2]  # 2 phases: 4 moves x 1, then 2 moves x 2
    # m = 7, n = 64: ceil(log2 7) = 3 phases. 64 // (3 * 7) = 3 rounds of 7 moves; 64 // (3 * 3) = 7 rounds of 3;
    # 64 // (3 * 2) = 10 rounds of 2, and the last 2 simulations one more round of 2
    expected = [0] * 7 + [1] * 7 + [2] * 7 + [v for v in range(3, 10) for _ in range(3)] + \
        [v for v in range(10, 20) for _ in range(2)] + [20, 20]
    assert halving_schedule(7, 64).tolist() == expected and len(expected) == 64
    assert halving_schedule(2, 5).tolist() == [0, 0, 1, 1, 2]
    assert halving_schedule(1, 3).tolist() == [0, 1, 2]  # one move: every simulation goes to it
    assert halving_schedule(16, 8).tolist() == [0] * 8  # fewer simulations than moves: the first 8 once each


def test_sequential_halving_keeps_the_best_move_by_completed_q_and_its_target_is_the_improved_policy():
    """Uniform priors, no Gumbel noise, 16 simulations over 7 moves (3 phases: 7 x 1, 3 x 1, 2 x 2, then 2 x 1):
    the 3 moves of best Q (columns 3, 2, 6) survive the first phase, the 2 best of those (3, 2) the second; the move
    played is column 3, the best by completed Q, and the target is softmax(log p + (50 + max N) (Q + 1) / 2)."""
    game = make_env(*C4)
    priors = np.full(7, 1 / 7)
    tree, moves, pi = gumbel_search(game, game.initial_state(), first_move_values(priors), 16, 16,
                                    np.zeros(1, bool), None)
    visits = np.array([1, 1, 5, 5, 1, 1, 2])
    assert tree.N[0, 0].tolist() == visits.tolist() and moves.tolist() == [3]
    mean = Q / visits  # every move visited: completed Q is the mean value
    assert np.allclose(tree.W[0, 0] / tree.N[0, 0], mean)
    expected = softmax(np.log(priors) + (50 + 5) * (mean + 1) / 2)
    assert np.allclose(pi[0], expected, atol=1e-6) and pi[0].argmax() == 3


def test_the_move_played_is_the_best_of_the_last_moves_left_in_not_of_all():
    """As above with column 1 worth 0.25: columns 3, 2, 1 survive the first phase, 3 and 2 the second. At the end
    column 6, dropped after one visit, has the largest completed Q (0.2 against column 3's 0.9 / 5 = 0.18), but the
    move is chosen among the moves left in: column 3."""
    game = make_env(*C4)
    q = np.array([-0.5, 0.25, 0.3, 0.9, 0.0, -0.2, 0.2])
    tree, moves, _ = gumbel_search(game, game.initial_state(), first_move_values(np.full(7, 1 / 7), q=q), 16, 16,
                                   np.zeros(1, bool), None)
    assert tree.N[0, 0].tolist() == [1, 2, 5, 5, 1, 1, 1]
    completed = alphazero.completed_q(tree, np.array([0]), np.array([0]))[0]
    assert completed.argmax() == 6 and moves.tolist() == [3]


def test_below_the_root_the_gumbel_search_uses_its_own_rule_not_puct(monkeypatch):
    """Every choice below a Gumbel root is gumbel_interior's; PUCT is never called."""
    calls = {"puct": 0, "interior": 0}
    real_puct, real_interior = alphazero.puct, alphazero.gumbel_interior

    def puct(*a, **k):
        calls["puct"] += 1
        return real_puct(*a, **k)

    def interior(*a, **k):
        calls["interior"] += 1
        return real_interior(*a, **k)

    monkeypatch.setattr(alphazero, "puct", puct)
    monkeypatch.setattr(alphazero, "gumbel_interior", interior)
    game = make_env(*C4)
    gumbel_search(game, game.initial_state(), first_move_values(np.full(7, 1 / 7)), 32, 16, np.zeros(1, bool), None)
    assert calls["puct"] == 0 and calls["interior"] >= 32 - 7  # every simulation after a root move's first visit


def test_unvisited_moves_complete_with_v_mix_and_m_limits_the_moves_considered():
    """--gumbel-actions 4, 4 simulations: the 4 moves of largest prior (columns 1, 3, 5, 2) get one visit each, the
    rest none. Their completed Q is v_mix = (v + sum N * sum p Q / sum p) / (1 + sum N), sums over the visited moves:
    (0.25 + 4 * (0.3 * 0.1 + 0.25 * 0.9 + 0.2 * -0.2 + 0.1 * 0.3) / 0.85) / 5 = 0.2805882."""
    game = make_env(*C4)
    priors = np.array([0.05, 0.3, 0.1, 0.25, 0.05, 0.2, 0.05])
    tree, moves, pi = gumbel_search(game, game.initial_state(), first_move_values(priors), 4, 4, np.zeros(1, bool),
                                    None)
    assert tree.N[0, 0].tolist() == [0, 1, 1, 1, 0, 1, 0]
    v_mix = 0.2805882
    completed = np.array([v_mix, 0.1, 0.3, 0.9, v_mix, -0.2, v_mix])
    assert np.allclose(alphazero.completed_q(tree, np.array([0]), np.array([0]))[0], completed)
    assert np.allclose(pi[0], softmax(np.log(priors) + (50 + 1) * (completed + 1) / 2), atol=1e-6)
    assert moves.tolist() == [3]  # of the moves left in (visited the most), the best: log p + sigma(Q)


def test_below_the_root_the_move_whose_visits_lag_its_improved_policy_most():
    """gumbel_interior on a hand-filled node: N = (2, 0, 1, 0, 0, 0, 0), W = (0.04, 0, -0.03, ...), p as below, v = 0.1.
    Completed Q: 0.02, -0.03 for the visited moves; v_mix = (0.1 + 3 * (0.3 * 0.02 + 0.2 * -0.03) / 0.5) / 4 = 0.025
    for the rest. sigma = (50 + 2) (Q + 1) / 2. The scores pi' - N / (1 + 3), worked out term by term below, put
    column 1 first: column 0 has the largest pi' but already half the visits."""
    game = make_env(*C4)
    tree = Tree(game, game.initial_state(), 1, gumbel=True)
    tree.N[0, 0] = [2, 0, 1, 0, 0, 0, 0]
    tree.W[0, 0] = [0.04, 0, -0.03, 0, 0, 0, 0]
    p = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    tree.P[0, 0], tree.V[0, 0] = p, 0.1
    q = [0.02, 0.025, -0.03, 0.025, 0.025, 0.025, 0.025]
    logits = [math.log(p[a]) + 26 * (q[a] + 1) for a in range(7)]
    total = sum(math.exp(x) for x in logits)
    improved = [math.exp(x) / total for x in logits]
    scores = [improved[a] - [2, 0, 1, 0, 0, 0, 0][a] / 4 for a in range(7)]
    ok = np.ones((1, 7), bool)
    got = alphazero.gumbel_interior(tree, np.array([0]), np.array([0]), ok)[0]
    assert np.allclose(got, scores, atol=1e-6) and got.argmax() == 1 == int(np.argmax(scores))
    assert np.allclose(alphazero.improved_policy(tree, np.array([0]), np.array([0]), ok)[0], improved, atol=1e-6)


def test_gumbel_noise_samples_the_move_only_where_explore():
    """No value anywhere and uniform priors: without noise every root plays the same move; with noise (explore) the
    move is the Gumbel-max sample, spread over the columns."""
    game = make_env(*C4)
    roots, neutral = np.repeat(game.initial_state(), 64, 0), first_move_values(np.full(7, 1 / 7), 0.0)
    flat = lambda boards: (neutral(boards)[0], np.zeros(len(boards), np.float32))
    explore = np.arange(64) < 32
    _, moves, _ = gumbel_search(game, roots, flat, 8, 16, explore, np.random.default_rng(0))
    assert len(set(moves[32:].tolist())) == 1 and len(set(moves[:32].tolist())) >= 5


def test_self_play_window_mixes_q_into_z_and_leaves_out_cheap_searches():
    """Tic-tac-toe, X wins with 0-1-2 on move 5. Moves 2 and 4 (O's) were cheap searches (pi = 0): not stored. The
    stored z is 0.75 z + 0.25 q: X's positions have z = +1 and q = 0.1, 0.3, 0.5."""
    game = make_env(*TTT)
    selfplay = SelfPlay(game, 1, 10, share=1, value_mix=0.25)
    q, live = [0.1, -0.2, 0.3, -0.4, 0.5], np.array([0])
    for t, move in enumerate([0, 3, 1, 4, 2]):
        pi = np.zeros((1, 9), np.float32) if t % 2 else np.eye(9, dtype=np.float32)[move: move + 1]
        finished, positions = selfplay.play(live, np.array([move]), pi, np.array([q[t]], np.float32))
    assert (finished, positions) == (1, 3) and len(selfplay.window) == 1
    boards, pis, zs = selfplay.window[0]
    assert (boards != 0).sum(1).tolist() == [0, 2, 4] and pis.argmax(1).tolist() == [0, 1, 2]
    assert np.allclose(zs, [0.775, 0.825, 0.875])


def record_thinking(monkeypatch, **overrides):
    """A tiny tic-tac-toe run, recording every think() (self-play's search) and every window an update saw."""
    calls = {"think": [], "update": []}
    real_think, real_update = alphazero.think, alphazero.update

    def think(game, boards, evaluate_leaves, simulations, args, explore, rng, noise):
        out = real_think(game, boards, evaluate_leaves, simulations, args, explore, rng, noise)
        calls["think"].append(dict(boards=boards.copy(), simulations=simulations, noise=noise, explore=explore.copy(),
                                   moves=out[0].copy(), pi=out[1].copy(), q=out[2].copy()))
        return out

    def update(net, optimizer, window, steps, *rest):
        calls["update"].append(dict(window=list(window), lr=optimizer.param_groups[0]["lr"], steps=steps))
        return real_update(net, optimizer, window, steps, *rest)

    monkeypatch.setattr(alphazero, "think", think)
    monkeypatch.setattr(alphazero, "update", update)
    args = Args(**TINY | overrides)
    return train(args), args, calls


def searched(calls, board, pi, **match):
    """The recorded searches (any row) of this board whose policy target is pi, and whose other fields match."""
    return [(c, r) for c in calls["think"] for r in range(len(c["boards"]))
            if np.array_equal(c["boards"][r], board) and np.allclose(c["pi"][r], pi)
            and all(c[k] == v for k, v in match.items())]


def test_wiring_playout_cap_trains_only_on_full_searches(tmp_path, monkeypatch):
    """--playout-cap 0.5: each move is a full search (6 simulations, root noise) or a cheap one (2, no noise), about
    half and half; the window holds only positions of full searches, with their own pi, and z still alternates."""
    monkeypatch.chdir(tmp_path)
    _, args, calls = record_thinking(monkeypatch, playout_cap=0.5, cheap_simulations=2)
    noise = (args.dirichlet_alpha, args.dirichlet_epsilon)
    kinds = [(c["simulations"], c["noise"]) for c in calls["think"]]
    assert set(kinds) == {(6, noise), (2, None)}
    full = sum(len(c["boards"]) for c in calls["think"] if c["simulations"] == 6)
    assert 0.3 < full / sum(len(c["boards"]) for c in calls["think"]) < 0.7
    window = calls["update"][-1]["window"]
    stored = sum(len(zs) for _, _, zs in window)
    for boards, pis, zs in window:
        assert np.allclose(pis.sum(1), 1)
        for board, pi in zip(boards, pis):
            assert searched(calls, board, pi, simulations=6), "a stored position that no full search produced"
        stones = (boards != 0).sum(1)
        assert len(set((zs * (-1.0) ** stones).tolist())) == 1  # z flips with the player to move
    previous = []
    for call in calls["update"]:  # the replay ratio counts the stored (full-search) positions of the new games
        new = [g for g in call["window"] if not any(g is old for old in previous)]
        positions, previous = sum(len(zs) for *_, zs in new), call["window"]
        assert call["steps"] == max(1, round(args.replay_ratio * positions / args.batch_size))
    assert stored < sum(len(c["boards"]) for c in calls["think"])  # cheap positions were left out


def test_wiring_value_mix_stores_half_z_half_the_searchs_q(tmp_path, monkeypatch):
    """--value-mix 0.5: every stored value target is 0.5 z + 0.5 q, with z = +-1 or 0 flipping with the player to
    move and q the root value of a search of that position."""
    monkeypatch.chdir(tmp_path)
    _, args, calls = record_thinking(monkeypatch, value_mix=0.5)
    mixed = 0
    for boards, pis, zs in calls["update"][-1]["window"]:
        outcomes = set()
        for board, pi, z in zip(boards, pis, zs):
            found = searched(calls, board, pi)
            candidates = {round(float((z - 0.5 * c["q"][r]) / 0.5), 4) for c, r in found}
            assert candidates & {-1.0, 0.0, 1.0}, (z, candidates)
            z_game = next(iter(candidates & {-1.0, 0.0, 1.0}))
            outcomes.add(z_game * (-1.0) ** int((board != 0).sum()))
            mixed += abs(z) not in (0.0, 1.0)
        assert len(outcomes) == 1
    assert mixed > 0


def test_wiring_cosine_schedule_anneals_the_learning_rate_to_zero_over_the_budget(tmp_path, monkeypatch):
    """--lr-schedule cosine: each update's learning rate is lr (1 + cos(pi g / G)) / 2 at its game count g, G the
    budget (13 games, updates after every 3 finished games: g in {3, ..., 13}); the last, at g = G, is 0."""
    monkeypatch.chdir(tmp_path)
    logged = []
    real_log = alphazero.Run.log
    monkeypatch.setattr(alphazero.Run, "log", lambda run, games, scalars: (logged.append(games),
                                                                            real_log(run, games, scalars)))
    _, args, calls = record_thinking(monkeypatch, lr_schedule="cosine")
    rates = [c["lr"] for c in calls["update"]]
    assert len(rates) == len(logged) >= 3 and logged[-1] == 13
    for games, rate in zip(logged, rates):
        assert rate == pytest.approx(2e-3 * (1 + math.cos(math.pi * games / 13)) / 2, abs=1e-12)
    assert rates[-1] == pytest.approx(0, abs=1e-12) and rates == sorted(rates, reverse=True)
    _, _, constant = record_thinking(monkeypatch)
    assert {c["lr"] for c in constant["update"]} == {2e-3}


def test_wiring_gumbel_self_play_trains_on_improved_policies_and_explores_the_first_moves(tmp_path, monkeypatch):
    """--search gumbel: the window's targets are the searches' pi' (not visit counts), explore is on for the first
    --temperature-moves moves; in evaluation the agent's search has no noise."""
    monkeypatch.chdir(tmp_path)
    real, evaluation = alphazero.gumbel_search, []

    def spy(game, roots, evaluate_leaves, simulations, m, explore, rng, solver=True):
        if rng is None:
            evaluation.append(explore.copy())
        return real(game, roots, evaluate_leaves, simulations, m, explore, rng, solver)

    monkeypatch.setattr(alphazero, "gumbel_search", spy)
    metrics, args, calls = record_thinking(monkeypatch, search="gumbel", eval_games=4)
    assert evaluation and not any(e.any() for e in evaluation)
    soft = 0
    for boards, pis, _ in calls["update"][-1]["window"]:
        for t, (board, pi) in enumerate(zip(boards, pis)):
            found = searched(calls, board, pi, simulations=6)
            assert found and all(c["explore"][r] == (t < args.temperature_moves) for c, r in found)
            soft += not np.allclose(pi * 6, np.round(pi * 6))  # not a visit-count distribution of 6 simulations
    assert soft > 0


def test_gumbel_agent_plays_a_win_in_one_and_blocks_whatever_its_network_says():
    """The solver with --search gumbel: on positions with a win in one (or a forced block), a network whose priors
    point elsewhere and whose value lies still plays the win (block), and pi' has no weight on other moves."""
    from test_alphazero import Liar, positions_with
    for spec in (TTT, C4):
        for kind in ("win", "block"):
            game, args = make_env(*spec), Args(game=spec[0], cuda=False, search="gumbel")
            boards, good = positions_with(spec, kind, seed=11)
            bad = {b.tobytes(): int(np.flatnonzero(game.legal_moves(b[None])[0] & ~g)[0]) for b, g in zip(boards, good)}
            liar = Liar(game, bad, 1.0).eval()
            moves = alphazero.agent_moves(game, liar, args, boards)
            assert good[np.arange(len(boards)), moves].all()
            _, moves, pi = gumbel_search(game, boards, alphazero.net_evaluator(liar, game), args.simulations, 16,
                                         np.ones(len(boards), bool), np.random.default_rng(0))
            assert good[np.arange(len(boards)), moves].all() and (pi[~good] == 0).all()



def test_completed_q_takes_proven_results_over_means_and_v_mix():
    """A move proven won after two visits whose mean was 0.1 counts 1; a move proven lost and never visited counts -1,
    not v_mix; the others as before: the mean if visited, else v_mix."""
    game = make_env(*C4)
    tree = Tree(game, game.initial_state(), 1, gumbel=True)
    tree.N[0, 0] = [2, 1, 0, 0, 0, 0, 0]
    tree.W[0, 0] = [0.2, -0.4, 0, 0, 0, 0, 0]
    tree.P[0, 0] = [0.3, 0.1, 0.2, 0.1, 0.1, 0.1, 0.1]
    tree.result[0, 0, 0], tree.result[0, 0, 2] = 1.0, -1.0
    # v_mix: (v + sum N * (0.3 * 0.1 + 0.1 * -0.4) / (0.3 + 0.1)) / (1 + sum N) = (0 + 3 * -0.025) / 4 = -0.01875
    expected = [1.0, -0.4, -1.0, -0.01875, -0.01875, -0.01875, -0.01875]
    assert np.allclose(alphazero.completed_q(tree, np.array([0]), np.array([0]))[0], expected)


@pytest.mark.parametrize("search", ["puct", "gumbel"])
def test_q_is_the_value_for_the_player_to_move(search):
    """think()'s q on tic-tac-toe boards where the player to move wins at once: every simulation goes to a proven
    win, so q = +1 (the mover's view), whatever the network says."""
    from test_alphazero import Liar, positions_with
    game, args = make_env(*TTT), Args(game="tictactoe", cuda=False, search=search)
    boards, good = positions_with(TTT, "win", seed=11)
    liar = Liar(game, {}, -1.0).eval()
    moves, pi, q = alphazero.think(game, boards, alphazero.net_evaluator(liar, game), 32, args,
                                   np.zeros(len(boards), bool), np.random.default_rng(0), None)
    assert np.allclose(q, 1.0) and good[np.arange(len(boards)), moves].all()
