"""Mutants of ac.py for tests/mutants/run.py: (name, old text, new text, pytest arguments).

Each must be caught by the fast tests; the first is the one issue 13 found caught only by a learning test."""

TESTS = "tests/test_ac.py"

MUTANTS = [
    ("log-prob of the clipped action", "dist.log_prob(action)",
     "dist.log_prob(torch.as_tensor(env_actions(action, action_space), device=device))", TESTS),
    ("bootstrap through termination", "critic(s_next) * (1.0 - terminated)", "critic(s_next)", TESTS),
    ("truncation treated as termination", "as_tensor(terminated), args.gamma",
     "as_tensor(terminated | truncated), args.gamma", TESTS),
    ("reset observation as s'", "s_next = as_tensor(final_observations(next_obs, infos))",
     "s_next = as_tensor(next_obs)", TESTS),
    ("actor loss with the wrong sign", "actor_loss = -(dist.log_prob(action)", "actor_loss = (dist.log_prob(action)",
     TESTS),
    ("no discount in the target", "gamma * critic(s_next)", "critic(s_next)", TESTS),
    ("V(s') in place of V(s)", "delta = target - critic(obs)", "delta = target - critic(s_next)", TESTS),
    ("critic never stepped", "        critic_optimizer.step()", "        pass", TESTS),
    ("next state acted on is the final observation", "        obs = as_tensor(next_obs)", "        obs = s_next",
     TESTS),
    ("Gaussian scale exp(log_std)^2", "Normal(out, self.log_std.exp(), validate_args=False)",
     "Normal(out, self.log_std.exp() ** 2, validate_args=False)", TESTS),
    ("stochastic evaluation", "device=device)).mode\n", "device=device)).sample()\n", TESTS),
    ("every evaluation episode with one seed", "env.reset(seed=seed + k)", "env.reset(seed=seed)", TESTS),
    ("critic stepped with the actor's step size", "critic.parameters(), lr=args.critic_lr",
     "critic.parameters(), lr=args.actor_lr", TESTS),
    ("actions not clipped", "np.clip(action, action_space.low, action_space.high)", "action", TESTS),
    ("resume without the RNG states", "set_rng_states(mine[\"rng\"])", "pass", TESTS),
    ("resume without the actor's optimizer state", " actor_optimizer=actor_optimizer,", "", TESTS),
    ("resume with the command line's Args", "args, device = run.args, run.device", "device = run.device", TESTS),
    ("resume keeps the stopped run's later events", "purge_step=self.step + 1 if self.checkpoint else None",
     "purge_step=None", TESTS),
    ("no check of the logged losses", "            if not math.isfinite(value):", "            if False:", TESTS),
]
# Tried and left out as equivalent here: "TensorBoard not flushed with a checkpoint" (writer.flush() -> pass)
# survives test_checkpoint_flushes_tensorboard_with_it: torch's event writer thread puts each event in the file
# within milliseconds, so the events are on disk at the next update either way; the flush only makes it certain.
