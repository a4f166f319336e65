"""AlphaZero: one network f(s) = (p, v), PUCT tree search as the policy-improvement operator, and self-play.

The chapter's AlphaZero section, on two built-in games (`--game`): tic-tac-toe (3x3, three in a row) and
Connect Four (6x7, four in a row, stones drop down a column). A state is the board seen by the player to move
(the canonical board: +1 own stones, -1 the opponent's), so one network plays both sides.

Value signs. v(s) and a terminal value are the outcome for the player to move in s (+1 win, 0 draw, -1 loss):
an expected outcome in [-1, 1], where the chapter's value head is a probability of winning (with no draws,
P(win) = (1 + v) / 2). A finished game is always lost by the player to move: the previous mover completed a
line. The edge statistics N(s,a), W(s,a), Q(s,a) = W / N belong to the player choosing a in s, so a leaf value
v found d moves below s counts as (-1)^d v for s: the last edge on a path gets -v, the one above it +v, ...

The chapter's equations, and the line that realises each (search for the tag):
    [net]     f_theta(s) = (p, v): residual conv trunk, policy logits (illegal moves masked), tanh value  Net
    [puct]    a = argmax_a Q(s,a) + c_puct P(s,a) sqrt(N(s)) / (1 + N(s,a)),   N(s) = 1 + sum_b N(s,b)
              (the simulation that expanded s counts as its first visit)                         puct
    [select]  from the root, follow the PUCT choice down to an edge with no node yet, or to a solved node
    [expand]  add the node that edge leads to; new unsolved leaves of ALL games go through one forward
              pass (p is stored as the node's priors, v is its value); solved nodes use their result
    [backup]  N(s,a) += 1, W(s,a) += (-1)^d v along the path         (select, expand, backup)  simulate
    [solve]   proven results, an MCTS-solver (Winands et al. 2008) beside the PUCT rule: a node whose mover
              can complete a line is won (+1), a terminal node has the game's result; backup proves an edge
              when its child is solved (result = -child's), and a node when one move wins or all are proven
              (value = the best result). PUCT chooses only among the allowed moves: the proven wins if any,
              else those not proven lost. Self-play and the agent choose at the root the same way, so a win
              in one is always played and taught     Tree.find_wins, allowed, backup, root_visits
    [noise]   P(root, a) <- (1 - eps) P + eps Dir(alpha) over the legal moves, at the root only    search
    [pi-mcts] pi(a|s) = N(s,a)^(1/tau) / sum_b N(s,b)^(1/tau) over the allowed moves ([solve]): moves are
              drawn at tau = 1 for the first --temperature-moves moves of a game, at tau -> 0 (the most
              visited move) after; the policy target is pi at tau = 1, as in AlphaZero's published
              pseudocode                                                                      choose_moves
    [z]       z_t = the final result from the view of the player to move at step t                 train
    [loss]    l = -pi^T log p + (z - v)^2 + c ||theta||^2 on random symmetries of positions from the
              last --replay-window games (Adam's weight_decay adds 2c theta to the gradient)        update

Self-play runs `--num-envs` games at once; a finished game is replaced by a new one until --total-games have
started, and every `--num-envs` finished games (and the last games) make one iteration: replay_ratio * (new
positions) / batch_size minibatch updates. charts/SPS counts searched positions per wall-clock second of
self-play (training and evaluation not counted): every simulation adds one node, a position, to a tree.
Evaluation (eval/<opponent>_win|draw|loss) plays the search at --eval-simulations, without noise, taking the
most visited allowed move, against a random player, pure MCTS (no solver) with --rollouts random rollouts per
move and, on tic-tac-toe, a perfect memoised negamax player; eval/exhaustive_losses counts the opponent move
sequences that beat the agent when the opponent tries every legal reply (the agent moving first and second).

Several processes (torch.distributed, started by torchrun; the lines under `if world > 1`): K copies of this
script (ranks) each play their own --num-envs games, seeded apart, into their own replay window, and split
--total-games between them (exact: rank r plays total // K, one more if r < total % K). After every move the
ranks add up their finished games, positions and searches, so they share the game count that makes
iterations, evaluations and checkpoints, and run the same number of minibatch steps: each draws its own
minibatch from its own window and the gradients are averaged (one all-reduce) before the step. All start from
rank 0's weights and take its BatchNorm statistics after each iteration, so the networks stay the same.
Rank 0 alone makes the run folder, writes TensorBoard, evaluates, checkpoints (every rank's self-play state)
and prints; a signal to any rank stops all after that move; a resume needs the same K. Backend: gloo on CPUs,
nccl with --cuda (rank r on GPU LOCAL_RANK). Without torchrun: K = 1, one process as before.

Run:  python alphazero.py                                       # tic-tac-toe, about one CPU-minute
      python alphazero.py --game connect4                       # Connect Four (see benchmarks/alphazero.py)
      python alphazero.py --resume runs/<run>/checkpoint.pt     # continue a run that was stopped
      python alphazero.py --evaluate runs/<run>/checkpoint.pt   # its win/draw/loss against each opponent
      python alphazero.py --play runs/<run>/checkpoint.pt       # play it in the terminal
      torchrun --standalone --nproc-per-node 2 alphazero.py    # 2 processes, each --num-envs games
      tensorboard --logdir runs
"""

import math
import os
import random
import signal
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import timedelta
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
    """self-play games in all (of all torchrun ranks), exact (none: tictactoe 3072, connect4 10000)"""
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
    replay_window: int = 2_000
    """the replay window: positions of the most recent this many self-play games"""
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
    """write runs/<run>/checkpoint.pt every this many self-play games (0: only at the end and on Ctrl-C)"""
    resume: str | None = None
    """continue its run exactly; settings from it but --cuda/--threads/--checkpoint-every (none: a new run)"""
    evaluate: str | None = None
    """play this checkpoint against each evaluation opponent, print win/draw/loss (none: train)"""
    play: str | None = None
    """play this checkpoint in the terminal, instead of training (none: train)"""
    play_first: bool = True
    """with --play: you move first (X); --no-play-first lets the agent open"""

    def __post_init__(self):  # argument checks: each failure is one line `error: ...` and exit status 1
        if self.game not in GAMES:
            sys.exit(f"error: --game must be one of {', '.join(GAMES)}, got {self.game!r}")
        for name, value in GAMES[self.game].items():
            if getattr(self, name, False) is None:  # a field left to the game (gravity is no field)
                setattr(self, name, value)
        positive = ("rows", "cols", "win_length", "total_games", "num_envs", "simulations", "c_puct",
                    "threads", "replay_window", "replay_ratio", "batch_size", "lr", "channels", "blocks",
                    "eval_every", "eval_games", "rollouts")
        checks = [(name, "positive", getattr(self, name) > 0) for name in positive]
        checks += [(name, "non-negative", getattr(self, name) >= 0)
                   for name in ("temperature_moves", "weight_decay", "checkpoint_every")]
        checks += [("dirichlet_alpha", "positive", self.dirichlet_alpha is None or self.dirichlet_alpha > 0),
                   ("dirichlet_epsilon", "in [0, 1]", 0 <= self.dirichlet_epsilon <= 1),
                   ("seed", "in [0, 2**32 - 1]", 0 <= self.seed < 2**32),
                   ("eval_simulations", "positive", self.eval_simulations is None
                    or self.eval_simulations > 0)]
        for name, rule, holds in checks:
            if not holds:
                sys.exit(f"error: --{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        if self.win_length > max(self.rows, self.cols):
            sys.exit(f"error: --win-length {self.win_length} does not fit a {self.rows}x{self.cols} board")
        if self.dirichlet_alpha is None:
            self.dirichlet_alpha = 10 / (self.cols if GAMES[self.game]["gravity"] else self.rows * self.cols)


class Game:
    """k in a row on a rows x cols board; with gravity a move is a column and the stone drops to its lowest
    empty cell (Connect Four), else a move is a cell. Every method takes a batch of flat int8 canonical
    boards."""

    def __init__(self, rows: int, cols: int, win_length: int, gravity: bool):
        self.rows, self.cols, self.gravity = rows, cols, gravity
        self.num_cells, self.num_actions = rows * cols, cols if gravity else rows * cols
        cells, k = np.arange(rows * cols).reshape(rows, cols), np.arange(win_length)
        last = win_length - 1
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
            below = gap + self.cols
            playable = (below >= self.num_cells) | (boards[g, below % self.num_cells] != 0)
            g, gap = g[playable], gap[playable]
        wins = np.zeros((len(boards), self.num_actions), bool)
        wins[g, gap % self.cols if self.gravity else gap] = True
        return wins

    def symmetry(self, boards: np.ndarray, pis: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Symmetry s[i] of board i and, relabelled alike, of its move distribution pi_i."""
        take = np.take_along_axis
        return take(boards, self.cell_perms[s], 1), take(pis, self.action_perms[s], 1)

    def show(self, board: np.ndarray) -> str:
        """The board with X (first player) and O; free cells (tic-tac-toe) or columns (Connect Four)
        numbered."""
        absolute = board if (board != 0).sum() % 2 == 0 else -board  # +1 = X
        free = lambda i: "." if self.gravity else str(i + 1)
        marks = [{1: "X", -1: "O"}.get(v, free(i)) for i, v in enumerate(absolute)]
        rows = [" ".join(marks[r * self.cols: (r + 1) * self.cols]) for r in range(self.rows)]
        return "\n".join(rows + ([" ".join(str(c + 1) for c in range(self.cols))] if self.gravity else []))


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
    """The search trees of a batch of games as arrays: [g, n] is node n of game g (node 0 the root), and the
    last axis of an edge array runs over moves. Each simulation adds at most one node: simulations + 1
    slots."""

    def __init__(self, game: Game, roots: np.ndarray, simulations: int, solver: bool = True):
        shape, edges = (len(roots), simulations + 1), (len(roots), simulations + 1, game.num_actions)
        self.board = np.zeros((*shape, game.num_cells), np.int8)
        self.legal = np.zeros(edges, bool)
        self.N, self.W, self.P = (np.zeros(edges, np.float32) for _ in range(3))
        self.child = np.full(edges, -1, np.int64)  # the child's node number, -1 until a simulation creates it
        self.terminal, self.value = np.zeros(shape, bool), np.zeros(shape, np.float32)  # value if solved
        self.solved = np.zeros(shape, bool)  # [solve] the node's result is known: terminal, or proven
        self.result = np.full(edges, np.nan, np.float32)  # [solve] an edge's proven result for its chooser
        self.size, self.solver = np.ones(len(roots), np.int64), solver
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
    """Q(s,a) + c_puct P(s,a) sqrt(N(s)) / (1 + N(s,a)) over the last axis; Q = 0 for unvisited edges."""
    Q = W / np.maximum(N, 1)
    U = Q + c_puct * P * np.sqrt(1 + N.sum(-1, keepdims=True)) / (1 + N)  # [puct]
    return np.where(legal, U, -np.inf)


def select(tree: Tree, c_puct: float) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """[select] In every tree, follow the PUCT choice from the root until the chosen edge has no node yet or
    leads to a terminal node. Returns the path, a list of (trees, nodes, moves) by depth, each path's last
    edge (parent node, move) and the node the path ends in (-1 where that edge has no node yet)."""
    trees = np.arange(len(tree.size))
    node, parent, move, path, active = *(np.zeros_like(trees) for _ in range(3)), [], trees
    while len(active):  # the trees still going down
        n = node[active]
        ok = allowed(tree.legal[active, n], tree.result[active, n])
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


def simulate(tree: Tree, game: Game, evaluate_leaves, c_puct: float):
    """One simulation in every tree at once: select a path, expand its leaf, evaluate the new non-terminal
    leaves of all trees in one call (a terminal leaf has the game's result, no network call), back up."""
    path, parent, move, node = select(tree, c_puct)
    expand(tree, game, parent, move, node)
    trees = np.arange(len(tree.size))
    values, new = tree.value[trees, node], ~tree.solved[trees, node]
    if new.any():  # [expand] p becomes the new node's priors, v its value
        tree.P[trees[new], node[new]], values[new] = evaluate_leaves(tree.board[trees[new], node[new]])
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


def update(net: Net, optimizer: torch.optim.Optimizer, window: deque, steps: int, game: Game, args: Args,
           rng: np.random.Generator, world: int = 1) -> tuple[float, float]:
    """`steps` minibatch updates of the loss on random symmetries of positions from the replay window.
    torchrun (world > 1): every rank calls it with the same `steps`; it returns the ranks' mean losses."""
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
    losses = torch.stack([policy_loss, value_loss]).detach()
    if world > 1:  # torchrun: rank 0's BatchNorm statistics on every rank (as DDP does), the mean losses
        for buffer in net.buffers():
            torch.distributed.broadcast(buffer, src=0)
        torch.distributed.all_reduce(losses)
        losses /= world
    return tuple(losses.tolist())


def agent_moves(game: Game, net: Net, args: Args, boards: np.ndarray) -> np.ndarray:
    """The agent in evaluation and --play: its search at --eval-simulations (none: --simulations), no noise,
    the most visited allowed move."""
    simulations = args.eval_simulations or args.simulations
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


def save_checkpoint(path: str, checkpoint: dict):
    """Write atomically: a crash at any moment leaves the previous complete checkpoint."""
    torch.save(checkpoint, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(path: str, flag: str) -> dict:
    """The checkpoint at `path` for --resume, --evaluate or --play; anything else: one line `error: ...`."""
    if not os.path.exists(path) or os.path.isdir(path):
        sys.exit(f"error: {flag} {path}: {'is a directory' if os.path.isdir(path) else 'no such file'}")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 (any unreadable file gets the same one line)
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (torch.load: {type(e).__name__})")
    if not isinstance(checkpoint, dict) or "script" not in checkpoint:
        sys.exit(f"error: {flag} {path}: not a duet checkpoint (no 'script' entry)")
    if checkpoint["script"] != "alphazero":
        sys.exit(f"error: {flag} {path}: a checkpoint of {checkpoint['script']}.py, not alphazero.py")
    return checkpoint


def pack(window: deque, game: Game) -> dict:
    """The replay window's games as three concatenated tensors and the games' lengths (weights_only-safe)."""
    empty = (np.zeros((0, game.num_cells), np.int8), np.zeros((0, game.num_actions), np.float32),
             np.zeros(0, np.float32))
    boards, pis, zs = (torch.from_numpy(np.concatenate(column)) for column in zip(empty, *window))
    return {"boards": boards, "pis": pis, "zs": zs, "lengths": torch.tensor([len(z) for *_, z in window])}


def unpack(packed: dict, maxlen: int) -> deque:
    splits = np.cumsum(packed["lengths"].numpy())[:-1]
    columns = [np.split(packed[key].numpy(), splits) for key in ("boards", "pis", "zs")]
    return deque(zip(*columns) if len(packed["lengths"]) else [], maxlen=maxlen)


def load(path: str, flag: str = "--play") -> tuple[Net, Args]:
    """The network of a checkpoint, in eval mode, and the Args of its run."""
    checkpoint = load_checkpoint(path, flag)
    args = Args(**checkpoint["args"])
    torch.set_num_threads(args.threads)
    net = Net(make_env(args.game, args.rows, args.cols, args.win_length), args.channels, args.blocks)
    net.load_state_dict(checkpoint["net"])
    return net.eval(), args


def evaluate(net: Net | str, opponent: str, games: int, seed: int, args: Args | None = None) -> np.ndarray:
    """The agent's results (+1, 0, -1) in `games` games against 'random', 'mcts' (--rollouts random rollouts
    per move) or 'minimax' (perfect play), the agent first in the even-numbered games. `net` may be a
    checkpoint path (it brings its Args); otherwise pass the run's Args."""
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
    """Win, draw and loss rates against each opponent (args.eval_games games each); on tic-tac-toe also the
    exhaustive check. The same seeds every time: --evaluate of the final checkpoint repeats the final
    evaluation."""
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


def evaluate_checkpoint(path: str, eval_games: int, simulations: int | None = None):
    """--evaluate: the checkpoint against each evaluation opponent; one line of win/draw/loss rates each.
    simulations: the agent's per move (none: the run's)."""
    net, args = load(path, "--evaluate")
    args.eval_games, args.eval_simulations = eval_games, simulations or args.eval_simulations
    metrics = evaluate_opponents(net, make_env(args.game, args.rows, args.cols, args.win_length), args)
    print(f"evaluation of {path} on {args.game}: {eval_games} games per opponent, half moving first, "
          f"{args.eval_simulations or args.simulations} simulations per move")
    for opponent in evaluation_summary(metrics).split(", "):
        name, rates = opponent.split()
        print(f"  {name:8s} win/draw/loss {rates}")
    if "eval/exhaustive_losses" in metrics:
        print(f"  losing lines when the opponent tries every reply: {metrics['eval/exhaustive_losses']}")


def play(path: str, human_first: bool, simulations: int | None = None):
    """Play a checkpoint in the terminal: the board is shown, moves are read from stdin, illegal ones
    refused. simulations: the agent's per move (none: the run's evaluation setting)."""
    net, args = load(path, "--play")
    args.eval_simulations = simulations or args.eval_simulations
    game = make_env(args.game, args.rows, args.cols, args.win_length)
    board, human_turn, kind = game.initial_state(), human_first, "column" if game.gravity else "cell"
    print(f"{args.game}: you play {'X' if human_first else 'O'}; a move is a {kind}, 1 to {game.num_actions}")
    while True:
        print(game.show(board[0]))
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
            move = agent_moves(game, net, args, board)[0]
            print(f"the agent plays {move + 1}")
        board, human_turn = game.next_state(board, np.array([move])), not human_turn


def make_run_dir(args: Args) -> str:
    """runs/<game>__<exp_name>__<seed>__<date-time>, with -2, -3, ... appended when it exists already."""
    base = f"runs/{args.game}__{args.exp_name}__{args.seed}__{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 1_000):
        try:
            os.makedirs(base if k == 1 else f"{base}-{k}")
            return base if k == 1 else f"{base}-{k}"
        except FileExistsError:
            continue
    sys.exit(f"error: could not make a run folder {base}-<k>")


class NoWriter:
    """The TensorBoard writer of the ranks other than 0 under torchrun: every call does nothing."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def train(args: Args) -> dict:
    resume_path, resumed = args.resume, load_checkpoint(args.resume, "--resume") if args.resume else None
    if resumed:  # the run's own settings, but for the three that may change
        kept = ("cuda", "threads", "checkpoint_every")  # (a run from before --solver searched without it)
        args = Args(**{"solver": False} | resumed["args"] | {name: getattr(args, name) for name in kept})
    # torchrun starts K copies of this script (ranks); without it K = 1, rank 0, and `if world > 1` is skipped
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if resumed and resumed.get("world_size", 1) != world:  # (torchrun: rank 0 says it, the others exit 1)
        sys.exit(f"error: --resume {resume_path}: the run used {resumed.get('world_size', 1)} processes, "
                 f"this one {world}" if rank == 0 else 1)
    if args.total_games < world:
        sys.exit(f"error: --total-games must be at least {world} (the processes), got {args.total_games}"
                 if rank == 0 else 1)
    share = args.total_games // world + (rank < args.total_games % world)  # this rank's games of the budget
    seed = (args.seed + rank) % 2**32  # each rank plays its own games
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(args.torch_deterministic, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # what deterministic cuBLAS needs on a GPU
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    if world > 1:  # gloo on CPUs, nccl on GPUs: rank r on its machine's GPU number LOCAL_RANK
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank == 0:
        print(f"device: {device}" + (f"; {world} processes" if world > 1 else ""))

    game = make_env(args.game, args.rows, args.cols, args.win_length)
    net = Net(game, args.channels, args.blocks).to(device)
    if world > 1:  # every rank starts from rank 0's weights
        for tensor in net.state_dict().values():
            torch.distributed.broadcast(tensor, src=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng, evaluate_leaves = np.random.default_rng(seed), net_evaluator(net, game)
    noise = (args.dirichlet_alpha, args.dirichlet_epsilon) if args.dirichlet_epsilon > 0 else None

    # the self-play state: games in progress (board, moves played, the (board, pi) history of each slot), the
    # replay window of finished games as (boards, pis, zs), and counters; a checkpoint holds all of it
    playing = np.arange(args.num_envs) < share  # slots with a game in progress
    boards, moves_played = game.initial_state(args.num_envs), np.zeros(args.num_envs, np.int64)
    played = np.zeros((args.num_envs, game.num_cells, game.num_cells), np.int8)  # [g, t]: the board at move t
    targets = np.zeros((args.num_envs, game.num_cells, game.num_actions), np.float32)  # ... and pi at t
    window = deque(maxlen=args.replay_window)
    recent = deque(maxlen=100)  # (length, drawn) of the latest finished games
    games, started, new_positions, next_update, metrics = 0, int(playing.sum()), 0, args.num_envs, {}
    if resumed:
        net.load_state_dict(resumed["net"])
        optimizer.load_state_dict(resumed["optimizer"])
        games, new_positions, next_update, metrics = (resumed[k] for k in (
            "games", "new_positions", "next_update", "metrics"))
        own = resumed if rank == 0 else resumed["ranks"][rank - 1]  # torchrun: this rank's self-play state
        playing, boards, moves_played, played, targets = (own[k].numpy().copy() for k in (
            "playing", "boards", "moves_played", "played", "targets"))
        window, recent = unpack(own["window"], args.replay_window), deque(own["recent"], maxlen=100)
        started = own["started"]
        rng.bit_generator.state = own["rng"]["numpy_generator"]
        random.setstate(own["rng"]["python"])
        torch.set_rng_state(own["rng"]["torch"])
    run_dir = (os.path.dirname(resume_path) or ".") if resumed else make_run_dir(args) if rank == 0 else None
    if world > 1:  # rank 0's run folder
        box = [run_dir]
        torch.distributed.broadcast_object_list(box, src=0)
        run_dir = box[0]
    path = os.path.join(run_dir, "checkpoint.pt")
    writer = (SummaryWriter(run_dir, purge_step=games + 1 if resumed else None)  # resumed: drop later steps
              if rank == 0 else NoWriter())
    if not resumed:
        table = "\n".join(f"|{key}|{value}|" for key, value in asdict(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    def checkpoint(charts: dict):
        if not all(torch.isfinite(p).all() for p in net.state_dict().values() if p.is_floating_point()):
            stop_with_error("a network parameter is not finite")
        writer.flush()  # the curves up to this checkpoint are on disk: a resume continues them
        own = {"window": pack(window, game), "recent": list(recent), "started": started,
               "rng": {"numpy_generator": rng.bit_generator.state, "python": random.getstate(),
                       "torch": torch.get_rng_state()}} | {key: torch.from_numpy(array) for key, array in (
            ("playing", playing), ("boards", boards), ("moves_played", moves_played), ("played", played),
            ("targets", targets))}
        if world > 1:  # torchrun: rank 0 writes every rank's self-play state
            states = [None] * world
            torch.distributed.all_gather_object(states, own)
            own |= {"ranks": states[1:]}
        if rank == 0:
            save_checkpoint(path, {
                "script": "alphazero", "args": asdict(args) | dict(resume=None, evaluate=None, play=None),
                "net": net.state_dict(), "optimizer": optimizer.state_dict(), "games": games,
                "new_positions": new_positions, "next_update": next_update, "metrics": metrics | charts,
                "world_size": world} | own)
        written.append(games)

    def stop_with_error(what: str):
        progress.close()
        writer.close()
        last = f"the last good checkpoint: {path}" if written or resumed else "no checkpoint was written yet"
        sys.exit(f"error: {what} at game {games:,}; stopped. {last[0].upper()}{last[1:]}" if rank == 0 else 1)

    signals, received = [], []  # SIGINT / SIGTERM: the first ends the run after this move, a second at once

    def on_signal(signum, frame):  # (torchrun passes its own Ctrl-C on, and all ranks must agree: `received`)
        if signals and world == 1:
            os._exit(128 + signum)
        (signals if world == 1 else received).append(signum)

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    written, charts, searched, search_time, wall = [], {}, 0, 0.0, time.time()
    progress = tqdm(total=args.total_games, initial=games, disable=None if rank == 0 else True, unit="game")
    try:
        while games < args.total_games and not signals:
            start = time.perf_counter()
            net.eval()
            live = np.flatnonzero(playing)
            tree = search(game, boards[live], evaluate_leaves, args.simulations, args.c_puct, noise, rng,
                          args.solver)
            moves, pi = choose_moves(root_visits(tree), moves_played[live] < args.temperature_moves, rng)
            played[live, moves_played[live]], targets[live, moves_played[live]] = boards[live], pi
            boards[live], moves_played[live] = game.next_state(boards[live], moves), moves_played[live] + 1
            done, value = game.terminal_value(boards[live])
            finished_now, positions = int(done.sum()), int(moves_played[live[done]].sum())
            for g, result in zip(live[done], value[done]):  # record the finished game, start a new one there
                length = int(moves_played[g])
                z = result * (-1.0) ** (length - np.arange(length))  # [z] the side to move flips every move
                window.append((played[g, :length].copy(), targets[g, :length].copy(), z.astype(np.float32)))
                recent.append((length, bool(result == 0)))
                boards[g], moves_played[g], playing[g] = 0, 0, started < share  # budget permitting
                started += int(playing[g])
            searches, ready = len(live) * args.simulations, len(window) > 0  # ready: a window to train on
            if world > 1:  # torchrun: games, positions and searches of all ranks; a signal to any stops all
                rows = [torch.zeros(5, dtype=torch.float64, device=device) for _ in range(world)]
                torch.distributed.all_gather(rows, torch.tensor(
                    [finished_now, positions, searches, ready, received[0] if received else 0], device=device,
                    dtype=torch.float64))
                ranks = torch.stack(rows).cpu().numpy()
                finished_now, positions, searches = ranks[:, :3].sum(0).astype(int).tolist()
                ready = bool(ranks[:, 3].all())
                signals[:] = [int(ranks[:, 4].max())] if ranks[:, 4].any() else []
            games, new_positions = games + finished_now, new_positions + positions
            searched += searches
            search_time += time.perf_counter() - start
            progress.update(finished_now)

            if (games >= next_update or games == args.total_games) and ready:  # an iteration: num_envs
                next_update += args.num_envs * world  # finished games (of each rank)
                steps = max(1, round(args.replay_ratio * new_positions / (args.batch_size * world)))
                policy_loss, value_loss = update(net, optimizer, window, steps, game, args, rng, world)
                new_positions = 0
                charts = {"losses/policy_loss": policy_loss, "losses/value_loss": value_loss,
                          "charts/SPS": searched / search_time,  # searched positions per second of self-play
                          "charts/episodic_length": float(np.mean([r[0] for r in recent])),
                          "charts/draw_rate": float(np.mean([r[1] for r in recent]))}
                for tag in ("losses/policy_loss", "losses/value_loss"):
                    if not math.isfinite(charts[tag]):
                        stop_with_error(f"{tag} is {charts[tag]}")
                for tag, scalar in charts.items():
                    writer.add_scalar(tag, scalar, games)
                progress.set_postfix(SPS=f"{charts['charts/SPS']:.0f}", loss=f"{policy_loss + value_loss:.2}")
            finished = games - finished_now
            evaluation = games // args.eval_every > finished // args.eval_every or games == args.total_games
            if evaluation and rank == 0:  # torchrun: the others wait for it at the next move
                metrics = evaluate_opponents(net, game, args)
                for tag, scalar in metrics.items():
                    writer.add_scalar(tag, scalar, games)
            every = args.checkpoint_every
            if every and games // every > finished // every and games < args.total_games:
                checkpoint(charts)
        checkpoint(charts)  # the final one, or the interrupted run's
        progress.close()
        writer.close()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    if world > 1:
        torch.distributed.destroy_process_group()
    if signals:
        launcher = "torchrun (same options)" if world > 1 else "python"
        command = f"{launcher} {os.path.basename(__file__)} --resume {path}"
        if rank == 0:
            print(f"interrupted at game {games:,}: checkpoint {path}; resume with: {command}")
        sys.exit(128 + signals[0])
    if rank > 0:
        return {"global_step": games, "run_dir": run_dir, "checkpoint": path}

    clock = timedelta(seconds=round(time.time() - wall))
    print(f"finished {args.total_games:,} self-play games in {clock} "
          f"({searched / max(search_time, 1e-9):,.0f} positions searched/s); final evaluation win/draw/loss: "
          f"{evaluation_summary(metrics)}")
    print(f"run folder: {run_dir}   (tensorboard --logdir runs)")
    print(f"checkpoint: {path}")
    return metrics | charts | {"global_step": games, "run_dir": run_dir, "checkpoint": path}


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    if cli_args.evaluate:
        evaluate_checkpoint(cli_args.evaluate, cli_args.eval_games, cli_args.eval_simulations)
    elif cli_args.play:
        play(cli_args.play, cli_args.play_first, cli_args.eval_simulations)
    else:
        train(cli_args)
