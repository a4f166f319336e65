"""Compare today's alphazero checkpoint (benchmarks/identical.py's run) with one saved by the code before the run
harness (267a6d3), key by key, mapping the old layout (self-play state and random states at the top) onto the new one
(ranks[0]):  python benchmarks/identical_alphazero.py /root/ref-267a6d3/alphazero.pt"""
import importlib.util
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("identical", os.path.join(HERE, "identical.py"))
identical = importlib.util.module_from_spec(spec)
spec.loader.exec_module(identical)

ref = torch.load(sys.argv[1], weights_only=True)
path = identical.run("alphazero")
new = torch.load(path, weights_only=True)

self_play = ("playing", "boards", "moves_played", "played", "targets", "window", "recent", "started")
mapped = {k: ref[k] for k in ("script", "args", "games", "world_size", "new_positions", "next_update", "net",
                              "optimizer")}
mapped["metrics"] = {k: v for k, v in ref["metrics"].items() if k.startswith("eval/")}
mapped["ranks"] = [{"rng": {"python": ref["rng"]["python"], "torch": ref["rng"]["torch"]},
                    "generator": ref["rng"]["numpy_generator"], "self_play": {k: ref[k] for k in self_play}}]
only_new_rng = {k: new["ranks"][0]["rng"].pop(k) for k in ("numpy", "cuda")}
print("reference keys not carried over:", sorted(set(ref) - set(mapped) - set(self_play) - {"rng"}),
      "| reference metrics not in the new checkpoint:", {k: v for k, v in ref["metrics"].items()
                                                         if not k.startswith("eval/")})
print("new keys:", sorted(new), "| ranks[0]:", sorted(new["ranks"][0]), "| only in the new rng:", sorted(only_new_rng))
diffs = identical.differences(mapped, new)
print("alphazero:", "bit-identical" if not diffs else "DIFFERENT: " + "; ".join(diffs[:8]))
sys.exit(1 if diffs else 0)
