"""a3c.py's mutants for tests/mutants/run.py: each breaks one line, and a fast test of tests/test_a3c.py must fail.

    python tests/mutants/run.py a3c
"""

T = "tests/test_a3c.py::test_"
WIRING = T + "train_wiring_on_a_chain_with_known_ends"
PUSH = T + "a_workers_gradient_reaches_the_shared_networks_through_one_shared_adam"
BUDGET = T + "the_budget_counts_every_workers_steps_and_the_adam_state_is_one"
SCHEDULE = T + "staleness_is_counted_right_on_a_constructed_schedule"
RESERVE = T + "the_budget_is_reserved_in_whole_rollouts_and_never_overrun"
DYING = T + "a_failing_or_dying_worker_stops_the_run_with_one_line"
CTRL_C = T + "ctrl_c_checkpoints_stops_every_process_and_resume_finishes_the_budget"

MUTANTS = [
    # the asynchronous part: push, pull, the shared Adam, the clock
    ("the push drops the worker's gradient", "theirs.grad = mine.grad", "theirs.grad = torch.zeros_like(mine.grad)",
     PUSH),
    ("the pull copies nothing", "mine.copy_(theirs)  # [pull]", "mine.copy_(mine)  # [pull]", WIRING),
    ("each worker's Adam keeps its own statistics", "optimizer.state[p] = state",
     "optimizer.state[p] = {key: value.clone() for key, value in state.items()}", PUSH),
    ("staleness off by one", "int(self.counts[1]) - 1 - pulled", "int(self.counts[1]) - pulled", SCHEDULE),
    ("the budget may be overrun by one rollout", "if self.counts[0] + n > self.total:",
     "if self.counts[0] >= self.total:", RESERVE),
    ("a worker counts T steps a rollout, not N x T", "(step := clock.reserve(N * T))", "(step := clock.reserve(T))",
     BUDGET),
    ("the step size anneals by the steps after the rollout", "(1 - (step - N * T) / clock.total)",
     "(1 - step / clock.total)", WIRING),
    ("checkpoints do not carry the update count", "run.end_step(step, update=clock.updates(), **staleness)",
     "run.end_step(step, update=0, **staleness)", CTRL_C),
    ("a resumed run restarts the update count", 'Clock(total, global_step, counters.get("update", 0))',
     "Clock(total, global_step, 0)", CTRL_C),
    # the algorithm inside a worker
    ("bootstrap where an episode is both terminated and truncated", "cut = truncated & ~terminated",
     "cut = truncated", WIRING),
    ("GAE crosses episode ends", "gae = delta + gamma * lam * mask * gae", "gae = delta + gamma * lam * gae",
     WIRING),
    ("last_value = 0", "local_critic(obs), args.gamma,", "0 * local_critic(obs), args.gamma,", WIRING),
    ("entropy bonus with the wrong sign", "- args.ent_coef * entropy", "+ args.ent_coef * entropy", WIRING),
    ("no gradient clip", "grad_norm = nn.utils.clip_grad_norm_(local, args.max_grad_norm)",
     "grad_norm = nn.utils.clip_grad_norm_(local, 1e9)", WIRING),
    # what the main process hears and does
    ("episodes are not reported", 'ended["_episode"].append(True)', "pass", BUDGET),
    ("a worker's error is not reported", 'messages.put(("error", k,', 'print(("error", k,', DYING),
    ("a dead worker goes unnoticed", "if process.exitcode not in (None, 0):", "if False:", DYING),
    ("workers inherit Ctrl-C", "for s in (signal.SIGINT, signal.SIGTERM)}  # inherited",
     "for s in (signal.SIGTERM,)}  # inherited", CTRL_C),
]
