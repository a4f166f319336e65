"""The tic-tac-toe bar, in a file of its own so that it runs on its own pytest worker."""

import os

import numpy as np
import pytest
import torch

import alphazero
from alphazero import Args, evaluate, exhaustive_losses, make_env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training run at the default settings (about a CPU-minute) in a folder of its own, shared by the tests
    below; the checkpoint's path made absolute."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("trained"))
        metrics = alphazero.train(Args(cuda=False))
        return metrics | {"checkpoint": os.path.abspath(metrics["checkpoint"])}


def test_trained_agent_never_loses_to_any_line_of_play(trained):
    """Default settings: the agent's search (default simulations, no noise, most visited move) is never beaten,
    moving first or second, by an opponent that tries every legal reply; so it never loses to perfect play."""
    metrics = trained
    assert metrics["eval/exhaustive_losses"] == 0, metrics
    assert metrics["eval/minimax_loss"] == 0 and metrics["eval/random_loss"] == 0, metrics
    # the checkpoint, loaded back with weights_only=True, passes the same check on its own
    net, args = alphazero.load(metrics["checkpoint"])
    game = make_env(args.game, args.rows, args.cols, args.win_length)
    agent = lambda boards: alphazero.agent_moves(game, net, args, boards)
    assert exhaustive_losses(game, agent, agent_first=True) == 0
    assert exhaustive_losses(game, agent, agent_first=False) == 0
    results = evaluate(metrics["checkpoint"], "minimax", 50, seed=0)
    assert (results == 0).all()  # perfect play against perfect play: draws only
    assert (evaluate(metrics["checkpoint"], "random", 100, seed=0) > 0).mean() > 0.85
    # the same search on the untrained network (the test file checks 3 seeds of it) is beaten
    torch.manual_seed(0)
    untrained = alphazero.Net(game, args.channels, args.blocks).eval()
    agent = lambda boards: alphazero.agent_moves(game, untrained, args, boards)
    assert exhaustive_losses(game, agent, True) + exhaustive_losses(game, agent, False) > 0


def values(game, board, memo):
    """Each move's value for the player to move under perfect play (-inf: illegal), by memoised negamax."""
    key = board.tobytes()
    if key not in memo:
        memo[key] = np.full(game.num_actions, -np.inf)
        for move in np.flatnonzero(game.legal_moves(board[None])[0]):
            child = game.next_state(board[None], np.array([move]))
            done, value = game.terminal_value(child)
            memo[key][move] = -value[0] if done[0] else -values(game, child[0], memo).max()
    return memo[key]


def can_win_at_once(game, board):
    moves = np.flatnonzero(game.legal_moves(board[None])[0])
    done, value = game.terminal_value(game.next_state(np.repeat(board[None], len(moves), 0), moves))
    return bool((done & (value == -1)).any())


def test_trained_agent_blocks_whenever_blocking_is_the_only_move_that_does_not_lose(trained):
    """Every reachable tic-tac-toe position, either colour to move, with no win in one for the mover, where every move
    but one lets the opponent win at once and that one (the block) does not lose: the default agent plays it."""
    net, args = alphazero.load(trained["checkpoint"])
    game = make_env(args.game, args.rows, args.cols, args.win_length)
    memo, seen, frontier, boards, blocks = {}, set(), [game.initial_state()[0]], [], []
    while frontier:  # every reachable non-terminal position
        board = frontier.pop()
        if board.tobytes() in seen or game.terminal_value(board[None])[0][0]:
            continue
        seen.add(board.tobytes())
        moves = np.flatnonzero(game.legal_moves(board[None])[0])
        children = game.next_state(np.repeat(board[None], len(moves), 0), moves)
        frontier += list(children)
        if can_win_at_once(game, board):
            continue
        safe = moves[[not can_win_at_once(game, child) for child in children]]  # the opponent cannot win at once
        if len(safe) == 1 < len(moves) and values(game, board, memo)[safe[0]] > -1:
            boards.append(board), blocks.append(safe[0])
    boards, blocks = np.array(boards), np.array(blocks)
    colours = (boards != 0).sum(1) % 2
    assert len(boards) > 100 and 0 < colours.sum() < len(boards), (len(boards), colours.sum())  # X and O to move
    moves = alphazero.agent_moves(game, net, args, boards)
    assert (moves == blocks).all(), boards[moves != blocks]
