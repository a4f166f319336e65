"""Mutants of sac.py for tests/mutants/run.py: (name, old, new, pytest arguments). Each must make a fast test
fail: the wiring tests (hand-computed losses, and train itself on a chain env whose episode ends the test
controls), the log-prob tests, or the exact-resume test."""

WIRING = "tests/test_sac.py -k wiring"
LOG_PROB = "tests/test_sac.py -k log_prob"

MUTANTS = [
    ("target from the online critic", "critic_target(next_obs, next_actions)",
     "critic(next_obs, next_actions)", WIRING),
    ("target action a' sampled at s", "actor.get_action(next_obs)", "actor.get_action(obs)", WIRING),
    ("no target update", "polyak_update(critic, critic_target, args.tau)", "pass", WIRING),
    ("truncation stored as termination", "rb.add(obs, actions, rewards, real_next_obs, terminations)",
     "rb.add(obs, actions, rewards, real_next_obs, terminations | truncations)", WIRING),
    ("reset observation stored as s'", "real_next_obs = final_observations(next_obs, infos)",
     "real_next_obs = next_obs", WIRING),
    ("max instead of min in the target", "soft_value = next_q.min(0).values",
     "soft_value = next_q.max(0).values", WIRING),
    ("no entropy term in the target", "next_q.min(0).values - alpha * next_log_prob", "next_q.min(0).values",
     WIRING),
    ("termination ignored in the target", "gamma * (1 - terminations) * soft_value", "gamma * soft_value",
     WIRING),
    ("wrong sign in the alpha loss", "alpha_loss = -(log_alpha.exp()", "alpha_loss = (log_alpha.exp()",
     WIRING),
    ("entropy target +|A|", "target_entropy = -float(", "target_entropy = float(", WIRING),
    ("actor update through the critic's weights",
     "torch.func.functional_call(critic, frozen, (obs, actions))", "critic(obs, actions)", WIRING),
    ("no entropy term in the actor loss", "(log_alpha.exp().detach() * log_prob - q)", "(-q)", WIRING),
    ("actor updated on s'", "actor_step(batch[0],", "actor_step(batch[3],", WIRING),
    ("actor never updated", "num_updates % args.policy_frequency == 0",
     "num_updates % args.policy_frequency < 0", WIRING),
    ("temperature never updated", "losses[\"alpha_loss\"] = temperature_step(",
     "losses[\"alpha_loss\"] = (lambda *_: torch.zeros(()))(", WIRING),
    ("polyak with 1 - tau", "list(net.parameters()), tau)", "list(net.parameters()), 1 - tau)", WIRING),
    ("critic optimizer step skipped", "    critic_optimizer.step()", "    pass", WIRING),
    ("log-prob without the tanh correction", "normal.log_prob(u) - log_tanh_jacobian", "normal.log_prob(u)",
     LOG_PROB),
    ("log-prob without the affine map's Jacobian", " - self.action_scale.log()", "", LOG_PROB),
    ("resume without the RNG states", "set_rng_states(checkpoint[\"rng\"])", "pass",
     "tests/test_sac.py -k exact"),
    ("resume without the replay buffer", "net.load_state_dict(checkpoint[name])",
     "name == \"replay_buffer\" or net.load_state_dict(checkpoint[name])", "tests/test_sac.py -k exact"),
    ("checkpoint saves views of the buffer (its whole storage)", '.to("cpu", copy=True)', ".cpu()",
     "tests/test_sac.py -k weights_only"),
]
