"""Mutants of regulator_1d.py for tests/mutants/run.py: (name, old text, new text, pytest arguments).

Each must be caught by the fast tests; the first two are the ones issue 13 found surviving every test."""

TESTS = "tests/test_regulator_1d.py"

MUTANTS = [
    ("bootstrap from the reset observation at a time limit", "s, a, reward, next_s, args.gamma)",
     "s, a, reward, next_obs, args.gamma)", TESTS),
    ("std as exp(theta2) instead of exp(theta2 / 2)", "torch.exp(0.5 * self.theta2)", "torch.exp(self.theta2)",
     TESTS),
    ("actor loss with the wrong sign", "actor_loss = -(actor(s).log_prob(a)", "actor_loss = (actor(s).log_prob(a)",
     TESTS),
    ("TD residual with the wrong sign", "delta = target - critic(s)", "delta = critic(s) - target", TESTS),
    ("no discount in the target", "reward + gamma * critic(next_s)", "reward + critic(next_s)", TESTS),
    ("reward +s^2", "reward = -self.s**2", "reward = self.s**2", TESTS),
    ("reward of the next state", "reward = -self.s**2", "reward = -(self.s + a) ** 2", TESTS),
    ("dynamics s - a", "next_s = self.s + a", "next_s = self.s - a", TESTS),
    ("critic features swapped", "self.phi1 * s + self.phi2 * s**2", "self.phi1 * s**2 + self.phi2 * s", TESTS),
    ("critic never stepped", "            critic_optimizer.step()", "            pass", TESTS),
    ("actor never stepped", "            actor_optimizer.step()", "            pass", TESTS),
    ("state never advanced", "            s = next_obs", "            s = s", TESTS),
    ("critic stepped with the actor's step size", "critic.parameters(), lr=args.critic_lr",
     "critic.parameters(), lr=args.actor_lr", TESTS),
    ("log-prob of the mean, not of the sample", "actor(s).log_prob(a)", "actor(s).log_prob(actor(s).mean)", TESTS),
    ("delta not detached for the actor", "delta.detach()).mean()", "delta).mean()", TESTS),
    ("no restart at the time limit", "obs = self.reset() if truncated else next_s", "obs = next_s", TESTS),
    ("stochastic evaluation", "env.step(actor(s).mean)", "env.step(actor(s).sample())", TESTS),
    ("episode return never reset", "                episode_return.zero_()", "                pass", TESTS),
]
