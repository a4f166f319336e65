"""What a checkpoint costs: sac.py on Hopper-v4 shapes with a FULL 1M-transition replay buffer (random data of the
right shapes; nothing is trained), written by sac.py's own run harness (Run.save: torch.save to a temporary file,
then os.replace) into a folder of the repository (the disk runs/ is on):

    python benchmarks/checkpoint.py          # ~1 minute: results/checkpoint.json

It times the write (wall seconds, best and median of --repeats) and a weights_only load at three fillings of the
buffer (empty, half, full: the checkpoint holds the filled rows only, so it grows during a run), reports the size
on disk, and the share of a run that checkpointing costs at sac.py's default --checkpoint-every, for the README's
measured Hopper-v4 speeds on a CPU (61-138 env steps/s): the write at a full buffer against the seconds that
--checkpoint-every steps take (the worst case, the end of a 1M run), and averaged over a 1M-step run whose buffer
fills linearly.
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import sac  # noqa: E402

SPS = (61, 138)  # the README's measured sac Hopper-v4 env steps per second on a CPU (slowest, fastest)


def checkpoint_parts(rows: int) -> tuple[dict, dict]:
    """sac.train's checkpoint contents for Hopper-v4 (obs 11, actions 3), the buffer filled with `rows` rows."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    torch.manual_seed(0)
    actor, critic = sac.Actor(obs_space, action_space), sac.Critic(obs_space, action_space)
    log_alpha = torch.zeros((), requires_grad=True)
    optimizers = {"actor_optimizer": torch.optim.Adam(actor.parameters()), "alpha_optimizer":
                  torch.optim.Adam([log_alpha]), "critic_optimizer": torch.optim.Adam(critic.parameters())}
    for net, optimizer in zip((actor, log_alpha, critic), optimizers.values()):  # Adam's moments exist
        for p in ([net] if isinstance(net, torch.Tensor) else net.parameters()):
            p.grad = torch.randn_like(p)
        optimizer.step()
    rb = sac.ReplayBuffer(1_000_000, obs_space, action_space, torch.device("cpu"))
    for name in rb.fields:
        getattr(rb, name).normal_()
    rb.pos = rb.count = rows
    nets = {"actor": actor, "critic": critic, "critic_target": copy.deepcopy(critic), "replay_buffer": rb} | optimizers
    env = gym.make("Hopper-v4")
    nets |= {"log_alpha": log_alpha, "action_space_rng": env.action_space.np_random}
    env.close()
    return {"num_updates": rows}, nets


def harness_save(path: str, counters: dict, nets: dict):
    """sac.py's own checkpoint write, Run.save of its run harness, on a run that holds these things."""
    run = object.__new__(sac.Run)
    run.things, run.per_rank, run.rank, run.world, run.writer = nets, {}, 0, 1, sac.NoWriter()
    run.args, run.step, run.recent_returns, run.path = sac.Args(cuda=False), counters["num_updates"], [], path
    run.save(counters)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(OUT, "checkpoint.json"))
    args = parser.parse_args()
    every = sac.Args(cuda=False).checkpoint_every
    result = {"setup": {"torch": torch.__version__, "cpu": open("/proc/cpuinfo").read().split("model name")[1]
                        .split("\n")[0].strip(" :\t"), "load_average_at_start": os.getloadavg(),
                        "checkpoint_every": every, "hopper_sps_cpu": SPS, "timer": "wall seconds (time.perf_counter)"}}
    with tempfile.TemporaryDirectory(dir=ROOT) as folder:
        path = os.path.join(folder, "checkpoint.pt")
        for label, rows in (("empty", 0), ("half", 500_000), ("full", 1_000_000)):
            state, nets = checkpoint_parts(rows)
            writes, loads = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                harness_save(path, state, nets)
                writes.append(time.perf_counter() - start)
                start = time.perf_counter()
                torch.load(path, weights_only=True, map_location="cpu")
                loads.append(time.perf_counter() - start)
            result[label] = {"buffer_rows": rows, "bytes_on_disk": os.path.getsize(path), "write_s_best": min(writes),
                             "write_s_median": statistics.median(writes), "load_s_median": statistics.median(loads)}
            print(f"{label:>5} buffer ({rows:>9,} rows): {os.path.getsize(path) / 1e6:7.1f} MB, write "
                  f"{min(writes):.3f} s best / {statistics.median(writes):.3f} s median, load "
                  f"{statistics.median(loads):.3f} s")
    empty, full = result["empty"]["write_s_median"], result["full"]["write_s_median"]
    average = (empty + full) / 2  # the buffer fills linearly over a 1M-step run (buffer_size 1M)
    result["share_of_run"] = {}
    for sps in SPS:
        interval = every / sps  # seconds of training between two checkpoints
        share = {"worst_full_buffer": full / (interval + full), "average_over_1m_run": average / (interval + average)}
        result["share_of_run"][f"{sps}_steps_per_s"] = share
        print(f"at {sps} steps/s, --checkpoint-every {every:,} ({interval:.0f} s of training): "
              f"{100 * share['worst_full_buffer']:.2f}% with a full buffer, "
              f"{100 * share['average_over_1m_run']:.2f}% averaged over a 1M run")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
