"""What tests/test_a3c.py hands a3c.py's worker processes, in a module of its own: a spawned worker imports the envs
and functions it is given by name, and this module imports nothing heavier than gymnasium and torch."""

import os
import time

import gymnasium as gym
import numpy as np
import torch

import a3c


class Chain(gym.Env):
    """k = steps since the reset; observation (k / 10, 1); the k-th step's reward is k. The episode terminates at
    k == term_at, which the seed of a seeded reset picks: seed % 3 -> 3, 4, never. Registered with a TimeLimit of
    4 steps, so sub-env i of a worker seeded 0 ends its episodes by termination at 3 (i = 0), by termination and
    truncation at once at 4 (i = 1), by truncation alone at 4 (i = 2). Nothing depends on the actions; each step
    appends "pid index action" to actions.txt in the working directory (index: the order the process made it)."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)
    made = 0

    def __init__(self, render_mode=None):
        self.render_mode, self.term_at, self.k = render_mode, 99, 0
        self.index, Chain.made = Chain.made, Chain.made + 1

    def observation(self):
        return np.array([self.k / 10, 1.0], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.term_at = (3, 4, 99)[seed % 3]
        self.k = 0
        return self.observation(), {}

    def step(self, action):
        with open("actions.txt", "a") as f:
            f.write(f"{os.getpid()} {self.index} {int(action)}\n")
        self.k += 1
        return self.observation(), float(self.k), self.k == self.term_at, False, {}


class SlowChain(Chain):
    """Chain at about 500 steps per second: a run lasts long enough to be interrupted."""

    def step(self, action):
        time.sleep(0.002)
        return super().step(action)


class Crash(Chain):
    """Chain whose 4th step in a worker raises (the main process's own envs, made to check the spaces, never step)."""

    def step(self, action):
        if self.k == 3:
            raise RuntimeError("the simulator lost its licence")
        return super().step(action)


class Die(Chain):
    """Chain whose 4th step ends the process at once, exit status 3, as a crash in C code would."""

    def step(self, action):
        if self.k == 3:
            os._exit(3)
        return super().step(action)


def push_once(actor, critic, adam_state, clock, gradient: float, lr: float, pulled: int):
    """In a process of its own, as a worker: pull, set every local gradient to `gradient`, push."""
    shared = [*actor.parameters(), *critic.parameters()]
    local = [torch.zeros_like(p, requires_grad=True) for p in shared]
    a3c.pull(local, shared, clock)
    for p in local:
        p.grad = torch.full_like(p, gradient)
    a3c.push(local, shared, a3c.shared_adam(shared, adam_state, lr), clock, pulled)
