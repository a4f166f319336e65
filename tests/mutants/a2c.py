"""a2c.py's mutants for tests/mutants/run.py: each breaks one line, and a fast test of tests/test_a2c.py must fail.

    python tests/mutants/run.py a2c

Before the wiring tests (against the earlier tests/test_a2c.py without its subprocess tests), 9 of the first 18
survived, among them the three the issue names; now every one is caught.
"""

T = "tests/test_a2c.py::test_"
WIRING = T + "train_wiring_on_a_chain_with_known_ends"
RESUME = T + "resume_at_an_update_boundary_is_exact"
D = "tests/test_a2c_distributed.py::test_"
RANKS = D + "ranks_average_their_gradients_and_end_with_the_same_weights"

MUTANTS = [
    # the three the issue names: caught only by learning tests, or by none, before
    ("bootstrap where an episode is both terminated and truncated", "cut = truncated & ~terminated",
     "cut = truncated", WIRING),
    ("last_value = 0", "critic(obs), args.gamma,", "0 * critic(obs), args.gamma,", WIRING),
    ("entropy bonus with the wrong sign", "- args.ent_coef * entropy", "+ args.ent_coef * entropy", WIRING),
    # time limits and episode ends
    ("truncation is not an episode end", "terminated | truncated, dtype", "terminated, dtype", WIRING),
    ("time-limit bootstrap without gamma", "+= gamma * critic(final_obs)", "+= critic(final_obs)", WIRING),
    ("no time-limit bootstrap", "+= gamma * critic(final_obs)", "+= 0 * critic(final_obs)", WIRING),
    # compute_gae
    ("GAE recursion crosses episode ends", "gae = delta + gamma * lam * mask * gae",
     "gae = delta + gamma * lam * gae", WIRING),
    ("TD residual bootstraps across episode ends", "gamma * next_value * mask - values[t]",
     "gamma * next_value - values[t]", WIRING),
    ("lambda ignored", "gamma * lam * mask * gae", "gamma * mask * gae", WIRING),
    ("every step bootstraps from the last value", "next_value = values[t]", "next_value = last_value", WIRING),
    ("returns without V(s_t)", "return advantages, advantages + values", "return advantages, advantages", WIRING),
    # the loss and the update
    ("policy gradient with the wrong sign", "actor_loss = -(dist.log_prob", "actor_loss = (dist.log_prob", WIRING),
    ("actor weighted by the returns, not the advantages", "* advantages.flatten()).mean()",
     "* returns.flatten()).mean()", WIRING),
    ("critic regressed on the advantages", "- returns.flatten()) ** 2", "- advantages.flatten()) ** 2", WIRING),
    ("value loss without its coefficient", "args.vf_coef * value_loss", "value_loss", WIRING),
    ("gradient never clipped", "clip_grad_norm_(params, args.max_grad_norm)", "clip_grad_norm_(params, 1e12)",
     WIRING),
    ("learning rate annealed upwards", "* (1 - (update - 1) / num_updates)", "* (1 + (update - 1) / num_updates)",
     WIRING),
    # evaluation
    ("evaluation samples instead of acting deterministically", ".mode", ".sample()",
     T + "evaluation_acts_deterministically"),
    ("SPS counts the evaluations", "self.eval_seconds += time.time() - start", "self.eval_seconds += 0",
     T + "evaluations_run_at_their_steps_and_the_final_one_records_the_video"),
    # checkpoints, resume, signals, NaN (issue 12)
    ("resume does not restore the torch RNG", 'torch.set_rng_state(rng["torch"])', "torch.get_rng_state()", RESUME),
    ("resume does not restore the optimizer", "critic=critic,\n                        optimizer=optimizer)",
     "critic=critic)", RESUME),
    ("resume restarts the step-size schedule", "range(start + 1, num_updates + 1)",
     "range(1, num_updates - start + 1)", RESUME),
    ("resume restarts the observation statistics", 'self.envs.set_attr("obs_rms", ',
     '(lambda *a: None)("obs_rms", ', RESUME),
    ("TensorBoard events after the checkpoint kept on resume",
     "purge_step=self.step + 1 if self.checkpoint else None", "purge_step=None",
     T + "sigkill_after_a_checkpoint_then_resume_gives_one_continuous_curve"),
    ("checkpoint written with non-finite parameters", "if not all(torch.isfinite(p).all()",
     "if False and not all(torch.isfinite(p).all()", T + "parameters_are_checked_before_each_checkpoint"),
    ("non-finite losses not checked", "if not math.isfinite(value):", "if False:",
     T + "learning_rate_1e30_from_the_start"),
    ("an interrupted run exits 0", "128 + self.signals[0])", "0)",
     T + "sigterm_in_process_stops_cleanly_and_restores_the_handlers"),
    ("signal handlers left installed", "signal.signal(s, handler)\n        if self.rank == 0:",
     "pass\n        if self.rank == 0:", T + "sigterm_in_process_stops_cleanly_and_restores_the_handlers"),
    ("two runs in the same second share a folder", "os.makedirs(path) if make",
     "os.makedirs(path, exist_ok=True) if make", T + "budget_rounding_is_said_and_run_folders_are_unique"),
    ("--seed -1 accepted", "0 <= self.seed <= 2**32 - 1", "True", T + "bad_arguments_exit_with_one_line"),
    # torchrun (issue 15): tests/test_a2c_distributed.py, 2 ranks
    ("torchrun: gradients not all-reduced", "torch.distributed.all_reduce(grads)", "None", RANKS),
    ("torchrun: gradients summed, not averaged", "(grads / world).split", "grads.split", RANKS),
    ("torchrun: ranks seeded alike", "seed = args.seed + self.rank * args.num_envs", "seed = args.seed",
     D + "audit_a_2_rank_resume_gives_each_rank_its_own_random_states"),
    ("torchrun: budget counted per rank", "args.total_timesteps // (T * N * world)", "args.total_timesteps // (T * N)",
     RANKS),
    ("torchrun: steps of one rank counted", "global_step += N * world", "global_step += N", RANKS),
    ("torchrun: ranks start from their own weights", "torch.distributed.broadcast(p.data, src=0)", "p.data", RANKS),
    ("torchrun: every rank makes a run folder", "elif self.rank == 0:", "elif True:", RANKS),
    ("torchrun: every rank writes TensorBoard", "os.path.exists(self.path), NoWriter()",
     "os.path.exists(self.path), SummaryWriter(folder)", D + "torchrun_end_to_end"),
    ("torchrun: evaluation with rank 0's observation statistics only",
     "torch.distributed.all_gather_object(stats, stats[0])", "pass",
     D + "sigterm_to_one_rank_stops_both_then_resume_on_2_ranks"),
    ("torchrun: a signal stops only the rank that got it", "self.signals[:] = [int(signum)] if signum else []",
     "pass", D + "sigterm_to_one_rank_stops_both_then_resume_on_2_ranks"),
    ("torchrun: a resume on another number of ranks accepted", 'self.checkpoint["world_size"] != self.world',
     "False", D + "sigterm_to_one_rank_stops_both_then_resume_on_2_ranks"),
    # issue 22 audit: tests/test_a2c_distributed.py -k audit
    ("torchrun: the ranks' env seeds overlap", "seed=args.seed + run.rank * N + global_step",
     "seed=args.seed + run.rank + global_step", D + "audit_rank_r_seeds_its_envs_rN_to_rN_plus_N_minus_1"),
    ("torchrun: logged losses summed over the ranks", "values /= self.world", "pass",
     D + "audit_logged_losses_are_the_mean_of_the_ranks_own"),
    ("torchrun: a resume gives every rank rank 0's random states", 'set_rng_states(mine["rng"])',
     'set_rng_states(self.checkpoint["ranks"][0]["rng"])',
     D + "audit_a_2_rank_resume_gives_each_rank_its_own_random_states"),
    # issue 22: a2c.py on the run harness
    ("torchrun: a signal during a rank's checkpoint stops that rank alone",
     "            self.received.append(signum)\n",
     "            self.received.append(signum)\n            self.signals.append(signum)\n",
     D + "sigterm_to_one_rank_stops_both_then_resume_on_2_ranks"),
    ("--evaluate with rank 0's observation statistics only", 'for rank in checkpoint["ranks"] for s in',
     'for rank in checkpoint["ranks"][:1] for s in', D + "torchrun_end_to_end"),
    ("torchrun: a resume gives every rank rank 0's random states, where every episode has just ended",
     'set_rng_states(mine["rng"])', 'set_rng_states(self.checkpoint["ranks"][0]["rng"])',
     D + "a_2_rank_resume_where_every_episode_has_just_ended_is_exact"),
    ("torchrun: every rank prints the error line", 'sys.exit(f"error: {message}" if rank_world()[0] == 0 else 1)',
     'sys.exit(f"error: {message}")', D + "bad_input_under_torchrun"),
]
