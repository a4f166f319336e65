"""AlphaZero: one network f(s) = (p, v), PUCT tree search as the policy-improvement operator, and self-play.

Games (`--game`): tic-tac-toe and Connect Four. A state is the board seen by the player to move (+1 own stones,
-1 the opponent's), so one network plays both sides. v(s) is the outcome for the player to move in s (+1 win, 0
draw, -1 loss; the chapter's P(win) is (1 + v) / 2 when there are no draws). N(s,a), W(s,a), Q = W / N belong to
the player choosing a in s, so a leaf value v found d moves below s counts as (-1)^d v for s.

The chapter's equations, and the line that realises each (search for the tag):
    [net]     f_theta(s) = (p, v): residual conv trunk, policy logits (illegal moves masked), tanh value         Net
    [puct]    a = argmax_a Q(s,a) + c_puct P(s,a) sqrt(N(s)) / (1 + N(s,a)),  N(s) = 1 + sum_b N(s,b)           puct
    [select]  from the root, follow the PUCT choice to an edge with no node yet, or to a solved node          select
    [expand]  add the node it leads to; the new leaves of all games go through one forward pass               expand
    [backup]  N(s,a) += 1, W(s,a) += (-1)^d v along the path                                                  backup
    [solve]   proven results (MCTS-solver): a mover who can complete a line has won, a solved child proves its
              edge; PUCT and the move played take a proven win, never a proven loss  Tree.find_wins, allowed, backup
    [noise]   P(root, a) <- (1 - eps) P + eps Dir(alpha) over the legal moves, at the root only               search
    [pi-mcts] pi(a|s) = N(s,a)^(1/tau) / sum_b N(s,b)^(1/tau): tau = 1 for a game's first --temperature-moves
              moves, then tau -> 0 (the most visited move); the target is pi at tau = 1                 choose_moves
    [z]       z_t = the final result from the view of the player to move at step t                     SelfPlay.play
    [loss]    l = -pi^T log p + (z - v)^2 + c ||theta||^2 on random symmetries of replayed positions          update

Levers beyond the chapter, each a flag that is off by default (the README measures them):
    [gumbel]  --search gumbel: g ~ Gumbel(0, 1) per root move; the m moves of largest g + log p searched  gumbel_search
    [halving] sequential halving: each round, the better half by g + log p + sigma(Q) goes on        halving_schedule
    [completed-q] Q of an unvisited move: v_mix, the network's v mixed with the visited moves' Q        completed_q
    [pi-gumbel] policy target pi' = softmax(log p + sigma(completed Q)), sigma(Q) ~ (50 + max N) Q    improved_policy
    [select-gumbel] below the root: argmax_a pi'(a) - N(a) / (1 + sum_b N(b))                         gumbel_interior
    [cap]     --playout-cap f: a fraction f of moves searched in full and trained on, the rest cheaply  self_play_moves
    [q-mix]   --value-mix x: the value target (1 - x) z + x q, q the root's mean search value            SelfPlay.play
    [lr]      --lr-schedule cosine: lr (1 + cos(pi g / G)) / 2 after g of the G games                          train

Run:  python alphazero.py                                      # tic-tac-toe, about one CPU-minute
      python alphazero.py --game connect4                      # Connect Four (see benchmarks/alphazero.py)
      python alphazero.py --resume runs/<run>/checkpoint.pt    # continue a stopped run
      python alphazero.py --evaluate runs/<run>/checkpoint.pt  # win/draw/loss against each opponent (--play: play it)
      torchrun --standalone --nproc-per-node 2 alphazero.py   # 2 processes, --num-envs games each
"""

import math
import os
import random
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import torch
import torch.distributed
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

GAMES = {  # the board, and the settings Args leaves to the game (fields that default to None)
    "tictactoe": dict(rows=3, cols=3, win_length=3, gravity=False, total_games=3_072, simulations=32,
                      temperature_moves=9),
    "connect4": dict(rows=6, cols=7, win_length=4, gravity=True, total_games=10_000, simulations=64,
                     temperature_moves=12),
}


@dataclass
class Args:
    """AlphaZero: self-play with PUCT tree search, on tic-tac-toe or Connect Four."""

    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of the experiment, in [0, 2**32 - 1]: the same seed on the same machine gives the same run"""
    torch_deterministic: bool = True
    """torch.use_deterministic_algorithms(True, warn_only=True), cudnn.deterministic, deterministic cuBLAS"""
    cuda: bool = True
    """use CUDA when it is available (falls back to the CPU otherwise); torchrun: rank r on GPU LOCAL_RANK"""
    threads: int = 1
    """torch CPU threads (1 keeps runs side by side from fighting over cores)"""
    game: Literal["tictactoe", "connect4"] = "tictactoe"
    """the game: tic-tac-toe (3x3, three in a row) or Connect Four (6x7, four in a row, stones drop)"""
    rows: int | None = None
    """board rows (none: the game's, 3 or 6)"""
    cols: int | None = None
    """board columns (none: the game's, 3 or 7)"""
    win_length: int | None = None
    """stones in a row that win (none: the game's, 3 or 4)"""
    total_games: int | None = None
    """self-play games of all torchrun ranks, exact (none: tictactoe 3072, connect4 10000; more on --resume: longer)"""
    num_envs: int = 64
    """self-play games played at once (by each torchrun rank); their leaves go through one forward pass"""
    simulations: int | None = None
    """simulations per move in self-play, and in evaluation unless set (none: tictactoe 32, connect4 64)"""
    eval_simulations: int | None = None
    """the agent's simulations per move in evaluation, --evaluate and --play (none: --simulations)"""
    solver: bool = True
    """the search knows proven results: it plays a win in one, never a proven loss (--no-solver: off)"""
    c_puct: float = 1.5
    """c_puct: weight of the exploration term in the PUCT rule"""
    dirichlet_alpha: float | None = None
    """alpha of the root noise Dir(alpha) (none: 10 / number of moves as AlphaZero: 1.1 and 1.4 here)"""
    dirichlet_epsilon: float = 0.25
    """epsilon: weight of the Dirichlet noise in the root priors (0 turns the noise off)"""
    temperature_moves: int | None = None
    """moves of each game drawn at tau = 1 (by visit count), greedy after (none: tictactoe 9, connect4 12)"""
    search: Literal["puct", "gumbel"] = "puct"
    """the tree search: the chapter's PUCT, or Gumbel AlphaZero's (Gumbel top-k, sequential halving, completed Q)"""
    gumbel_actions: int = 16
    """with --search gumbel: moves considered at the root (m), halved until the best is left"""
    playout_cap: float = 1.0
    """the fraction of moves searched in full and trained on; the rest: --cheap-simulations, untrained (1: all full)"""
    cheap_simulations: int = 16
    """simulations of a cheap search (with --playout-cap below 1)"""
    value_mix: float = 0.0
    """the value target (1 - mix) z + mix q, q the root's mean search value for the player to move (0: z)"""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """the learning rate over the --total-games budget: constant, or annealed to 0 along a half cosine"""
    replay_window: int = 2_000
    """the replay window: positions of the most recent this many self-play games (of each torchrun rank)"""
    replay_ratio: float = 4.0
    """minibatch samples per new self-play position: ratio * new positions / batch_size updates"""
    batch_size: int = 256
    """positions per minibatch (each under a random symmetry of the board)"""
    lr: float = 2e-3
    """Adam's learning rate"""
    weight_decay: float = 1e-4
    """Adam's L2 weight decay: 2c for the loss's c ||theta||^2"""
    channels: int = 32
    """channels of the residual trunk"""
    blocks: int = 3
    """residual blocks of the trunk"""
    eval_every: int = 1_024
    """evaluate every this many self-play games (and once at the end)"""
    eval_games: int = 100
    """games per opponent in each evaluation (and in --evaluate), half with the agent moving first"""
    rollouts: int = 100
    """simulations (one random rollout each) per move of the pure-MCTS opponent"""
    checkpoint_every: int = 1_024
    """write <run folder>/checkpoint.pt every this many self-play games (0: at the end and on Ctrl-C/SIGTERM)"""
    resume: str | None = None
    """continue a checkpoint's run in its folder (--cuda, --threads, --checkpoint-every, a larger budget may differ)"""
    evaluate: str | None = None
    """play this checkpoint against each evaluation opponent, print win/draw/loss (none: train)"""
    play: str | None = None
    """play this checkpoint in the terminal, instead of training (none: train)"""
    play_first: bool = True
    """with --play: you move first (X); --no-play-first lets the agent open"""

    def __post_init__(self):  # with --resume, the run's own Args are checked instead
        self.resume or check_args(self)


class Game:
    """k in a row on a rows x cols board; with gravity a move is a column and the stone drops to its lowest empty
    cell (Connect Four), else a move is a cell. Methods take a batch of flat int8 canonical boards."""

    def __init__(self, rows: int, cols: int, win_length: int, gravity: bool):
        self.rows, self.cols, self.gravity = rows, cols, gravity
        self.num_cells, self.num_actions = rows * cols, cols if gravity else rows * cols
        cells, k, last = np.arange(rows * cols).reshape(rows, cols), np.arange(win_length), win_length - 1
        self.lines = np.array([cells[r + dr * k, c + dc * k] for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1))
                               for r in range(rows) for c in range(cols)  # every line of every direction
                               if 0 <= r + dr * last < rows and 0 <= c + dc * last < cols])
        maps = [lambda x: x, np.fliplr]  # board symmetries; gravity keeps only the mirror image
        if not gravity:
            maps += [np.flipud, lambda x: np.rot90(x, 2)]
            if rows == cols:
                maps += [np.rot90, lambda x: np.rot90(x, 3), np.transpose, lambda x: np.rot90(x, 2).T]
        # symmetry s: board'[j] = board[cell_perms[s, j]] and pi'[j] = pi[action_perms[s, j]]; row 0 of a
        # mapped cell grid holds the column numbers, which are the moves of a gravity game
        self.cell_perms = np.array([m(cells).ravel() for m in maps])
        self.action_perms = self.cell_perms[:, :cols] if gravity else self.cell_perms

    def initial_state(self, n: int = 1) -> np.ndarray:
        return np.zeros((n, self.num_cells), np.int8)

    def legal_moves(self, boards: np.ndarray) -> np.ndarray:
        return boards[:, : self.cols] == 0 if self.gravity else boards == 0  # gravity: the top cell is free

    def next_state(self, boards: np.ndarray, moves: np.ndarray) -> np.ndarray:
        """Play `moves`; the result is seen by the next player to move, so the board is negated."""
        n, cells = len(boards), moves
        if self.gravity:  # the lowest empty cell of the column
            empty = (boards.reshape(n, self.rows, self.cols)[np.arange(n), :, moves] == 0).sum(1)
            cells = (empty - 1) * self.cols + moves
        after = -boards
        after[np.arange(n), cells] = -1  # the mover's stone, seen from the other side
        return after

    def terminal_value(self, boards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(done, value for the player to move): -1 when the previous mover has a line, 0 for a full board."""
        lost = (boards[:, self.lines] == -1).all(2).any(1)
        return lost | (boards != 0).all(1), np.where(lost, -1.0, 0.0).astype(np.float32)

    def winning_moves(self, boards: np.ndarray) -> np.ndarray:
        """Moves that complete a line for the player to move (a mask): a line of k - 1 own stones and one
        empty cell (sum k - 1: no opponent stone), the cell playable (with gravity: its column's lowest)."""
        g, line = np.nonzero(boards[:, self.lines].sum(2) == self.lines.shape[1] - 1)
        cells = self.lines[line]
        gap = cells[np.arange(len(line)), (boards[g[:, None], cells] == 0).argmax(1)]
        if self.gravity:  # the cell below is filled, or there is none
            playable = (gap + self.cols >= self.num_cells) | (boards[g, (gap + self.cols) % self.num_cells] != 0)
            g, gap = g[playable], gap[playable]
        wins = np.zeros((len(boards), self.num_actions), bool)
        wins[g, gap % self.cols if self.gravity else gap] = True
        return wins

    def symmetry(self, boards: np.ndarray, pis: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Symmetry s[i] of board i and, relabelled alike, of its move distribution pi_i."""
        take = np.take_along_axis
        return take(boards, self.cell_perms[s], 1), take(pis, self.action_perms[s], 1)


def make_env(game: str, rows: int, cols: int, win_length: int) -> Game:
    return Game(rows, cols, win_length, GAMES[game]["gravity"])


class Net(nn.Module):
    """f(s) = (p, v): a residual conv trunk, policy logits over moves (illegal ones masked), v in [-1, 1]."""

    def __init__(self, game: Game, channels: int, blocks: int):
        super().__init__()
        self.shape = (game.rows, game.cols)
        conv = lambda inp, out, k: nn.Sequential(nn.Conv2d(inp, out, k, padding=k // 2, bias=False),
                                                 nn.BatchNorm2d(out))
        self.stem = nn.Sequential(conv(2, channels, 3), nn.ReLU())
        block = lambda: nn.Sequential(conv(channels, channels, 3), nn.ReLU(), conv(channels, channels, 3))
        self.blocks = nn.ModuleList(block() for _ in range(blocks))
        self.policy = nn.Sequential(conv(channels, 2, 1), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(2 * game.num_cells, game.num_actions))
        self.value = nn.Sequential(conv(channels, 1, 1), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(game.num_cells, channels), nn.ReLU(),
                                   nn.Linear(channels, 1), nn.Tanh())

    def forward(self, boards: torch.Tensor, legal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack((boards == 1, boards == -1), 1).float().view(-1, 2, *self.shape)  # own, opponent's
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        logits = self.policy(x).masked_fill(~legal, torch.finfo(x.dtype).min)  # [net]; finite: 0 * log p = 0
        return logits, self.value(x).squeeze(1)


def check_args(args: Args):
    """The game's settings for the fields left at None; then each failed check is one line on stderr and exit
    status 1."""
    if args.game not in GAMES:
        fail(f"--game must be one of {', '.join(GAMES)}, got {args.game!r}")
    for name, value in GAMES[args.game].items():
        if getattr(args, name, False) is None:  # a field left to the game (gravity is no field)
            setattr(args, name, value)
    positive = ("rows", "cols", "win_length", "total_games", "num_envs", "simulations", "c_puct", "threads",
                "replay_window", "replay_ratio", "batch_size", "lr", "channels", "blocks", "eval_every", "eval_games",
                "rollouts", "gumbel_actions", "cheap_simulations")
    checks = [(name, "positive", getattr(args, name) > 0) for name in positive] + [(name, "non-negative",
              getattr(args, name) >= 0) for name in ("temperature_moves", "weight_decay", "checkpoint_every")] + [
        ("dirichlet_alpha", "positive", args.dirichlet_alpha is None or args.dirichlet_alpha > 0),
        ("dirichlet_epsilon", "in [0, 1]", 0 <= args.dirichlet_epsilon <= 1),
        ("playout_cap", "in (0, 1]", 0 < args.playout_cap <= 1), ("value_mix", "in [0, 1]", 0 <= args.value_mix <= 1),
        ("seed", "in [0, 2**32 - 1]", 0 <= args.seed < 2**32),
        ("eval_simulations", "positive", args.eval_simulations is None or args.eval_simulations > 0),
        ("total_games", f"at least {rank_world()[1]} (the processes)", args.total_games >= rank_world()[1])]
    for name, rule, holds in checks:
        if not holds:
            fail(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")
    if args.win_length > max(args.rows, args.cols):
        fail(f"--win-length {args.win_length} does not fit a {args.rows}x{args.cols} board")
    if args.dirichlet_alpha is None:  # 10 / the number of moves
        args.dirichlet_alpha = 10 / (args.cols if GAMES[args.game]["gravity"] else args.rows * args.cols)


def net_evaluator(net: Net, game: Game, batched: bool = True):
    """Leaf evaluator boards -> (priors, values) from f(s); batched: one forward pass for all boards, else one
    pass per board (the slow way, kept for the speed comparison and its test). Call net.eval() first."""
    device = next(net.parameters()).device

    @torch.no_grad()
    def evaluate_leaves(boards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, legal = torch.from_numpy(boards).to(device), torch.from_numpy(game.legal_moves(boards)).to(device)
        outs = [net(b, legal)] if batched else [net(b[i: i + 1], legal[i: i + 1]) for i in range(len(b))]
        logits, values = (torch.cat(x) for x in zip(*outs))
        return torch.softmax(logits, 1).cpu().numpy(), values.cpu().numpy()

    return evaluate_leaves


def random_moves(game: Game, boards: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random legal move for each board."""
    return np.where(game.legal_moves(boards), rng.random((len(boards), game.num_actions)), -1).argmax(1)


def rollout_evaluator(game: Game, rng: np.random.Generator):
    """Pure MCTS's leaf evaluator: uniform priors, and the result of one random playout from each board."""

    def evaluate_leaves(boards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        legal = game.legal_moves(boards)
        values, sign, active = np.zeros(len(boards), np.float32), np.ones(len(boards)), np.arange(len(boards))
        boards = boards.copy()
        while len(active):
            boards[active] = game.next_state(boards[active], random_moves(game, boards[active], rng))
            sign[active] *= -1  # the value flips to the other side with every move
            done, value = game.terminal_value(boards[active])
            values[active[done]] = sign[active[done]] * value[done]
            active = active[~done]
        return legal / legal.sum(1, keepdims=True), values

    return evaluate_leaves


class Tree:
    """The search trees of a batch of games as arrays: [g, n] is node n of game g (node 0 the root), and the last
    axis of an edge array runs over moves. Each simulation adds at most one node: simulations + 1 slots."""

    def __init__(self, game: Game, roots: np.ndarray, simulations: int, solver: bool = True, gumbel: bool = False):
        shape, edges = (len(roots), simulations + 1), (len(roots), simulations + 1, game.num_actions)
        self.board = np.zeros((*shape, game.num_cells), np.int8)
        self.legal = np.zeros(edges, bool)
        self.N, self.W, self.P = (np.zeros(edges, np.float32) for _ in range(3))
        self.child = np.full(edges, -1, np.int64)  # the child's node number, -1 until a simulation creates it
        self.terminal, self.value = np.zeros(shape, bool), np.zeros(shape, np.float32)  # value if solved
        self.solved = np.zeros(shape, bool)  # [solve] the node's result is known: terminal, or proven
        self.result = np.full(edges, np.nan, np.float32)  # [solve] an edge's proven result for its chooser
        self.size, self.solver, self.gumbel = np.ones(len(roots), np.int64), solver, gumbel
        self.V = np.zeros(shape, np.float32)  # the network's v at each node (--search gumbel's completed Q)
        self.board[:, 0], self.legal[:, 0] = roots, game.legal_moves(roots)
        if solver:
            self.find_wins(game, np.arange(len(roots)), np.zeros(len(roots), np.int64))

    def find_wins(self, game: Game, g: np.ndarray, nodes: np.ndarray):
        """[solve] Where the player to move can complete a line, those moves are proven wins, and so is the
        node (new, non-terminal nodes [g, nodes])."""
        wins = game.winning_moves(self.board[g, nodes])
        self.result[g, nodes] = np.where(wins, 1, np.nan)
        won = wins.any(1)
        self.solved[g[won], nodes[won]], self.value[g[won], nodes[won]] = True, 1.0


def allowed(legal: np.ndarray, result: np.ndarray) -> np.ndarray:
    """[solve] The moves the search may choose: the proven wins if there are any, else the moves not proven
    lost, else (every move loses) all legal moves."""
    wins, unlost = legal & (result == 1), legal & ~(result == -1)
    return np.where(wins.any(-1, keepdims=True), wins, np.where(unlost.any(-1, keepdims=True), unlost, legal))


def puct(N: np.ndarray, W: np.ndarray, P: np.ndarray, legal: np.ndarray, c_puct: float) -> np.ndarray:
    """Q(s,a) + c_puct P(s,a) sqrt(N(s)) / (1 + N(s,a)) over the last axis; Q = 0 for unvisited edges, and N(s) =
    1 + sum_b N(s,b): the simulation that expanded s was its first visit."""
    Q = W / np.maximum(N, 1)
    U = Q + c_puct * P * np.sqrt(1 + N.sum(-1, keepdims=True)) / (1 + N)  # [puct]
    return np.where(legal, U, -np.inf)


def select(tree: Tree, c_puct: float, root_moves: np.ndarray | None = None) -> tuple[list, np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """[select] In every tree, follow the PUCT choice from the root until the chosen edge has no node yet or
    leads to a terminal node. Returns the path, a list of (trees, nodes, moves) by depth, each path's last
    edge (parent node, move) and the node the path ends in (-1 where that edge has no node yet). --search gumbel:
    the root's moves are given, and gumbel_interior chooses below the root."""
    trees = np.arange(len(tree.size))
    node, parent, move, path, active = *(np.zeros_like(trees) for _ in range(3)), [], trees
    while len(active):  # the trees still going down
        n = node[active]
        ok = allowed(tree.legal[active, n], tree.result[active, n])
        if root_moves is not None and not path:
            a = root_moves
        elif tree.gumbel:
            a = gumbel_interior(tree, active, n, ok).argmax(1)
        else:
            a = puct(tree.N[active, n], tree.W[active, n], tree.P[active, n], ok, c_puct).argmax(1)
        path.append((active, n, a))
        child = tree.child[active, n, a]
        node[active], parent[active], move[active] = child, n, a
        active = active[(child >= 0) & ~tree.solved[active, child]]  # an existing unsolved node: go on
    return path, parent, move, node


def expand(tree: Tree, game: Game, parent: np.ndarray, move: np.ndarray, node: np.ndarray):
    """[expand] Where a path's last edge has no node yet, add the node it leads to (into `node`): the board
    after the move, whether the game is over there (and its result), the legal moves."""
    g = np.flatnonzero(node < 0)
    node[g] = tree.size[g]
    tree.size[g] += 1
    tree.child[g, parent[g], move[g]] = node[g]
    tree.board[g, node[g]] = game.next_state(tree.board[g, parent[g]], move[g])
    tree.terminal[g, node[g]], tree.value[g, node[g]] = game.terminal_value(tree.board[g, node[g]])
    tree.solved[g, node[g]] = tree.terminal[g, node[g]]
    tree.legal[g, node[g]] = game.legal_moves(tree.board[g, node[g]])
    if tree.solver:
        g = g[~tree.terminal[g, node[g]]]
        tree.find_wins(game, g, node[g])


def backup(tree: Tree, path: list, values: np.ndarray):
    """[backup] N(s,a) += 1 and W(s,a) += (-1)^d v on each path's edges, from its leaf (value v) up to the
    root: -v on the last edge (the opponent of the player to move at the leaf chose it), +v above it, ..."""
    signed = -values
    for trees, n, a in reversed(path):  # deepest edges first
        tree.N[trees, n, a] += 1
        tree.W[trees, n, a] += signed[trees]
        signed[trees] *= -1
        if not tree.solver:
            continue
        # [solve] a solved child proves the edge (its result negated); the node is solved when a move wins
        # or every legal move is proven: its value is then the best proven result
        t, n, a = (x[tree.solved[trees, tree.child[trees, n, a]]] for x in (trees, n, a))
        tree.result[t, n, a] = -tree.value[t, tree.child[t, n, a]]
        r = np.where(tree.legal[t, n], tree.result[t, n], -np.inf)
        t, n, r = (x[(r == 1).any(1) | ~np.isnan(r).any(1)] for x in (t, n, r))
        tree.solved[t, n], tree.value[t, n] = True, np.fmax.reduce(r, 1)


def simulate(tree: Tree, game: Game, evaluate_leaves, c_puct: float, root_moves: np.ndarray | None = None):
    """One simulation in every tree at once: select a path, expand its leaf, evaluate the new non-terminal
    leaves of all trees in one call (a terminal leaf has the game's result, no network call), back up."""
    path, parent, move, node = select(tree, c_puct, root_moves)
    expand(tree, game, parent, move, node)
    trees = np.arange(len(tree.size))
    values, new = tree.value[trees, node], ~tree.solved[trees, node]
    if new.any():  # [expand] p becomes the new node's priors, v its value
        tree.P[trees[new], node[new]], values[new] = evaluate_leaves(tree.board[trees[new], node[new]])
        tree.V[trees[new], node[new]] = values[new]
    backup(tree, path, values)


def search(game: Game, roots: np.ndarray, evaluate_leaves, simulations: int, c_puct: float,
           noise: tuple[float, float] | None = None, rng: np.random.Generator | None = None,
           solver: bool = True) -> Tree:
    """PUCT search from a batch of non-terminal boards; the root visit counts are tree.N[:, 0], the moves
    to choose from root_visits(tree). noise = (alpha, epsilon) mixes Dirichlet noise into the root priors
    (only there); solver: the search knows proven results ([solve])."""
    tree = Tree(game, roots, simulations, solver)
    tree.P[:, 0] = evaluate_leaves(roots)[0]
    if noise is not None:
        gamma = rng.gamma(noise[0], size=tree.P[:, 0].shape) * tree.legal[:, 0]  # [noise] Dir: normed Gammas
        tree.P[:, 0] = (1 - noise[1]) * tree.P[:, 0] + noise[1] * gamma / gamma.sum(1, keepdims=True)
    for _ in range(simulations):
        simulate(tree, game, evaluate_leaves, c_puct)
    return tree


def root_visits(tree: Tree) -> np.ndarray:
    """N(root, a) of the moves allowed at the root ([solve]: a proven win, never a proven loss beside another
    move); uniform over them when none was visited (the last simulation proved every visited move lost)."""
    ok = allowed(tree.legal[:, 0], tree.result[:, 0])
    counts = np.where(ok, tree.N[:, 0], 0)
    return np.where(counts.sum(1, keepdims=True) > 0, counts, ok).astype(np.float32)


def choose_moves(counts: np.ndarray, explore: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(moves, policy targets): a ~ pi at tau = 1 (pi = N / sum N) where `explore`, else tau -> 0 (the most
    visited move); the target is pi at tau = 1 either way, as in AlphaZero's published pseudocode."""
    pi = (counts / counts.sum(1, keepdims=True)).astype(np.float32)  # [pi-mcts] tau = 1
    sampled = (pi.cumsum(1) > rng.random((len(counts), 1)) * pi.sum(1, keepdims=True)).argmax(1)
    return np.where(explore, sampled, counts.argmax(1)), pi  # tau -> 0: the argmax


# --search gumbel (Danihelka et al., ICLR 2022): the root's moves are sampled without replacement by the Gumbel top-k
# trick and narrowed by sequential halving; the policy target is softmax(logits + sigma(completed Q)).
C_VISIT, C_SCALE = 50.0, 1.0  # sigma's constants, the paper's


def completed_q(tree: Tree, g: np.ndarray, n: np.ndarray) -> np.ndarray:
    """[completed-q] Q(s,a) of every move at nodes [g, n]: a proven result, else the mean value of a visited move,
    else v_mix(s) = (v(s) + sum_b N(s,b) * sum_{b visited} p(b) Q(s,b) / sum_{b visited} p(b)) / (1 + sum_b N(s,b))."""
    N, P, result = tree.N[g, n], tree.P[g, n], tree.result[g, n]
    Q, visited, total = tree.W[g, n] / np.maximum(N, 1), N > 0, N.sum(-1)
    p = np.where(visited, P, 0)
    v_mix = (tree.V[g, n] + total * (p * Q).sum(-1) / np.maximum(p.sum(-1), 1e-12)) / (1 + total)
    return np.where(~np.isnan(result), result, np.where(visited, Q, v_mix[:, None]))


def sigma(q: np.ndarray, N: np.ndarray) -> np.ndarray:
    """sigma(q) = (c_visit + max_b N(s,b)) c_scale q, with q mapped from [-1, 1] to [0, 1]."""
    return (C_VISIT + N.max(-1, keepdims=True)) * C_SCALE * (q + 1) / 2


def improved_policy(tree: Tree, g: np.ndarray, n: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[pi-gumbel] pi'(s) = softmax(log p(s) + sigma(completed Q(s))) over the moves in `ok`."""
    logits = np.log(np.maximum(tree.P[g, n], 1e-30)) + sigma(completed_q(tree, g, n), tree.N[g, n])
    logits = np.where(ok, logits, -np.inf)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def gumbel_interior(tree: Tree, g: np.ndarray, n: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """[select-gumbel] Below the root: argmax_a pi'(s,a) - N(s,a) / (1 + sum_b N(s,b)), the move whose share of the
    visits lags its improved policy most."""
    N = tree.N[g, n]
    return np.where(ok, improved_policy(tree, g, n, ok) - N / (1 + N.sum(-1, keepdims=True)), -np.inf)


def halving_schedule(m: int, simulations: int) -> np.ndarray:
    """[halving] Sequential halving as a schedule: for each simulation, the visit count the root move it goes to has
    so far. ceil(log2 m) phases; in each, every move still in gets simulations / (ceil(log2 m) * moves in) visits
    (at least 1), one round after another; then the better half stay in (at least 2), until the budget is spent."""
    if m <= 1:
        return np.arange(simulations)
    phases, left, visits, schedule = math.ceil(math.log2(m)), m, 0, []
    while len(schedule) < simulations:
        for _ in range(max(1, simulations // (phases * left))):
            schedule, visits = schedule + [visits] * left, visits + 1
        left = max(2, left // 2)
    return np.array(schedule[:simulations])


def gumbel_search(game: Game, roots: np.ndarray, evaluate_leaves, simulations: int, m: int, explore: np.ndarray,
                  rng: np.random.Generator | None, solver: bool = True) -> tuple[Tree, np.ndarray, np.ndarray]:
    """Gumbel AlphaZero's search from a batch of boards. g ~ Gumbel(0, 1) per move where `explore` (else g = 0);
    the root's simulations follow sequential halving among the m moves of largest g + log p, ranked by g + log p +
    sigma(completed Q) (the move due next: the best of those with the visit count the schedule names). Returns the
    tree, the move (the best of the moves left in) and the policy target pi'."""
    tree = Tree(game, roots, simulations, solver, gumbel=True)
    tree.P[:, 0], tree.V[:, 0] = evaluate_leaves(roots)
    trees, root, legal = np.arange(len(roots)), np.zeros(len(roots), np.int64), tree.legal[:, 0]
    g = np.where(explore[:, None], rng.gumbel(size=legal.shape), 0) if explore.any() else 0  # [gumbel]
    score = lambda: g + np.log(np.maximum(tree.P[:, 0], 1e-30)) + sigma(completed_q(tree, trees, root), tree.N[:, 0])
    schedule = np.stack([halving_schedule(k, simulations) for k in range(game.num_actions + 1)])
    due_visits = schedule[np.minimum(legal.sum(1), m)]  # [halving] each tree's schedule, by its number of moves
    for k in range(simulations):
        ok = allowed(legal, tree.result[:, 0])  # [solve] as in PUCT: a proven win once there is one, no proven loss
        due = ok & (tree.N[:, 0] == due_visits[:, k: k + 1])
        due = np.where(due.any(1, keepdims=True), due, ok)  # none due (a move dropped as proven): the best allowed
        simulate(tree, game, evaluate_leaves, 0.0, root_moves=np.where(due, score(), -np.inf).argmax(1))
    ok = allowed(legal, tree.result[:, 0])
    N = np.where(ok, tree.N[:, 0], -1)
    moves = np.where(ok & (N == N.max(1, keepdims=True)), score(), -np.inf).argmax(1)  # the best of the last in
    return tree, moves, improved_policy(tree, trees, root, ok)


def think(game: Game, boards: np.ndarray, evaluate_leaves, simulations: int, args: Args, explore: np.ndarray,
          rng: np.random.Generator, noise: tuple[float, float] | None) -> tuple[np.ndarray, ...]:
    """Self-play's search from each board, by --search: the move, the policy target and q, the root's mean value."""
    if args.search == "gumbel":
        tree, moves, pi = gumbel_search(game, boards, evaluate_leaves, simulations, args.gumbel_actions, explore,
                                        rng, args.solver)
    else:
        tree = search(game, boards, evaluate_leaves, simulations, args.c_puct, noise, rng, args.solver)
        moves, pi = choose_moves(root_visits(tree), explore, rng)
    return moves, pi, tree.W[:, 0].sum(1) / np.maximum(tree.N[:, 0].sum(1), 1)  # [q-mix] q


def self_play_moves(game: Game, boards: np.ndarray, evaluate_leaves, args: Args, explore: np.ndarray,
                    rng: np.random.Generator, noise: tuple[float, float] | None) -> tuple[np.ndarray, ...]:
    """think() for every game in progress; with --playout-cap below 1 [cap], each move is a full search with
    probability --playout-cap, else a cheap one (--cheap-simulations, no root noise) whose pi is 0: not trained on.
    Returns the moves, the policy targets, q and the positions searched."""
    if args.playout_cap >= 1:
        return *think(game, boards, evaluate_leaves, args.simulations, args, explore, rng, noise), \
            len(boards) * args.simulations
    full = rng.random(len(boards)) < args.playout_cap  # [cap]
    moves, q = np.zeros(len(boards), np.int64), np.zeros(len(boards), np.float32)
    pi = np.zeros((len(boards), game.num_actions), np.float32)
    for part, simulations, part_noise in ((full, args.simulations, noise), (~full, args.cheap_simulations, None)):
        if part.any():
            moves[part], pi[part], q[part] = think(game, boards[part], evaluate_leaves, simulations, args,
                                                   explore[part], rng, part_noise)
    pi[~full] = 0
    return moves, pi, q, full.sum() * args.simulations + (~full).sum() * args.cheap_simulations


def update(net: Net, optimizer: torch.optim.Optimizer, window: deque, steps: int, game: Game, args: Args,
           rng: np.random.Generator, world: int = 1) -> tuple[float, float]:
    """`steps` minibatch updates of the loss on random symmetries of positions from the replay window; returns the
    last minibatch's losses. torchrun (world > 1): every rank calls it with the same `steps`."""
    boards, pis, zs = (np.concatenate(column) for column in zip(*window))
    device = next(net.parameters()).device
    net.train()
    for _ in range(steps):
        i = rng.integers(len(boards), size=args.batch_size)
        b, pi = game.symmetry(boards[i], pis[i], rng.integers(len(game.cell_perms), size=args.batch_size))
        b, legal, pi, z = (torch.from_numpy(x).to(device) for x in (b, game.legal_moves(b), pi, zs[i]))
        logits, v = net(b, legal)
        policy_loss, value_loss = F.cross_entropy(logits, pi), F.mse_loss(v, z)  # [loss]
        optimizer.zero_grad()
        (policy_loss + value_loss).backward()
        if world > 1:  # torchrun: the gradient averaged over the ranks, one gradient of all their minibatches
            params = list(net.parameters())
            grads = torch.cat([p.grad.flatten() for p in params])
            torch.distributed.all_reduce(grads)
            for p, grad in zip(params, (grads / world).split([p.numel() for p in params])):
                p.grad.copy_(grad.view_as(p))
        optimizer.step()
    if world > 1:  # torchrun: rank 0's BatchNorm statistics on every rank (as DDP does)
        for buffer in net.buffers():
            torch.distributed.broadcast(buffer, src=0)
    return tuple(torch.stack([policy_loss, value_loss]).detach().tolist())


def agent_moves(game: Game, net: Net, args: Args, boards: np.ndarray) -> np.ndarray:
    """The agent in evaluation and --play: its search at --eval-simulations (none: --simulations), no noise,
    the most visited allowed move."""
    simulations = args.eval_simulations or args.simulations
    if args.search == "gumbel":  # no Gumbel noise: the best of the last moves in
        return gumbel_search(game, boards, net_evaluator(net, game), simulations, args.gumbel_actions,
                             np.zeros(len(boards), bool), None, args.solver)[1]
    tree = search(game, boards, net_evaluator(net, game), simulations, args.c_puct, solver=args.solver)
    return root_visits(tree).argmax(1)


def perfect_moves(game: Game, boards: np.ndarray, rng: np.random.Generator, memo: dict) -> np.ndarray:
    """A uniformly random optimal move per board, by memoised negamax (tic-tac-toe sized boards only)."""
    values = (move_values(game, b, memo) for b in boards)
    return np.array([rng.choice(np.flatnonzero(v == v.max())) for v in values])


def move_values(game: Game, board: np.ndarray, memo: dict) -> np.ndarray:
    """Negamax: the value of each move for the player to move (-inf if illegal), perfect play after it."""
    key = board.tobytes()
    if key not in memo:
        moves = np.flatnonzero(game.legal_moves(board[None])[0])
        children = game.next_state(np.repeat(board[None], len(moves), 0), moves)
        done, value = game.terminal_value(children)
        memo[key] = np.full(game.num_actions, -np.inf)
        memo[key][moves] = [-(v if d else move_values(game, c, memo).max())
                            for c, d, v in zip(children, done, value)]
    return memo[key]


def play_games(game: Game, agent, opponent, agent_first: np.ndarray) -> np.ndarray:
    """Games at once between two move functions (boards -> moves); the agent's results: +1, 0 or -1."""
    boards, results = game.initial_state(len(agent_first)), np.zeros(len(agent_first))
    agent_turn, active = agent_first.copy(), np.arange(len(agent_first))
    while len(active):
        mine, theirs = active[agent_turn[active]], active[~agent_turn[active]]
        moves = np.zeros(len(boards), np.int64)
        if len(mine):
            moves[mine] = agent(boards[mine])
        if len(theirs):
            moves[theirs] = opponent(boards[theirs])
        boards[active] = game.next_state(boards[active], moves[active])
        done, value = game.terminal_value(boards[active])  # value: for the side to move, who did not move
        results[active] = np.where(agent_turn[active], -value, value)
        agent_turn[active] = ~agent_turn[active]
        active = active[~done]
    return results


def exhaustive_losses(game: Game, agent, agent_first: bool) -> int:
    """Opponent move sequences that beat the agent when the opponent tries every legal reply at every turn."""
    boards, agent_turn, losses = game.initial_state(1), agent_first, 0
    while len(boards):
        if agent_turn:
            boards = game.next_state(boards, agent(boards))
        else:
            parent, moves = np.nonzero(game.legal_moves(boards))
            boards = game.next_state(boards[parent], moves)
        done, value = game.terminal_value(boards)
        losses += int((value[done] < 0).sum()) if not agent_turn else 0  # the agent to move, and lost
        boards, agent_turn = boards[~done], not agent_turn
    return losses


def evaluate(net: Net | str, opponent: str, games: int, seed: int, args: Args | None = None) -> np.ndarray:
    """The agent's results (+1, 0, -1) in `games` games against 'random', 'mcts' (--rollouts random rollouts per move)
    or 'minimax' (perfect play), the agent first in the even-numbered games. `net` may be a checkpoint path (it
    brings its Args); otherwise pass the run's Args."""
    if isinstance(net, str):
        net, args = load(net, "--evaluate")
    game, rng = make_env(args.game, args.rows, args.cols, args.win_length), np.random.default_rng(seed)
    net.eval()
    memo = {}
    opponents = {
        "random": lambda b: random_moves(game, b, rng),
        "mcts": lambda b: search(game, b, rollout_evaluator(game, rng), args.rollouts, args.c_puct,
                                 solver=False).N[:, 0].argmax(1),  # plain MCTS, as in the README's figures
        "minimax": lambda b: perfect_moves(game, b, rng, memo),
    }
    agent = lambda boards: agent_moves(game, net, args, boards)
    return play_games(game, agent, opponents[opponent], np.arange(games) % 2 == 0)


def evaluate_opponents(net: Net, game: Game, args: Args) -> dict:
    """Win, draw and loss rates against each opponent (args.eval_games games each); on tic-tac-toe also the exhaustive
    check. The same seeds every time: --evaluate of the final checkpoint repeats the final evaluation."""
    perfect_play = args.game == "tictactoe" and args.rows * args.cols <= 9  # negamax is cheap only here
    metrics = {}
    for k, opponent in enumerate(["random", "mcts"] + ["minimax"] * perfect_play):
        results = evaluate(net, opponent, args.eval_games, args.seed + 10_000 * (k + 1), args)
        for outcome, rate in (("win", results > 0), ("draw", results == 0), ("loss", results < 0)):
            metrics[f"eval/{opponent}_{outcome}"] = float(rate.mean())
    if perfect_play:
        agent = lambda boards: agent_moves(game, net, args, boards)
        metrics["eval/exhaustive_losses"] = sum(exhaustive_losses(game, agent, first) for first in (1, 0))
    return metrics


def evaluation_summary(metrics: dict) -> str:
    """'random 0.98/0.02/0.00, ...': win/draw/loss rates per opponent, for a person."""
    opponents = [tag[5: -4] for tag in metrics if tag.startswith("eval/") and tag.endswith("_win")]
    rates = ["/".join(f"{metrics[f'eval/{o}_{x}']:.2f}" for x in ("win", "draw", "loss")) for o in opponents]
    return ", ".join(f"{o} {r}" for o, r in zip(opponents, rates))


def show(game: Game, board: np.ndarray) -> str:
    """The board with X (the first player) and O; free cells (tic-tac-toe) or the columns (Connect Four) numbered."""
    absolute = board if (board != 0).sum() % 2 == 0 else -board  # +1 = X
    free = lambda i: "." if game.gravity else str(i + 1)
    marks = [{1: "X", -1: "O"}.get(v, free(i)) for i, v in enumerate(absolute)]
    rows = [" ".join(marks[r * game.cols: (r + 1) * game.cols]) for r in range(game.rows)]
    return "\n".join(rows + ([" ".join(str(c + 1) for c in range(game.cols))] if game.gravity else []))


def play(args: Args):
    """--play PATH: play the checkpoint in the terminal (--no-play-first: it opens), at --eval-simulations per move
    (none: the run's); moves are read from stdin, illegal ones refused."""
    net, run = load(args.play, "--play", args)
    run.eval_simulations = args.eval_simulations or run.eval_simulations
    game = make_env(run.game, run.rows, run.cols, run.win_length)
    board, human_turn, kind = game.initial_state(), args.play_first, "column" if game.gravity else "cell"
    print(f"{run.game}: you play {'X' if human_turn else 'O'}; a move is a {kind}, 1 to {game.num_actions}")
    while True:
        print(show(game, board[0]))
        done, value = game.terminal_value(board)
        if done[0]:
            print("draw" if value[0] == 0 else "you lose" if human_turn else "you win")
            return
        if human_turn:
            try:
                text = input("your move: ").strip()
            except EOFError:
                print("no more input: the game is left unfinished")
                return
            move = int(text) - 1 if text.isdigit() else -1
            if not (0 <= move < game.num_actions and game.legal_moves(board)[0, move]):
                print(f"illegal move {text!r}: choose a free {kind} from 1 to {game.num_actions}")
                continue
        else:
            move = agent_moves(game, net, run, board)[0]
            print(f"the agent plays {move + 1}")
        board, human_turn = game.next_state(board, np.array([move])), not human_turn


class SelfPlay:
    """One process's self-play: num_envs slots of games in progress (board, moves played, the board and pi of each
    move so far) and the replay window of finished games as (boards, pis, zs). A checkpoint holds all of it."""

    ARRAYS = ("playing", "boards", "moves_played", "played", "targets", "root_q")

    def __init__(self, game: Game, num_envs: int, replay_window: int, share: int, value_mix: float = 0.0):
        self.game, self.share, self.started = game, share, 0  # share: this process's games of the budget
        self.value_mix = value_mix
        self.playing = np.zeros(num_envs, bool)  # the slots with a game in progress
        self.boards, self.moves_played = game.initial_state(num_envs), np.zeros(num_envs, np.int64)
        self.played = np.zeros((num_envs, game.num_cells, game.num_cells), np.int8)  # [g, t]: the board at move t
        self.targets = np.zeros((num_envs, game.num_cells, game.num_actions), np.float32)  # ... and pi at t
        self.root_q = np.zeros((num_envs, game.num_cells), np.float32)  # ... and the search's q at t
        self.window, self.recent = deque(maxlen=replay_window), deque(maxlen=100)  # recent: (length, drawn)
        self.start_games()

    def start_games(self):  # new games in the free slots, while the budget lasts
        free = np.flatnonzero(~self.playing)[: max(0, self.share - self.started)]
        self.playing[free], self.started = True, self.started + len(free)

    def play(self, live: np.ndarray, moves: np.ndarray, pi: np.ndarray, q: np.ndarray) -> tuple[int, int]:
        """Store each searched board with its pi and q and play the moves; a finished game goes to the window with
        its value targets (its positions with a pi, [cap]) and a new game starts in its slot. Returns the games
        finished and their positions that went to the window."""
        t = self.moves_played[live]
        self.played[live, t], self.targets[live, t], self.root_q[live, t] = self.boards[live], pi, q
        self.boards[live] = self.game.next_state(self.boards[live], moves)
        self.moves_played[live] += 1
        done, value = self.game.terminal_value(self.boards[live])
        finished, positions = live[done], 0
        for g, result in zip(finished, value[done]):
            length = int(self.moves_played[g])
            z = result * (-1.0) ** (length - np.arange(length))  # [z] the side to move flips every move
            z = (1 - self.value_mix) * z + self.value_mix * self.root_q[g, :length]  # [q-mix]
            trained = self.targets[g, :length].sum(1) > 0  # [cap] a cheap search's position has no target
            positions += int(trained.sum())
            if trained.any():
                self.window.append((self.played[g, :length][trained], self.targets[g, :length][trained],
                                    z[trained].astype(np.float32)))
            self.recent.append((length, bool(result == 0)))
            self.boards[g], self.moves_played[g], self.playing[g] = 0, 0, False
        self.start_games()
        return len(finished), positions

    def charts(self) -> dict:
        return {"charts/episodic_length": float(np.mean([length for length, _ in self.recent])),
                "charts/draw_rate": float(np.mean([drawn for _, drawn in self.recent]))}

    def state_dict(self) -> dict:  # tensors, lists and numbers: torch.load(weights_only=True) takes them
        empty = (np.zeros((0, self.game.num_cells), np.int8), np.zeros((0, self.game.num_actions), np.float32),
                 np.zeros(0, np.float32))
        boards, pis, zs = (torch.from_numpy(np.concatenate(column)) for column in zip(empty, *self.window))
        lengths = torch.tensor([len(z) for *_, z in self.window])
        return {name: torch.from_numpy(getattr(self, name)) for name in self.ARRAYS} | {
            "window": {"boards": boards, "pis": pis, "zs": zs, "lengths": lengths}, "recent": list(self.recent),
            "started": self.started}

    def load_state_dict(self, state: dict):
        for name in self.ARRAYS:
            if name in state:  # (root_q: not in checkpoints from before --value-mix, whose runs did not use it)
                setattr(self, name, state[name].numpy().copy())
        splits = np.cumsum(state["window"]["lengths"].numpy())[:-1]
        columns = [np.split(state["window"][key].numpy(), splits) for key in ("boards", "pis", "zs")]
        self.window = deque(zip(*columns) if len(state["window"]["lengths"]) else [], maxlen=self.window.maxlen)
        self.recent, self.started = deque(state["recent"], maxlen=100), state["started"]
        self.start_games()  # a larger --total-games on --resume: new games in the free slots


def train(args: Args) -> dict:
    run = Run(args)  # the run to resume (its Args), seeds, device, torchrun
    args, device, rank, world = run.args, run.device, run.rank, run.world
    share = args.total_games // world + (rank < args.total_games % world)  # this rank's games of the budget
    game = make_env(args.game, args.rows, args.cols, args.win_length)
    net = Net(game, args.channels, args.blocks).to(device)
    if world > 1:  # every rank starts from rank 0's weights
        for tensor in net.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng, evaluate_leaves = np.random.default_rng(run.seed), net_evaluator(net, game)
    noise = (args.dirichlet_alpha, args.dirichlet_epsilon) if args.dirichlet_epsilon > 0 else None
    selfplay = SelfPlay(game, args.num_envs, args.replay_window, share, args.value_mix)
    saved = run.restore(per_rank={"self_play": selfplay, "generator": rng}, net=net, optimizer=optimizer)
    new_positions, next_update = saved.get("new_positions", 0), saved.get("next_update", args.num_envs)
    evaluate_now = lambda: evaluate_opponents(net, game, args)
    with run:  # the signal handlers are put back however train() ends
        games = run.begin(total=args.total_games)
        while games < args.total_games:
            start = time.perf_counter()
            net.eval()
            live = np.flatnonzero(selfplay.playing)  # search: from the position of every game in progress
            explore = selfplay.moves_played[live] < args.temperature_moves
            moves, pi, q, searched = self_play_moves(game, selfplay.boards[live], evaluate_leaves, args, explore, rng,
                                                     noise)
            finished, positions = selfplay.play(live, moves, pi, q)  # play and store; finished games to the window
            finished, positions, ready = run.moved(start, finished, positions, searched,
                                                   len(selfplay.window) > 0)  # torchrun: the counts of all ranks
            games, new_positions = run.games, new_positions + positions
            if (games >= next_update or games == args.total_games) and ready:  # update: an iteration every
                next_update += args.num_envs * world  # num_envs finished games (of each rank)
                steps = max(1, round(args.replay_ratio * new_positions / (args.batch_size * world)))
                if args.lr_schedule == "cosine":  # [lr] from --lr at the first game to 0 at the last
                    optimizer.param_groups[0]["lr"] = args.lr * (1 + math.cos(math.pi * games / args.total_games)) / 2
                policy_loss, value_loss = update(net, optimizer, selfplay.window, steps, game, args, rng, world)
                new_positions = 0
                run.log(games, {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss} | selfplay.charts())
            if run.due(args.eval_every):
                run.evaluate(games, evaluate_now)
            run.end_step(new_positions=new_positions, next_update=next_update)  # a checkpoint when due, Ctrl-C
        return run.finish(evaluate_now, new_positions=new_positions, next_update=next_update)


# === Run harness: run folder, TensorBoard, progress, checkpoints, resume, signals, NaN, closing lines. ===
# The harness of ac.py, a2c.py, ddpg.py, td3.py and sac.py, with the same names and wording; it differs where alphazero
# does: the budget is self-play games, a checkpoint falls between two moves, evaluation plays opponents, and --play.
# Under torchrun, rank 0 alone makes the folder, writes, evaluates and prints.
SCRIPT = os.path.basename(__file__)[: -len(".py")]
MAY_CHANGE = ("cuda", "threads", "checkpoint_every", "resume", "total_games")  # on --resume
GIVEN: set[str] = set()  # the Args fields named on the command line


def rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # torchrun's, else 0 and 1


def fail(message: str):
    """One line on stderr (rank 0's alone) and exit status 1."""
    sys.exit(f"error: {message}" if rank_world()[0] == 0 else 1)


def load_checkpoint(path: str, flag: str) -> dict:
    if not os.path.isfile(path):
        fail(f"{flag} {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (whatever torch.load says, the file is not one of ours)
        fail(f"{flag} {path}: not a duet checkpoint (torch.load failed: {type(e).__name__})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        fail(f"{flag} {path}: not a duet checkpoint (no 'script' entry)")
    if checkpoint["script"] != SCRIPT:
        fail(f"{flag} {path}: a checkpoint of {checkpoint['script']}.py, not {SCRIPT}.py")
    return Checkpoint(checkpoint, f"{flag} {path}")


class Checkpoint(dict):
    """A loaded checkpoint, whose entry that is not there (another version of the script wrote it) is one line."""

    def __init__(self, entries: dict, source: str):
        super().__init__(entries)
        self.source = source

    def __missing__(self, key):
        fail(f"{self.source}: no {key!r} entry: another version of {SCRIPT}.py wrote it; use that version")


def load(path: str, flag: str = "--play", args: Args | None = None) -> tuple[Net, Args]:
    """A checkpoint's network, in eval mode, and its run's Args; a board named on the command line must be its own."""
    checkpoint, given = load_checkpoint(path, flag), GIVEN if args else set()
    run = Args(**checkpoint["args"])
    other = [k for k in ("game", "rows", "cols", "win_length") if k in given and getattr(args, k) != getattr(run, k)]
    if other:
        fail(f"{flag} {path}: a checkpoint of {run.game} ({run.rows}x{run.cols}, {run.win_length} in a row), not "
             + ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in other))
    torch.set_num_threads(run.threads)
    net = Net(make_env(run.game, run.rows, run.cols, run.win_length), run.channels, run.blocks)
    net.load_state_dict(checkpoint["net"])
    return net.eval(), run


def new_folder(base: str, name: str, make: bool = True) -> str:
    """base/name, or base/name-2, -3, ... where it exists: never write into another run's folder."""
    for k in range(1, 10_000):
        path = os.path.join(base, name if k == 1 else f"{name}-{k}")
        try:
            os.makedirs(path) if make else os.path.exists(path) and os.makedirs(path)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            fail(f"cannot make the folder {path}: {e.strerror}")


def state_of(thing):
    if isinstance(thing, torch.Tensor):
        return thing.detach().cpu().clone()
    return thing.bit_generator.state if isinstance(thing, np.random.Generator) else thing.state_dict()


def load_state(thing, state):
    if isinstance(thing, torch.Tensor):
        with torch.no_grad():
            thing.copy_(state)
    elif isinstance(thing, np.random.Generator):
        thing.bit_generator.state = state
    else:
        thing.load_state_dict(state)


def rng_states() -> dict:  # as lists and ints: weights_only loading refuses numpy arrays
    numpy = np.random.get_state()
    return {"python": random.getstate(), "numpy": [numpy[0], numpy[1].tolist(), *numpy[2:]],
            "torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(rng: dict):
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    np.random.set_state((rng["numpy"][0], np.array(rng["numpy"][1], dtype=np.uint32), *rng["numpy"][2:]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class NoWriter:  # the TensorBoard writer of ranks other than 0: every call does nothing
    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class Run:
    """One run's bookkeeping, in train()'s order: Run(args) (resume, seeds, device, torchrun), restore(things),
    begin(total) (folder, TensorBoard, progress, signals), then per move moved() (the games of all ranks), log(),
    due() and evaluate(), end_step() (checkpoints, Ctrl-C), and finish() (final evaluation and checkpoint, closing
    lines). `with run:` puts the signal handlers back however train() ends."""

    def __init__(self, args):
        self.rank, self.world = rank_world()
        self.checkpoint = load_checkpoint(args.resume, "--resume") if args.resume else None
        self.args = args = self.resumed_args(args) if self.checkpoint else args
        self.games, self.finished, self.written, self.signals, self.received = 0, 0, False, [], []
        self.per_rank, self.metrics, self.charts, self.searched, self.search_time = {}, {}, {}, 0, 0.0
        self.seed = seed = (args.seed + self.rank) % 2**32  # torchrun: each rank plays its own games
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on a GPU needs it
        torch.backends.cudnn.deterministic = args.torch_deterministic
        torch.set_num_threads(args.threads)
        self.device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
        if self.world > 1:  # gloo on CPUs, nccl on GPUs: rank r on its machine's GPU number LOCAL_RANK
            if self.device.type == "cuda":
                torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    def resumed_args(self, args):
        """The run's own Args, but for MAY_CHANGE; another setting that differs is one line, exit 1."""
        if self.checkpoint["world_size"] != self.world:
            fail(f"--resume {args.resume}: the run used {self.checkpoint['world_size']} processes, this {self.world}")
        saved = {"solver": False} | self.checkpoint["args"]  # (a run from before --solver searched without it)
        given, default = asdict(args), {f.name: f.default for f in fields(args)}
        named = lambda k: k in GIVEN or given[k] != default[k]  # on the command line, or in a call to train
        changed = [k for k in saved if k not in MAY_CHANGE and named(k) and given[k] != saved[k]]
        if changed:
            fail(f"--resume {args.resume}: not the run's settings: " + ", ".join(
                f"--{k.replace('_', '-')} {given[k]} (the run's: {saved[k]})" for k in changed))
        budget = args.total_games if named("total_games") else saved["total_games"]
        if budget < saved["total_games"]:
            fail(f"--resume {args.resume}: --total-games {budget} is below the run's {saved['total_games']}")
        if self.checkpoint["games"] >= saved["total_games"] and budget == saved["total_games"]:
            if self.rank == 0:
                print(f"{args.resume} is finished ({self.checkpoint['games']:,} games); to train it longer: "
                      f"{self.how()} {SCRIPT}.py --resume {args.resume} --total-games N (N > {saved['total_games']})")
            sys.exit(0)
        args = type(args)(**saved | {k: given[k] for k in MAY_CHANGE} | {"total_games": budget, "resume": None})
        args.resume = given["resume"]  # (Args checks itself only without --resume: here, as the run's own)
        return args

    def restore(self, per_rank: dict | None = None, **things) -> dict:
        """What a checkpoint saves (per_rank: each rank's own); on --resume, loaded. Returns the checkpoint (or {}),
        whose counters train() reads back."""
        self.things, self.per_rank = things, per_rank or {}
        if not self.checkpoint:
            return {}
        mine = self.checkpoint["ranks"][self.rank]
        for name, thing in (*things.items(), *self.per_rank.items()):
            load_state(thing, (self.checkpoint if name in things else mine)[name])
        set_rng_states(mine["rng"])
        self.games, self.metrics = self.checkpoint["games"], self.checkpoint["metrics"]
        return self.checkpoint

    def begin(self, total: int) -> int:
        """Folder, TensorBoard, progress bar, clock, signal handlers; `total` games in all. Returns the games played."""
        self.total, folder = total, None
        if self.checkpoint:
            folder = os.path.dirname(self.args.resume) or "."  # the path as the user gave it
            if not os.access(folder, os.W_OK):
                fail(f"--resume {self.args.resume}: cannot write in the run folder {folder}")
            names = [f for f in os.listdir(folder) if f.startswith("events.out.tfevents.")]
            while time.time() < max((int(f.split(".")[3]) for f in names), default=0) + 1:
                time.sleep(0.05)  # TensorBoard reads event files in name order, named by the second of their start
        elif self.rank == 0:
            folder = new_folder("runs", f"{self.args.game}__{self.args.exp_name}__{self.args.seed}__"
                                        f"{time.strftime('%Y%m%d-%H%M%S')}")
        if self.world > 1:  # every rank learns rank 0's folder
            box = [folder]
            torch.distributed.broadcast_object_list(box, src=0)
            folder = box[0]
        self.dir, self.path = folder, os.path.join(folder, "checkpoint.pt")
        self.written, self.writer = os.path.exists(self.path), NoWriter()
        if self.rank == 0:
            print(f"device: {self.device}" + (f"; {self.world} processes" if self.world > 1 else "")
                  + (f"; resuming {self.args.resume} at game {self.games:,}" if self.checkpoint else ""))
            # on resume, TensorBoard drops what the interrupted run logged after its checkpoint
            self.writer = SummaryWriter(folder, purge_step=self.games + 1 if self.checkpoint else None)
            if not self.checkpoint:
                table = "\n".join(f"|{key}|{value}|" for key, value in asdict(self.args).items())
                self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        self.progress = tqdm(total=total, initial=self.games, unit="game", disable=None if self.rank == 0 else True)
        self.run_start = time.time()
        self.old_handlers = {s: signal.signal(s, self.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self.games

    def on_signal(self, signum, frame):  # the first Ctrl-C / SIGTERM stops after this move, a second one at once
        if self.signals and self.world == 1:  # (torchrun passes its own Ctrl-C on; the ranks agree in moved())
            os._exit(128 + signum)
        (self.signals if self.world == 1 else self.received).append(signum)

    def moved(self, start: float, finished: int, positions: int, searched: int, ready: bool) -> tuple[int, int, bool]:
        """After a move in every game: the games that finished, their positions and the searched ones, added up over
        the ranks (torchrun: one all_gather, which also makes a signal to one rank everyone's); ready: every rank
        has a window to train on. The self-play clock runs from `start`."""
        row = [finished, positions, searched, ready, self.received[0] if self.received else 0]
        table = np.array([row], np.float64)
        if self.world > 1:
            rows = [torch.zeros(len(row), dtype=torch.float64, device=self.device) for _ in range(self.world)]
            torch.distributed.all_gather(rows, torch.tensor(row, dtype=torch.float64, device=self.device))
            table = torch.stack(rows).cpu().numpy()
            self.signals[:] = [int(table[:, 4].max())] if table[:, 4].any() else []
        self.finished, positions, searched = table[:, :3].sum(0).astype(int).tolist()
        self.games, self.searched = self.games + self.finished, self.searched + searched
        self.search_time += time.perf_counter() - start
        self.progress.update(self.finished)
        return self.finished, positions, bool(table[:, 3].all())

    def sps(self) -> float:  # positions searched per second of self-play (updates and evaluations left out)
        return self.searched / max(self.search_time, 1e-9)

    def log(self, games: int, scalars: dict):
        """Scalars (torchrun: the ranks' means) and charts/SPS to TensorBoard; one not finite stops the run."""
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device) for v in scalars.values()])
        if self.world > 1:
            torch.distributed.all_reduce(values)
            values /= self.world
        self.charts = dict(zip(scalars, values.tolist())) | {"charts/SPS": self.sps()}
        for name, value in self.charts.items():
            if not math.isfinite(value):
                self.stop(f"error: {name} is {value} at game {games:,}; stopped. {self.last_good()}", 1)
            self.writer.add_scalar(name, value, games)
        self.progress.set_postfix(sps=f"{self.sps():.0f}")

    def due(self, every: int) -> bool:  # this move's games crossed a multiple of `every`, not the last
        return every > 0 and self.games // every > (self.games - self.finished) // every and self.games < self.total

    def evaluate(self, games: int, evaluate_now):
        """evaluate_now() -> {eval/<opponent>_<outcome>: rate, ...}, by rank 0 (the others wait at the next move)."""
        if self.rank == 0:
            self.metrics = evaluate_now()
            for tag, value in self.metrics.items():
                self.writer.add_scalar(tag, value, games)

    def end_step(self, **counters):
        """A checkpoint when one is due or a signal came; after a signal, the run stops (exit 128 + signal)."""
        if self.signals or self.due(self.args.checkpoint_every):
            self.save(counters)
        if self.signals:
            self.stop(f"interrupted at game {self.games:,}: checkpoint {self.path}; resume with: {self.how()} "
                      f"{SCRIPT}.py --resume {self.path}", 128 + self.signals[0])

    def how(self) -> str:  # the command that runs this script again
        return "torchrun (same options)" if self.world > 1 else "python"

    def last_good(self) -> str:
        return f"The last good checkpoint: {self.path}" if self.written else "No checkpoint was written yet."

    def save(self, counters: dict):
        """Every registered thing, each rank's own and its random states, the counters; atomic (a .tmp file, then
        os.replace): a crash or a full disk leaves the last checkpoint whole. Never one with a NaN."""
        params = [p for t in self.things.values() for p in (t.parameters() if isinstance(t, nn.Module) else
                  [t] if isinstance(t, torch.Tensor) else [])]
        if not all(torch.isfinite(p).all() for p in params):
            self.stop(f"error: a parameter is not finite at game {self.games:,}; stopped. {self.last_good()}", 1)
        ranks = [{"rng": rng_states()} | {name: state_of(t) for name, t in self.per_rank.items()}]
        if self.world > 1:
            ranks = ranks * self.world
            torch.distributed.all_gather_object(ranks, ranks[0])
        if self.rank > 0:
            return
        self.writer.flush()  # the curves up to the checkpoint survive a crash with it
        checkpoint = {"script": SCRIPT, "args": asdict(self.args), "games": self.games, "metrics": self.metrics,
                      "world_size": self.world, "ranks": ranks} | counters | \
            {name: state_of(t) for name, t in self.things.items()}
        try:
            torch.save(checkpoint, self.path + ".tmp")
            os.replace(self.path + ".tmp", self.path)
        except (OSError, RuntimeError) as e:  # a full disk, a read-only folder
            self.stop(f"error: cannot write {self.path} ({e}); stopped. {self.last_good()}", 1)
        self.written = True

    def stop(self, message: str, code: int):
        self.progress.close()
        self.writer.close()
        for s, handler in self.old_handlers.items():
            signal.signal(s, handler)
        if self.rank == 0:
            print(message, file=sys.stderr if code == 1 else sys.stdout, flush=True)
        sys.exit(code)

    def finish(self, evaluate_now, **counters) -> dict:
        """The final evaluation, the final checkpoint, the closing lines; returns the run's metrics."""
        self.progress.close()
        sps, seconds = self.sps(), round(time.time() - self.run_start)
        self.evaluate(self.games, evaluate_now)
        self.save(counters)
        self.writer.close()
        for s, handler in self.old_handlers.items():
            signal.signal(s, handler)
        if self.world > 1:
            torch.distributed.destroy_process_group()
        if self.rank == 0:
            print(f"finished {self.games:,} self-play games in {seconds // 3600}:{seconds // 60 % 60:02d}:"
                  f"{seconds % 60:02d} ({sps:,.0f} positions searched/s); final evaluation win/draw/loss: "
                  f"{evaluation_summary(self.metrics)}\n"
                  f"run folder: {self.dir}   (tensorboard --logdir {os.path.dirname(self.dir) or '.'})\n"
                  f"checkpoint: {self.path}")
        return self.metrics | self.charts | {"global_step": self.games, "run_dir": self.dir, "checkpoint": self.path}

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        for s, handler in getattr(self, "old_handlers", {}).items():
            signal.signal(s, handler)


def evaluate_checkpoint(args) -> dict:
    """--evaluate PATH: the checkpoint on its game against each evaluation opponent, --eval-games games each, at
    --eval-simulations per move (none: the run's); one line per opponent."""
    net, run = load(args.evaluate, "--evaluate", args)
    run.eval_games, run.eval_simulations = args.eval_games, args.eval_simulations or run.eval_simulations
    metrics = evaluate_opponents(net, make_env(run.game, run.rows, run.cols, run.win_length), run)
    print(f"evaluation of {args.evaluate} on {run.game}: {run.eval_games} games per opponent, half moving first, "
          f"{run.eval_simulations or run.simulations} simulations per move")
    for opponent in evaluation_summary(metrics).split(", "):
        name, rates = opponent.split()
        print(f"  {name:8s} win/draw/loss {rates}")
    if "eval/exhaustive_losses" in metrics:
        print(f"  losing lines when the opponent tries every reply: {metrics['eval/exhaustive_losses']}")
    return metrics


def main(args_class):
    """The command line: train(args), or with --evaluate PATH, evaluate_checkpoint(args), or with --play PATH, play."""
    GIVEN.update(a[2:].split("=")[0].replace("-", "_") for a in sys.argv[1:] if a.startswith("--"))
    args = tyro.cli(args_class)
    if args.resume and args.evaluate:
        fail("--resume and --evaluate exclude each other: resume to train on, evaluate to watch")
    if args.resume and args.play:
        fail("--resume and --play exclude each other: resume to train on, play to play against it")
    evaluate_checkpoint(args) if args.evaluate else play(args) if args.play else train(args)


if __name__ == "__main__":
    main(Args)
