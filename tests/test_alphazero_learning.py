"""The tic-tac-toe bar, in a file of its own so that it runs on its own pytest worker."""

import torch

import alphazero
from alphazero import Args, evaluate, exhaustive_losses, make_env


def test_trained_agent_never_loses_to_any_line_of_play():
    """Default settings: the agent's search (default simulations, no noise, most visited move) is never beaten,
    moving first or second, by an opponent that tries every legal reply; so it never loses to perfect play."""
    metrics = alphazero.train(Args(cuda=False))
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
