"""Update time per env step of td3.py and ddpg.py on Hopper-v4 (batch 256, 256x256 networks, one update per env
step, one torch thread), split into env + acting, critic update, actor update and target update; the matmul floor
(the same matrix products as bare torch.mm calls, timed in the same run); eager (default flags) vs --compile, with
the compile warm-up; and a plain eager baseline (two nn.Linear critics, for-loop Adam, critic weight gradients in
the actor update) for reference.

    python benchmarks/speed_td3_ddpg.py            # ~3 CPU-minutes; writes benchmarks/results/{td3,ddpg}_speed.json
"""

import copy
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import ddpg  # noqa: E402
import td3  # noqa: E402

B, H = 256, 256
ROUNDS, N = 5, 200


def timed(fn, n=N):
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e3  # ms of CPU time per call


def best_of(fns: dict, rounds=ROUNDS) -> dict:
    """Interleaved rounds, the minimum per function: the least disturbed by other processes on the machine."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            fn(), fn()
            best[name] = min(best[name], timed(fn))
    return best


def matmul_floor(shapes: list[tuple[int, int, int]]):
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    return lambda: [torch.mm(a, b) for a, b in mats]


def mlp_shapes(sizes, forward=True, weight_grads=True, input_grads=True):
    """(m, k, n) of the products of an MLP on a batch of B: forward, weight gradients, input gradients."""
    shapes = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if forward:
            shapes.append((B, fan_in, fan_out))
        if weight_grads:
            shapes.append((fan_in, B, fan_out))
        if input_grads and i > 0:
            shapes.append((B, fan_out, fan_in))
    return shapes


def floors(obs_dim, act_dim, twin: bool):
    actor, critic = [obs_dim, H, H, act_dim], [obs_dim + act_dim, H, H, 1]
    n = 2 if twin else 1
    critic_update = (mlp_shapes(actor, weight_grads=False, input_grads=False)  # target actor
                     + n * mlp_shapes(critic, weight_grads=False, input_grads=False)  # target critic(s)
                     + n * mlp_shapes(critic))  # critic(s): forward, weight and hidden-input gradients
    actor_update = (mlp_shapes(actor) + mlp_shapes(critic, weight_grads=False)  # Q_1 forward, its input grads
                    + [(B, H, obs_dim + act_dim)])  # down to the action
    return matmul_floor(critic_update), matmul_floor(actor_update)


class PlainCritic(nn.Module):
    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim + act_dim, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                 nn.Linear(H, 1))

    def forward(self, obs, action):
        return self.net(torch.cat([obs, action], -1)).squeeze(-1)


def plain_updates(module, actor, obs_space, act_space, rb, args, twin, tuned=False):
    """CleanRL-style eager reference: separate nn.Linear critics, default Adam, the critics' weight gradients computed
    in the actor update, a Python loop for the target update. `tuned`: the same separate critics with the script's
    other speed choices (fused Adam, no critic weight gradients in the actor update, _foreach_lerp_), to isolate
    what stacking the critics buys."""
    obs_dim, act_dim = obs_space.shape[0], act_space.shape[0]
    critics = [PlainCritic(obs_dim, act_dim) for _ in range(2 if twin else 1)]
    targets = [copy.deepcopy(c).requires_grad_(False) for c in critics]
    actor_target = copy.deepcopy(actor).requires_grad_(False)
    q_opt = torch.optim.Adam([p for c in critics for p in c.parameters()], lr=3e-4, fused=tuned)
    a_opt = torch.optim.Adam(actor.parameters(), lr=3e-4, fused=tuned)

    def critic_update():
        obs, actions, rewards, next_obs, terminations = rb.sample(B)
        with torch.no_grad():
            if twin:
                next_actions = module.smoothed_target_action(actor_target, next_obs, 0.2, 0.5)
            else:
                next_actions = actor_target(next_obs)
            next_q = torch.stack([t(next_obs, next_actions) for t in targets]).min(0).values
            y = rewards + args.gamma * (1 - terminations) * next_q
        loss = sum(((c(obs, actions) - y) ** 2).mean() for c in critics)
        q_opt.zero_grad()
        loss.backward()
        q_opt.step()

    def actor_update():
        obs = rb.sample(B)[0]
        critics[0].requires_grad_(not tuned)
        loss = -critics[0](obs, actor(obs)).mean()
        critics[0].requires_grad_(True)
        a_opt.zero_grad()
        loss.backward()
        a_opt.step()

    def target_update():
        for net, target in [*zip(critics, targets), (actor, actor_target)]:
            if tuned:
                module.polyak_update(net, target, args.tau)
                continue
            for p, t in zip(net.parameters(), target.parameters()):
                t.data.copy_(args.tau * p.data + (1 - args.tau) * t.data)

    return critic_update, actor_update, target_update


def measure(module, name):
    torch.manual_seed(0)
    env = gym.make("Hopper-v4")
    obs_space, act_space = env.observation_space, env.action_space
    twin = module is td3
    args = module.Args(env_id="Hopper-v4")
    rb = module.ReplayBuffer(100_000, obs_space, act_space, torch.device("cpu"))
    obs, _ = env.reset(seed=0)
    for _ in range(10_000):  # real Hopper transitions, random actions
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rb.add(obs[None], next_obs[None], action[None], [reward], [terminated])
        obs = next_obs if not (terminated or truncated) else env.reset()[0]

    def updates(compile_losses: bool):
        torch.manual_seed(0)
        actor = module.Actor(obs_space, act_space)
        critic = module.Critic(obs_space, act_space)
        actor_target, critic_target = (copy.deepcopy(m).requires_grad_(False) for m in (actor, critic))
        a_opt = torch.optim.Adam(actor.parameters(), lr=args.policy_lr, fused=True)
        q_opt = torch.optim.Adam(critic.parameters(), lr=args.q_lr, fused=True)
        critic_loss = torch.compile(module.critic_loss) if compile_losses else module.critic_loss
        actor_loss = torch.compile(module.actor_loss) if compile_losses else module.actor_loss
        def critic_update():
            module.gradient_step(q_opt, critic_loss(rb.sample(B), actor_target, critic, critic_target, args))

        def actor_update():
            module.gradient_step(a_opt, actor_loss(rb.sample(B)[0], actor, critic))

        def target_update():
            module.polyak_update(actor, actor_target, args.tau)
            module.polyak_update(critic, critic_target, args.tau)

        return critic_update, actor_update, target_update, actor

    results = {}
    eager = updates(False)
    wall, cpu = time.time(), time.process_time()
    compiled = updates(True)
    compiled[0](), compiled[1]()  # the first calls compile (forward and backward graphs of both losses)
    results["compile_warmup_s"] = {"wall": time.time() - wall, "cpu_this_process": time.process_time() - cpu,
                                   "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default (warm?)")}
    plain = plain_updates(module, module.Actor(obs_space, act_space), obs_space, act_space, rb, args, twin)
    separate = plain_updates(module, module.Actor(obs_space, act_space), obs_space, act_space, rb, args, twin, True)
    actor = eager[3]
    env_obs = [env.reset(seed=0)[0]]

    def env_and_act():
        with torch.no_grad():
            a = actor(torch.as_tensor(env_obs[0], dtype=torch.float32)[None])
            a = actor.clip(a + torch.randn_like(a) * 0.1 * actor.action_scale).numpy()[0]
        o, _, terminated, truncated, _ = env.step(a)
        env_obs[0] = env.reset()[0] if terminated or truncated else o

    floor_critic, floor_actor = floors(obs_space.shape[0], act_space.shape[0], twin)
    fns = {"env_and_acting": env_and_act, "floor_critic": floor_critic, "floor_actor": floor_actor}
    variants = {"default": eager, "compile": compiled, "plain_eager": plain, "separate_critics_tuned": separate}
    for label, (c, a, t, *_) in variants.items():
        fns |= {f"{label}/critic_update": c, f"{label}/actor_update": a, f"{label}/target_update": t}
    best = best_of(fns)
    per = args.policy_frequency  # actor and target updates happen once every `policy_frequency` critic updates
    floor = best["floor_critic"] + best["floor_actor"] / per
    results["ms_per_env_step"] = {"env_and_acting": best["env_and_acting"], "matmul_floor": floor,
                                  "matmul_floor_critic_update": best["floor_critic"],
                                  "matmul_floor_actor_update": best["floor_actor"] / per}
    for label in variants:
        split = {"critic_update": best[f"{label}/critic_update"], "actor_update": best[f"{label}/actor_update"] / per,
                 "target_update": best[f"{label}/target_update"] / per}
        split["update_total"] = sum(split.values())
        split["ratio_to_floor"] = split["update_total"] / floor
        results["ms_per_env_step"][label] = split
    results["setup"] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": B, "hidden": H,
                        "policy_frequency": per, "timer": "CPU time (time.process_time), best of 5 interleaved rounds"}
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = os.path.join(ROOT, "benchmarks", "results")
    for module, name in ((td3, "td3"), (ddpg, "ddpg")):
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        res = measure(module, name)
        with open(os.path.join(out, f"{name}_speed.json"), "w") as f:
            json.dump(res, f, indent=1)
        ms = res["ms_per_env_step"]
        print(f"{name}: env+acting {ms['env_and_acting']:.3f} ms, matmul floor {ms['matmul_floor']:.3f} ms/env step "
              f"(critic {ms['matmul_floor_critic_update']:.3f}, actor {ms['matmul_floor_actor_update']:.3f}); "
              f"compile warm-up {res['compile_warmup_s']['wall']:.1f} s wall")
        for label in ("default", "compile", "plain_eager", "separate_critics_tuned"):
            s = ms[label]
            print(f"  {label:22s} critic {s['critic_update']:.3f}  actor {s['actor_update']:.3f}  target "
                  f"{s['target_update']:.3f}  total {s['update_total']:.3f} ms  = {s['ratio_to_floor']:.2f}x floor")
