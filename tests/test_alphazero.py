import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, only_run_dir, read_scalars, run_script

import alphazero
from alphazero import Args, Net, Tree, evaluate, exhaustive_losses, make_env, move_values, search, train

TTT, C4 = ("tictactoe", 3, 3, 3), ("connect4", 6, 7, 4)
DIRECTIONS = {"horizontal": (0, 1), "vertical": (1, 0), "diagonal": (1, 1), "anti-diagonal": (1, -1)}
TINY = dict(total_games=64, num_envs=16, simulations=8, eval_every=32, eval_games=4, rollouts=8, cuda=False)


def neutral(game):
    """A leaf evaluator that knows nothing: uniform priors over the legal moves, value 0."""
    def evaluate_leaves(boards):
        legal = game.legal_moves(boards)
        return legal / legal.sum(1, keepdims=True), np.zeros(len(boards), np.float32)
    return evaluate_leaves


def play(game, moves):
    board = game.initial_state()
    for move in moves:
        board = game.next_state(board, np.array([move]))
    return board


def random_boards(game, n, seed):
    """Non-terminal boards from random play, of every length."""
    rng, boards = np.random.default_rng(seed), []
    while len(boards) < n:
        board = game.initial_state()
        while not game.terminal_value(board)[0][0]:
            boards.append(board[0])
            moves = np.flatnonzero(game.legal_moves(board)[0])
            board = game.next_state(board, rng.choice(moves, size=1))
    return np.stack(boards[:n])


def brute_force_lines(board2d, k):
    """Directions in which the player who just moved (-1) has k in a row, by scanning every cell."""
    rows, cols = board2d.shape
    found = set()
    for name, (dr, dc) in DIRECTIONS.items():
        for r in range(rows):
            for c in range(cols):
                cells = [(r + i * dr, c + i * dc) for i in range(k)]
                if all(0 <= y < rows and 0 <= x < cols and board2d[y, x] == -1 for y, x in cells):
                    found.add(name)
    return found


@pytest.mark.parametrize("spec", [TTT, C4])
def test_terminal_detection_every_line_of_every_direction(spec):
    game, k = make_env(*spec), spec[3]
    rows, cols = spec[1], spec[2]
    count = {name: 0 for name in DIRECTIONS}
    for r in range(rows):
        for c in range(cols):
            for name, (dr, dc) in DIRECTIONS.items():
                cells = [(r + i * dr) * cols + c + i * dc for i in range(k)
                         if 0 <= r + i * dr < rows and 0 <= c + i * dc < cols]
                if len(cells) < k:
                    continue
                count[name] += 1
                board = game.initial_state()
                board[0, cells] = -1  # the previous mover's line: the player to move has lost
                done, value = game.terminal_value(board)
                assert done[0] and value[0] == -1, (name, cells)
                board[0, cells[0]] = 0  # one stone short
                assert not game.terminal_value(board)[0][0], (name, cells)
                board[0, cells] = 1  # the player to move's own stones are no loss
                assert game.terminal_value(board)[1][0] == 0
    assert all(count.values()) and sum(count.values()) == len(game.lines) == {3: 8, 4: 69}[k]
    full = np.where(np.arange(rows * cols) % 2 == 0, 1, -1)[None].astype(np.int8)
    if not brute_force_lines(full.reshape(rows, cols), k):  # a full board without a line is a draw
        done, value = game.terminal_value(full)
        assert done[0] and value[0] == 0


@pytest.mark.parametrize("spec", [TTT, C4])
def test_terminal_detection_matches_brute_force_in_random_games(spec):
    game, rng, seen = make_env(*spec), np.random.default_rng(0), set()
    for _ in range(300):
        board = game.initial_state()
        while True:
            board = game.next_state(board, np.array([rng.choice(np.flatnonzero(game.legal_moves(board)[0]))]))
            lines = brute_force_lines(board[0].reshape(spec[1], spec[2]), spec[3])
            done, value = game.terminal_value(board)
            assert value[0] == (-1 if lines else 0) and done[0] == bool(lines or (board != 0).all())
            seen |= lines
            if done[0]:
                break
    assert seen == set(DIRECTIONS)  # wins of every direction came up


def test_connect_four_stones_drop_and_full_columns_are_illegal():
    game = make_env(*C4)
    board = play(game, [3, 3, 3])  # X, O, X in column 3; O to move
    assert [board[0, r * 7 + 3] for r in range(6)] == [0, 0, 0, -1, 1, -1]  # O to move: own = +1
    board = play(game, [3] * 6)
    assert not game.legal_moves(board)[0, 3] and game.legal_moves(board)[0].sum() == 6


def test_puct_selection_and_backup_on_a_hand_built_tree():
    game, c_puct = make_env(*TTT), 1.5
    tree = Tree(game, game.initial_state(), simulations=4)
    # root: P, N, W of moves 0, 4 and 8; move 4 already leads to node 1
    tree.P[0, 0, [0, 4, 8]] = 0.5, 0.3, 0.2
    tree.N[0, 0, [0, 4]], tree.W[0, 0, [0, 4]] = (4, 1), (2.0, 0.8)
    tree.child[0, 0, 4], tree.size[0] = 1, 2
    tree.board[0, 1] = game.next_state(tree.board[0, :1], np.array([4]))[0]
    tree.legal[0, 1] = game.legal_moves(tree.board[0, 1:2])[0]
    tree.P[0, 1, [0, 1]], tree.N[0, 1, 1], tree.W[0, 1, 1] = (0.6, 0.4), 1, -0.5
    # by hand: N(root) = 1 + 5; U = Q + 1.5 P sqrt(6) / (1 + N)
    u_root = {0: 2.0 / 4 + 1.5 * 0.5 * 6**0.5 / 5, 4: 0.8 + 1.5 * 0.3 * 6**0.5 / 2, 8: 1.5 * 0.2 * 6**0.5}
    u_node = {0: 1.5 * 0.6 * 2**0.5, 1: -0.5 + 1.5 * 0.4 * 2**0.5 / 2}
    assert max(u_root, key=u_root.get) == 4 and max(u_node, key=u_node.get) == 0
    scores = alphazero.puct(tree.N[0, 0], tree.W[0, 0], tree.P[0, 0], tree.legal[0, 0], c_puct)
    assert scores[[0, 4, 8]] == pytest.approx([u_root[0], u_root[4], u_root[8]], rel=1e-6)

    def leaf(boards):  # the new leaf: 0.6 for its player to move (the root's player, two moves on)
        return np.full((len(boards), 9), 1 / 9, np.float32), np.full(len(boards), 0.6, np.float32)

    alphazero.simulate(tree, game, leaf, c_puct)
    assert tree.child[0, 1, 0] == 2 and tree.size[0] == 3  # selected 4, then 0, and created node 2 there
    assert np.array_equal(tree.board[0, 2], play(game, [4, 0])[0])
    assert (tree.N[0, 0, 4], tree.W[0, 0, 4]) == (2, pytest.approx(0.8 + 0.6))  # +v: the root's player
    assert (tree.N[0, 1, 0], tree.W[0, 1, 0]) == (1, pytest.approx(-0.6))  # -v: the opponent chose this edge
    assert tree.N[0, 0, 0] == 4 and tree.N[0, 1, 1] == 1


@pytest.mark.parametrize(("spec", "moves", "win"), [
    (TTT, [0, 3, 1, 4], 2),  # X: 0 1, O: 3 4; X wins at 2 (blocking at 5 would be second best)
    (C4, [0, 1, 0, 1, 0, 1], 0),  # X has three in column 0, O three in column 1
])
def test_value_sign_forced_win_in_one(spec, moves, win):
    game = make_env(*spec)
    tree = search(game, play(game, moves), neutral(game), simulations=50, c_puct=1.5)
    assert tree.N[0, 0].argmax() == win
    assert tree.W[0, 0, win] / tree.N[0, 0, win] == 1  # every visit ends in the win: +1 for the mover
    others = np.delete(tree.W[0, 0] / np.maximum(tree.N[0, 0], 1), win)
    assert (others < 1).all() and tree.N[0, 0, win] > 25


def test_value_sign_forced_win_in_two():
    """X (0, 5) against O (1, 3): only 8 wins (a fork: 2 and 4), every other move draws."""
    game = make_env(*TTT)
    board = play(game, [0, 1, 5, 3])
    values = move_values(game, board[0], {})
    assert values[8] == 1 and (values[[2, 4, 6, 7]] == 0).all()  # the negamax player agrees
    tree = search(game, board, neutral(game), simulations=400, c_puct=1.5)
    assert tree.N[0, 0].argmax() == 8
    assert tree.W[0, 0, 8] / tree.N[0, 0, 8] > 0.5


def test_terminal_nodes_are_valued_without_network_calls():
    game, calls = make_env(*TTT), []

    def counting(boards):
        assert not game.terminal_value(boards)[0].any()
        calls.append(len(boards))
        return neutral(game)(boards)

    tree = search(game, play(game, [0, 3, 1, 4, 8, 2]), counting, simulations=30, c_puct=1.5)  # 3 cells free
    nodes = tree.size[0]
    assert sum(calls) == 1 + (~tree.terminal[0, 1:nodes]).sum()  # the root, and each new non-terminal node once
    assert tree.terminal[0, 1:nodes].sum() >= 2 and nodes < 31  # few positions: most simulations end in a result


def test_dirichlet_noise_only_at_the_root():
    game = make_env(*C4)
    priors = np.array([0.05, 0.1, 0.15, 0.4, 0.15, 0.1, 0.05], np.float32)

    def fixed(boards):
        return np.where(game.legal_moves(boards), priors, 0) / np.where(game.legal_moves(boards), priors, 0).sum(
            1, keepdims=True), np.zeros(len(boards), np.float32)

    roots = play(game, [0] * 6)  # column 0 full: no noise may land there
    tree = search(game, roots, fixed, 64, 1.5, noise=(1.0, 0.25), rng=np.random.default_rng(0))
    expected_root = fixed(roots)[0][0]
    noise = (tree.P[0, 0] - 0.75 * expected_root) / 0.25
    assert not np.allclose(tree.P[0, 0], expected_root)
    assert noise[0] == 0 and (noise >= -1e-6).all() and noise.sum() == pytest.approx(1, abs=1e-5)
    nodes = np.flatnonzero(~tree.terminal[0, : tree.size[0]])[1:]
    assert len(nodes) > 30
    for n in nodes:  # every other node keeps the evaluator's priors exactly
        assert np.array_equal(tree.P[0, n], fixed(tree.board[0, n: n + 1])[0][0])
    plain = search(game, roots, fixed, 64, 1.5)
    assert np.array_equal(plain.P[0, 0], expected_root)


@pytest.mark.parametrize("spec", [TTT, C4])
def test_symmetries_keep_policy_targets_aligned_with_boards(spec):
    game = make_env(*spec)
    assert len(game.cell_perms) == (8 if spec[0] == "tictactoe" else 2)
    boards = random_boards(game, 40, seed=1)
    pis = np.random.default_rng(2).random((len(boards), game.num_actions)).astype(np.float32)
    for s in range(len(game.cell_perms)):
        sym_boards, sym_pis = game.symmetry(boards, pis, np.full(len(boards), s))
        assert np.array_equal(game.legal_moves(sym_boards), game.legal_moves(boards)[:, game.action_perms[s]])
        for i in range(len(boards)):
            for move in np.flatnonzero(game.legal_moves(sym_boards[i: i + 1])[0]):
                original = game.action_perms[s][move]  # the move the target's entry came from
                assert sym_pis[i, move] == pis[i, original]
                after = game.next_state(boards[i: i + 1], np.array([original]))
                after_sym = game.next_state(sym_boards[i: i + 1], np.array([move]))
                assert np.array_equal(game.symmetry(after, pis[:1], np.array([s]))[0], after_sym)
    transformed = {game.symmetry(boards[-1:], pis[:1], np.array([s]))[0].tobytes() for s in range(len(game.cell_perms))}
    assert len(transformed) > 1


@pytest.mark.parametrize("spec", [TTT, C4])
def test_batched_and_one_by_one_leaf_evaluation_give_the_same_search(spec):
    game = make_env(*spec)
    torch.manual_seed(0)
    net = Net(game, 32, 3).eval()
    boards = random_boards(game, 12, seed=3)
    batched = search(game, boards, alphazero.net_evaluator(net, game, batched=True), 32, 1.5)
    single = search(game, boards, alphazero.net_evaluator(net, game, batched=False), 32, 1.5)
    assert np.array_equal(batched.N, single.N) and np.array_equal(batched.child, single.child)
    np.testing.assert_allclose(batched.W, single.W, atol=1e-5)
    alone = search(game, boards[5:6], alphazero.net_evaluator(net, game), 32, 1.5)  # trees in a batch do not interact
    assert np.array_equal(alone.N[0], batched.N[5])


def test_choose_moves_temperature():
    counts = np.array([[10, 30, 0, 60], [10, 30, 0, 60]], np.float32)
    rng = np.random.default_rng(0)
    picks = np.array([alphazero.choose_moves(counts, np.array([True, False]), rng)[0] for _ in range(4000)])
    assert np.bincount(picks[:, 0], minlength=4) / 4000 == pytest.approx([0.1, 0.3, 0.0, 0.6], abs=0.03)
    assert (picks[:, 1] == 3).all()  # tau -> 0: always the most visited move
    assert alphazero.choose_moves(counts, np.array([True, False]), rng)[1] == pytest.approx(counts / 100)


def test_minimax_and_pure_mcts_players():
    game, rng = make_env(*TTT), np.random.default_rng(0)
    assert move_values(game, game.initial_state()[0], {}).max() == 0  # tic-tac-toe is a draw
    memo = {}
    perfect = lambda b: alphazero.perfect_moves(game, b, rng, memo)
    random_player = lambda b: np.where(game.legal_moves(b), rng.random(b.shape), -1).argmax(1)
    assert (alphazero.play_games(game, perfect, perfect, np.arange(20) % 2 == 0) == 0).all()
    against_random = alphazero.play_games(game, perfect, random_player, np.arange(200) % 2 == 0)
    assert (against_random >= 0).all() and (against_random > 0).mean() > 0.7
    c4 = make_env(*C4)
    mcts = lambda b: search(c4, b, alphazero.rollout_evaluator(c4, rng), 50, 1.5).N[:, 0].argmax(1)
    c4_random = lambda b: np.where(c4.legal_moves(b), rng.random((len(b), 7)), -1).argmax(1)
    assert (alphazero.play_games(c4, mcts, c4_random, np.arange(20) % 2 == 0) > 0).mean() >= 0.9


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untrained_network_with_the_same_search_loses(seed):
    """The bar's control: the default search on an untrained network is beaten when every reply is tried."""
    args = Args(cuda=False)
    game = make_env(args.game, args.rows, args.cols, args.win_length)
    torch.manual_seed(seed)
    net = Net(game, args.channels, args.blocks).eval()
    agent = lambda boards: alphazero.agent_moves(game, net, args, boards)
    assert exhaustive_losses(game, agent, True) + exhaustive_losses(game, agent, False) > 0


def test_exhaustive_check_counts_losing_lines():
    game = make_env(*TTT)
    first_free = lambda boards: game.legal_moves(boards).argmax(1)  # plays 1, 2, 3, ... : easy to beat
    losses = exhaustive_losses(game, first_free, agent_first=True)
    assert 0 < losses < 8 * 6 * 4 * 2
    memo, rng = {}, np.random.default_rng(0)
    assert exhaustive_losses(game, lambda b: alphazero.perfect_moves(game, b, rng, memo), True) == 0
    assert exhaustive_losses(game, lambda b: alphazero.perfect_moves(game, b, rng, memo), False) == 0


def test_cli_end_to_end_and_tensorboard_events():
    result = run_script("alphazero.py", "--total-games", "128", "--eval-every", "64", "--eval-games", "10",
                        "--rollouts", "20", "--no-cuda")
    assert result.returncode == 0, result.stderr
    assert "device: cpu" in result.stdout
    scalars = read_scalars(only_run_dir())
    for tag in ("losses/policy_loss", "losses/value_loss", "charts/SPS", "charts/episodic_length",
                "charts/draw_rate", "eval/exhaustive_losses"):
        assert tag in scalars, tag
    for opponent in ("random", "mcts", "minimax"):
        steps = None
        for outcome in ("win", "draw", "loss"):
            assert f"eval/{opponent}_{outcome}" in scalars
            steps = [step for step, _ in scalars[f"eval/{opponent}_{outcome}"]]
        assert len(steps) == 2 and 64 <= steps[0] < 128 <= steps[1]
        total = sum(scalars[f"eval/{opponent}_{o}"][-1][1] for o in ("win", "draw", "loss"))
        assert total == pytest.approx(1)
    assert len(scalars["losses/policy_loss"]) >= 2  # one point per iteration of num_envs games
    assert all(0 < v < 3 for _, v in scalars["losses/policy_loss"] + scalars["losses/value_loss"])
    assert 5 <= scalars["charts/episodic_length"][-1][1] <= 9


def test_connect_four_runs_end_to_end():
    metrics = train(Args(game="connect4", **TINY))
    assert metrics["global_step"] >= 64 and "eval/minimax_win" not in metrics
    assert metrics["eval/random_win"] + metrics["eval/random_draw"] + metrics["eval/random_loss"] == pytest.approx(1)


def test_same_seed_same_run(tmp_path, monkeypatch):
    runs = []
    for folder, seed in (("a", 7), ("b", 7), ("c", 8)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        scalars = read_scalars(train(Args(seed=seed, **TINY))["run_dir"])
        runs.append([v for tag in ("losses/policy_loss", "losses/value_loss", "charts/episodic_length")
                     for _, v in scalars[tag]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_checkpoint_loads_back_with_weights_only():
    metrics = train(Args(save_model=True, **TINY))
    checkpoint = torch.load(metrics["model_path"], weights_only=True)
    assert set(checkpoint) == {"net", "optimizer", "args"} and checkpoint["args"]["total_games"] == 64
    results = evaluate(metrics["model_path"], "random", 4, seed=1 + 10_000)  # the seed the final evaluation used
    assert np.mean(results > 0) == pytest.approx(metrics["eval/random_win"])
    assert np.mean(results < 0) == pytest.approx(metrics["eval/random_loss"])


def run_play(checkpoint: str, moves: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, os.path.join(REPO, "alphazero.py"), "--play", checkpoint, *args],
                          input=moves, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("game", ["tictactoe", "connect4"])
def test_play_in_the_terminal(game):
    path = train(Args(game=game, save_model=True, **TINY))["model_path"]
    width = 9 if game == "tictactoe" else 7
    tries = f"x\n0\n{width + 1}\n1\n1\n" + "".join(f"{m}\n" for m in list(range(1, width + 1)) * 6)
    result = run_play(path, tries)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "illegal move 'x'" in out and "illegal move '0'" in out and f"illegal move '{width + 1}'" in out
    assert out.count("the agent plays") >= 1
    assert out.strip().splitlines()[-1] in ("you win", "you lose", "draw")
    if game == "tictactoe":
        assert "1 2 3\n4 5 6\n7 8 9" in out  # the empty board, cells numbered
        assert "illegal move '1'" in out  # the second 1: the cell is taken
    second = run_play(path, "", "--no-play-first")  # the agent opens; then stdin ends
    assert second.returncode == 0 and "the agent plays" in second.stdout
    assert "no more input" in second.stdout


def test_help_documents_every_argument():
    result = run_script("alphazero.py", "--help")
    assert result.returncode == 0
    for field in alphazero.Args.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in result.stdout, field


@pytest.mark.parametrize(("argv", "message"), [
    (["--num-envs", "0"], "--num-envs must be positive"),
    (["--simulations", "0"], "--simulations must be positive"),
    (["--total-games", "-5"], "--total-games must be positive"),
    (["--c-puct", "0"], "--c-puct must be positive"),
    (["--lr", "0"], "--lr must be positive"),
    (["--dirichlet-epsilon", "1.5"], "--dirichlet-epsilon must be in [0, 1]"),
    (["--dirichlet-alpha", "-1"], "--dirichlet-alpha must be positive"),
    (["--temperature-moves", "-1"], "--temperature-moves must be non-negative"),
    (["--game", "chess"], "unknown --game"),
    (["--win-length", "5"], "does not fit"),
    (["--play", "missing.pt"], "--play checkpoint not found"),
])
def test_bad_arguments_exit_with_one_line(argv, message):
    result = run_script("alphazero.py", *argv)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
