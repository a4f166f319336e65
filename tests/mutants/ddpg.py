"""ddpg.py's mutants: one small change each that a fast test in tests/test_ddpg.py must catch.

    python tests/mutants/run.py ddpg

Each mutant runs the fast in-process test written to catch it (CATCHER), a few seconds of testing plus pytest's
start-up. Before/after counts: /work/notes/ddpg_td3.md."""

FAST = "tests/test_ddpg.py -k (not(cli))and(not(ctrl_c))and(not(stationary))"
CATCHER = {  # the fast test written to catch each mutant
    'target_with_online_critic': 'hand_computed',
    'target_action_at_s': 'hand_computed',
    'target_with_online_actor': 'runs_one_update',
    'no_target_update': 'runs_one_update',
    'no_critic_target_update': 'runs_one_update',
    'truncation_stored_as_termination': 'stores_the_true',
    'reset_obs_stored_as_next_obs': 'stores_the_true',
    'final_obs_as_next_state': 'stores_the_true',
    'ou_never_reset': 'ou_noise_is_scaled',
    'ou_option_ignored': 'ou_noise_is_scaled',
    'noise_not_scaled_to_bounds': 'gaussian_exploration',
    'no_exploration_noise': 'gaussian_exploration',
    'actor_loss_sign': 'hand_computed',
    'target_ignores_termination': 'hand_computed',
    'critic_loss_at_next_obs': 'hand_computed',
    'actor_on_next_obs': 'runs_one_update',
    'polyak_tau_inverted': 'polyak',
    'envs_reset_twice': 'stores_the_true',
    'resume_without_rng_states': 'exact',
    'checkpoint_written_with_nan': 'non_finite',
    'losses_not_checked': 'a_nan',
    'checkpoint_after_the_video': '(video)or(checkpoint_loads)',
    # issue 22 audit
    'final_evaluation_of_the_target_actor': 'audit_the_final_evaluation',
    'evaluate_loads_the_target_actor': 'audit_evaluate_runs',
}
MUTANTS = [(name, old, new, f"{FAST.split(' -k ')[0]} -k {CATCHER[name]}") for name, old, new in [
    ("target_with_online_critic", "critic_target(next_obs, actor_target(next_obs))",
     "critic(next_obs, actor_target(next_obs))"),
    ("target_action_at_s", "critic_target(next_obs, actor_target(next_obs))",
     "critic_target(next_obs, actor_target(obs))"),
    ("target_with_online_actor", "critic_step(batch, actor_target, critic,", "critic_step(batch, actor, critic,"),
    ("no_target_update", "polyak_update(actor, actor_target, args.tau)\n                polyak_update("
     "critic, critic_target, args.tau)", "pass"),
    ("no_critic_target_update", "\n                polyak_update(critic, critic_target, args.tau)", ""),
    ("truncation_stored_as_termination", "final_observations(next_obs, infos), terminations)",
     "final_observations(next_obs, infos), terminations | truncations)"),
    ("reset_obs_stored_as_next_obs", "rb.add(obs, actions, rewards, final_observations(next_obs, infos),",
     "rb.add(obs, actions, rewards, next_obs,"),
    ("final_obs_as_next_state", "        obs = next_obs\n", "        obs = final_observations(next_obs, infos)\n"),
    ("ou_never_reset", "ou.reset(terminations | truncations)", "None"),
    ("ou_option_ignored", 'if args.noise == "ou" else', 'if args.noise == "gaussian" else'),
    ("noise_not_scaled_to_bounds", "action + noise * actor.action_scale", "action + noise"),
    ("no_exploration_noise", "actor.clip(action + noise * actor.action_scale)", "actor.clip(action)"),
    ("actor_loss_sign", "policy_loss = -critic(obs, actor(obs), detach=True).mean()",
     "policy_loss = critic(obs, actor(obs), detach=True).mean()"),
    ("target_ignores_termination", "gamma * (1 - terminations) * next_q", "gamma * next_q"),
    ("critic_loss_at_next_obs", "((critic(obs, actions) - y) ** 2)", "((critic(next_obs, actions) - y) ** 2)"),
    ("actor_on_next_obs", "actor_step(batch[0],", "actor_step(batch[3],"),
    ("polyak_tau_inverted", "list(net.parameters()), tau)", "list(net.parameters()), 1 - tau)"),
    ("envs_reset_twice", "obs, _ = envs.reset(seed=args.seed + global_step)",
     "obs, _ = envs.reset(seed=args.seed + global_step)\n    obs, _ = envs.reset(seed=args.seed)"),
    ("resume_without_rng_states", 'set_rng_states(mine["rng"])', "pass"),
    ("checkpoint_written_with_nan", "if not all(torch.isfinite(p).all() for p in params):", "if False:"),
    ("losses_not_checked", "if not math.isfinite(value):", "if False:"),
    ("checkpoint_after_the_video", "        self.save(counters, finished=True)\n", "        pass\n"),
    # issue 22 audit
    ("final_evaluation_of_the_target_actor",
     "evaluate(actor, args.env_id, args.eval_episodes, args.seed + 10_000, video)",
     "evaluate(actor_target, args.env_id, args.eval_episodes, args.seed + 10_000, video)"),
    ("evaluate_loads_the_target_actor", 'checkpoint["actor"]', 'checkpoint["actor_target"]'),
]]
