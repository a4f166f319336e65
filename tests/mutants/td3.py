"""td3.py's mutants: one small change each that a fast test in tests/test_td3.py must catch.

    python tests/mutants/run.py td3

Each mutant runs the fast in-process test written to catch it (CATCHER), a few seconds of testing plus pytest's
start-up. Before/after counts: /work/notes/ddpg_td3.md."""

FAST = "tests/test_td3.py -k (not(cli))and(not(sigkill))"
CATCHER = {  # the fast test written to catch each mutant
    'target_with_online_critic': 'hand_computed',
    'target_action_at_s': 'hand_computed',
    'target_with_online_actor': 'two_critic_updates',
    'no_target_update': 'two_critic_updates',
    'no_critic_target_update': 'two_critic_updates',
    'truncation_stored_as_termination': 'stores_the_true',
    'reset_obs_stored_as_next_obs': 'stores_the_true',
    'final_obs_as_next_state': 'stores_the_true',
    'no_delayed_updates': 'two_critic_updates',
    'no_target_smoothing': 'hand_computed',
    'smoothing_noise_unclipped': 'hand_computed',
    'smoothing_noise_not_scaled': 'hand_computed',
    'max_of_twins': 'hand_computed',
    'only_one_critic_learns': 'hand_computed',
    'noise_not_scaled_to_bounds': 'gaussian_exploration',
    'actor_loss_sign': 'hand_computed',
    'actor_follows_q2': 'hand_computed',
    'target_ignores_termination': 'hand_computed',
    'actor_on_next_obs': 'two_critic_updates',
    'polyak_tau_inverted': 'polyak',
    'resume_without_rng_states': 'exact',
    'losses_not_checked': 'a_nan',
    'checkpoint_written_with_nan': 'non_finite',
    # issue 22 audit
    'final_evaluation_of_the_target_actor': 'audit_the_final_evaluation',
    'evaluate_loads_the_target_actor': 'audit_evaluate_runs',
}
MUTANTS = [(name, old, new, f"{FAST.split(' -k ')[0]} -k {CATCHER[name]}") for name, old, new in [
    ("target_with_online_critic", "y = td_target(rewards, terminations, critic_target(next_obs, next_actions)",
     "y = td_target(rewards, terminations, critic(next_obs, next_actions)"),
    ("target_action_at_s", "smoothed_target_action(actor_target, next_obs, args.policy_noise",
     "smoothed_target_action(actor_target, obs, args.policy_noise"),
    ("target_with_online_actor", "critic_step(batch, actor_target, critic,", "critic_step(batch, actor, critic,"),
    ("no_target_update", "polyak_update(actor, actor_target, args.tau)\n                    polyak_update("
     "critic, critic_target, args.tau)", "pass"),
    ("no_critic_target_update", "\n                    polyak_update(critic, critic_target, args.tau)", ""),
    ("truncation_stored_as_termination", "next_obs, infos), terminations)  # store; not truncated",
     "next_obs, infos), terminations | truncations)"),
    ("reset_obs_stored_as_next_obs", "rb.add(obs, actions, rewards, final_observations(next_obs, infos),",
     "rb.add(obs, actions, rewards, next_obs,"),
    ("final_obs_as_next_state", "        obs = next_obs\n",
     "        obs = final_observations(next_obs, infos)\n"),
    ("no_delayed_updates", "if num_updates % args.policy_frequency == 0:", "if True:"),
    ("no_target_smoothing", "next_actions = smoothed_target_action(actor_target, next_obs, args.policy_noise, "
     "args.noise_clip)", "next_actions = actor_target(next_obs)"),
    ("smoothing_noise_unclipped", ".clamp(-noise_clip, noise_clip)", ""),
    ("smoothing_noise_not_scaled", "actor_target.clip(action + noise * actor_target.action_scale)",
     "actor_target.clip(action + noise)"),
    ("max_of_twins", "next_q.min(0).values", "next_q.max(0).values"),
    ("only_one_critic_learns", "((critic(obs, actions) - y) ** 2).mean(1).sum()",
     "((critic(obs, actions)[0] - y) ** 2).mean()"),
    ("noise_not_scaled_to_bounds", "action + noise * actor.action_scale", "action + noise"),
    ("actor_loss_sign", "policy_loss = -critic.q1(", "policy_loss = critic.q1("),
    ("actor_follows_q2", "policy_loss = -critic.q1(", "policy_loss = -critic.q2("),
    ("target_ignores_termination", "gamma * (1 - terminations) * next_q", "gamma * next_q"),
    ("actor_on_next_obs", "actor_step(batch[0],", "actor_step(batch[3],"),
    ("polyak_tau_inverted", "list(net.parameters()), tau)", "list(net.parameters()), 1 - tau)"),
    ("resume_without_rng_states", '        set_rng_states(mine["rng"])', "        pass"),
    ("losses_not_checked", "if not math.isfinite(value):", "if False:"),
    ("checkpoint_written_with_nan", "        if not all(torch.isfinite(p).all() for p in params):",
     "        if False:"),
    # issue 22 audit
    ("final_evaluation_of_the_target_actor", "evaluate_now = lambda video: evaluate(actor,",
     "evaluate_now = lambda video: evaluate(actor_target,"),
    ("evaluate_loads_the_target_actor", 'checkpoint["actor"], env_id)', 'checkpoint["actor_target"], env_id)'),
]]
