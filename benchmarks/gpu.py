"""The GPU kit (issue 16): every GPU claim of the README measured by one command, in under 8 minutes.

Here, with the package registry (once; the folder is ignored by git, 26 MiB):
    bash benchmarks/gpu_prepare.sh
On the GPU machine (Python 3.12, torch with CUDA; no gymnasium, mujoco or tyro, no network), from the repository
root, with benchmarks/gpu_wheels/ carried along:
    python benchmarks/gpu.py            # installs the wheels offline, then ~7 minutes: JSON + a markdown table
Anywhere (what CI runs, through tests/test_gpu_kit.py; about a minute on a CPU, no install):
    python benchmarks/gpu.py --dry-run

Phases, in this order, each in its own process with its own time limit (a phase that fails or runs out of time
is recorded with its error, and the kit goes on; the limits also fit the whole kit into --budget seconds):
  install           pip install --no-index --find-links benchmarks/gpu_wheels the pinned gymnasium[mujoco], mujoco,
                    tyro and pytest-xdist (skipped when they are installed already, and with --dry-run)
  info              the device, versions, and which torch APIs that the scripts use this torch has
  sac/eager ...     sac and td3 on HalfCheetah-v4, default hyperparameters (but --learning-starts 5000 for both),
  td3/compile       eager, --compile and --compile --cudagraphs: train() runs in the phase's process while a hook
                    on the vector env's step takes the time of every training step. It reports the random phase's
                    steps/s, the compile warm-up (the first 50 learning steps, compiling and CUDA graph capture
                    included, against the same steps at the steady speed), the steady learning-phase steps/s
                    (evaluation time excluded), and then stops train(). The eager phases also time one
                    evaluation (the script's own evaluate, as train calls it): the share of a default run that
                    goes to evaluation is eval_episodes x (seconds per episode) against eval_every / SPS.
  regulator_1d ...  regulator_1d, ac, a2c, alphazero with short budgets: train() with --no-cuda, then with --cuda
  alphazero         (the CUDA context made first), metrics["charts/SPS"] of each: does the GPU help small networks?
  tests             pytest tests/test_gpu.py (with pytest-xdist's -n 8 where there is a GPU)

The JSON goes to --json, else $OUT/gpu.json when $OUT is set, else benchmarks/results/gpu.json (--dry-run: a
temporary folder); the markdown table is printed and written beside it (.md).
"""

import argparse
import dataclasses
import glob
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEELS = os.path.join(ROOT, "benchmarks", "gpu_wheels")
SITE = []  # where the wheels were unpacked, when pip could not install them: put on the phases' PYTHONPATH
OFFPOLICY = [(script, mode) for script in ("sac", "td3") for mode in ("eager", "cudagraphs", "compile")]
SMALL = ("regulator_1d", "ac", "a2c", "alphazero")

# per phase: (time limit in seconds, the least it may be cut to); the GPU run's limits add up to more than the
# budget: a phase that ends early leaves its time to the later ones, and a phase never eats the later ones' least
LIMITS = {"install": (60, 20), "info": (40, 15), "offpolicy/eager": (40, 25), "offpolicy/cudagraphs": (100, 50),
          "offpolicy/compile": (90, 50), "small": (35, 15), "tests": (150, 75)}
DRY_LIMITS = {"install": (30, 5), "info": (30, 10), "offpolicy/eager": (40, 20), "offpolicy/cudagraphs": (40, 20),
              "offpolicy/compile": (40, 20), "small": (40, 15), "tests": (60, 30)}

# the GPU run's budgets, and the dry run's tiny ones
# warmup: learning steps counted as the compile warm-up (td3's actor first compiles at its second update)
OFFPOLICY_SETTINGS = {"gpu": dict(learning_starts=5_000, warmup=50, steady_s=6.0, eval_after=200, eval_episodes=2),
                      "dry": dict(learning_starts=200, warmup=10, steady_s=1.0, eval_after=5, eval_episodes=1)}
SMALL_SETTINGS = {
    "gpu": {"regulator_1d": dict(total_timesteps=32_000, eval_every=32_000),
            "ac": dict(total_timesteps=32_000, eval_every=32_000, eval_episodes=1),
            "a2c": dict(total_timesteps=25_600, eval_every=25_600, eval_episodes=1),
            "alphazero": dict(game="tictactoe", total_games=256, eval_every=256, eval_games=2, rollouts=8)},
    "dry": {"regulator_1d": dict(total_timesteps=3_200, eval_every=3_200),
            "ac": dict(total_timesteps=1_600, eval_every=1_600, eval_episodes=1),
            "a2c": dict(total_timesteps=1_600, eval_every=1_600, eval_episodes=1),
            "alphazero": dict(game="tictactoe", total_games=32, num_envs=16, simulations=8, eval_every=32,
                              eval_games=2, rollouts=4)}}
# the torch APIs of the scripts that are younger than some torch releases: `info` records which this torch has
PROBES = ("torch.compiler.cudagraph_mark_step_begin", "torch._foreach_lerp_",
          "torch._functorch.config.activation_memory_budget", "torch.use_deterministic_algorithms")


class Stop(BaseException):
    """Raised from the env step hook to end train() once the phase has its figures (not an Exception: a script's
    own `except Exception` must not swallow it)."""


def write_json(path: str, obj: dict):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(path + ".tmp", path)


# ---- the phases' processes ---------------------------------------------------------------------------------------
def child_info(result: dict, save, dry: bool):
    import numpy as np
    import torch

    result |= {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
               "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
               "cpu_count": os.cpu_count()}
    with open("/proc/cpuinfo") as f:
        result["cpu"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        result |= {"gpu": torch.cuda.get_device_name(0), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                   "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
        if shutil.which("nvidia-smi"):
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm", "--format=csv"],
                                 capture_output=True, text=True, timeout=20)
            result["nvidia_smi"] = smi.stdout.strip()
    for name in ("gymnasium", "mujoco", "tyro", "pytest", "pytest-xdist", "triton", "tensorboard"):
        try:
            result.setdefault("packages", {})[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            result.setdefault("packages", {})[name] = None
    import torch._functorch.config  # noqa: F401  (for the probe)

    def has(dotted: str) -> bool:
        obj = torch
        for part in dotted.split(".")[1:]:
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
        return True

    result["torch_has"] = {dotted: has(dotted) for dotted in PROBES}
    try:  # fused Adam on the CPU arrived in torch 2.4; the scripts use fused=True everywhere
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = torch.ones(2)
        torch.optim.Adam([p], fused=True).step()
        result["torch_has"]["fused Adam on the CPU"] = True
    except Exception as error:  # noqa: BLE001
        result["torch_has"]["fused Adam on the CPU"] = f"{type(error).__name__}: {error}"
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        result["torch_has"]["use_deterministic_algorithms(warn_only=)"] = True
    except TypeError as error:
        result["torch_has"]["use_deterministic_algorithms(warn_only=)"] = str(error)
    if torch.cuda.is_available():  # --torch-deterministic's cost on CUDA: without CUBLAS_WORKSPACE_CONFIG=:4096:8,
        result["cublas_mm_us"] = cublas_warning_cost(torch)  # every cuBLAS call raises a (warn_only) warning


def cublas_warning_cost(torch) -> dict:
    """Microseconds per 256x256 matrix product on the GPU (launch-bound, as in the scripts' updates) with
    deterministic algorithms off, and on with warn_only, Python's default warning filter, as a user's run has."""
    import warnings

    a = torch.randn(256, 256, device="cuda")

    def per_call(n: int = 3000) -> float:
        for _ in range(100):
            a @ a
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            a @ a
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / n * 1e6

    torch.use_deterministic_algorithms(False)
    off = per_call()
    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        on = per_call()
    torch.use_deterministic_algorithms(False)
    return {"deterministic_off": off, "deterministic_warn_only": on,
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def child_offpolicy(result: dict, save, dry: bool, script: str, mode: str, limit: float):
    """train() on HalfCheetah-v4 with a hook on the training env's step: times every step, stops train()."""
    t0 = time.perf_counter()
    import gymnasium as gym
    import torch

    settings = OFFPOLICY_SETTINGS["dry" if dry else "gpu"]
    module = importlib.import_module(script)
    learning_starts, steady_s, warmup = settings["learning_starts"], settings["steady_s"], settings["warmup"]
    overrides = dict(env_id="HalfCheetah-v4", learning_starts=learning_starts, total_timesteps=1_000_000,
                     eval_every=1_000_000, compile=mode != "eager", cudagraphs=mode == "cudagraphs")  # never reached
    if mode == "eager":  # one evaluation, eval_after steps into the learning phase
        overrides |= dict(eval_every=learning_starts + settings["eval_after"], eval_episodes=settings["eval_episodes"])
    if dry:
        overrides["buffer_size"] = 100_000
    if "checkpoint_every" in {field.name for field in dataclasses.fields(module.Args)}:
        overrides["checkpoint_every"] = 0  # no periodic checkpoint inside the timed steps (0: only at the end)
    defaults = module.Args()  # before the hooks: the figures are scaled to the default evaluation settings
    result |= {"env_id": "HalfCheetah-v4", "overrides": overrides, "cuda": torch.cuda.is_available(),
               "default_eval_every": defaults.eval_every, "default_eval_episodes": defaults.eval_episodes,
               "warmup_steps": warmup, "torch_compile_disabled": os.environ.get("TORCH_COMPILE_DISABLE") == "1",
               "status": "starting train()"}
    state = {"steps": 0, "eval_s": 0.0, "in_eval": False}
    marks = {}

    try:  # imported now: an import inside the timed steps would count as their time
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001
        counters = None

    def graphs() -> int | None:  # graphs compiled so far: a change while timing is a recompile
        return None if counters is None else int(counters["stats"]["unique_graphs"])

    def on_step():
        state["steps"] += 1
        n, now = state["steps"], time.perf_counter()
        if n == 1:
            marks["first"] = now
        elif n == learning_starts + 1:  # the first learning step's env step: its updates come right after it
            marks["learning"], marks["eval_at_learning"] = now, state["eval_s"]
            result["random_phase_sps"] = learning_starts / (now - marks["first"])
            result["status"] = "learning (compiling)" if mode != "eager" else "learning"
            save()
        elif n == learning_starts + 1 + warmup:
            marks["warm"], marks["eval_at_warm"] = now, state["eval_s"]
            result["warmup_s"] = now - marks["learning"] - (state["eval_s"] - marks["eval_at_learning"])
            result["graphs_after_warmup"] = graphs()
            result["status"] = "measuring the steady speed"
            save()
        elif n > learning_starts + 1 + warmup:
            steady = now - marks["warm"] - (state["eval_s"] - marks["eval_at_warm"])
            out_of_time = now - t0 > limit - 5
            if steady >= steady_s or out_of_time:
                steps = n - learning_starts - 1 - warmup
                sps, cut = steps / steady, " (steady window cut short by the time limit)" if out_of_time else ""
                result.update({"learning_sps": sps, "steady_steps": steps, "steady_s": steady,
                               "warmup_cost_s": result["warmup_s"] - warmup / sps, "graphs_at_end": graphs(),
                               "status": "ok" + cut})
                if torch.cuda.is_available():
                    result["gpu_peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
                raise Stop

    for cls in (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv):
        def step(self, actions, _step=cls.step):
            out = _step(self, actions)
            if not state["in_eval"]:
                on_step()
            return out
        cls.step = step
    evaluate = module.evaluate

    def timed_evaluate(*args, **kwargs):
        state["in_eval"], start = True, time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            seconds = time.perf_counter() - start
            state["eval_s"] += seconds
            state["in_eval"] = False
            result.setdefault("evaluations", []).append({"seconds": seconds, "at_step": state["steps"]})

    module.evaluate = timed_evaluate
    try:
        module.train(module.Args(**overrides))
        result["status"] = "error: train() ended before the kit stopped it"
    except Stop:
        pass
    if mode == "eager" and result.get("evaluations") and "learning_sps" in result:
        per_episode = result["evaluations"][0]["seconds"] / settings["eval_episodes"]
        eval_s = per_episode * result["default_eval_episodes"]
        train_s = result["default_eval_every"] / result["learning_sps"]
        result |= {"eval_s_per_episode": per_episode, "eval_share_at_defaults": eval_s / (eval_s + train_s)}


def child_small(result: dict, save, dry: bool, script: str):
    import torch

    module = importlib.import_module(script)
    overrides = SMALL_SETTINGS["dry" if dry else "gpu"][script]
    result |= {"overrides": overrides, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():  # the CUDA context first, so that --cuda's run does not pay for it
        torch.zeros(1, device="cuda").sum().item()
    for device in ("cpu", "cuda"):
        start = time.perf_counter()
        try:
            metrics = module.train(module.Args(cuda=device == "cuda", **overrides))
            result[device] = {"sps": float(metrics["charts/SPS"]), "wall_s": time.perf_counter() - start,
                              "global_step": metrics.get("global_step")}
        except (Exception, SystemExit) as error:  # noqa: BLE001
            result[device] = {"error": f"{type(error).__name__}: {error}"[-2000:]}
        save()
    if "sps" in result["cpu"] and "sps" in result["cuda"]:
        result["cuda_over_cpu"] = result["cuda"]["sps"] / result["cpu"]["sps"]
    result["status"] = "ok" if all("sps" in result[d] for d in ("cpu", "cuda")) else "error: see cpu/cuda"


def child_main(cli):
    """One phase, in this process: its figures go to cli.result (written again at every milestone)."""
    sys.path.insert(0, ROOT)  # the scripts; benchmarks/ would shadow alphazero.py
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.join(ROOT, "benchmarks")]
    result = {"status": "started"}

    def save():
        write_json(cli.result, result)

    save()
    kind, *rest = cli.child.split(":")
    try:
        if kind == "info":
            child_info(result, save, cli.dry_run)
            result["status"] = "ok"
        elif kind == "offpolicy":
            child_offpolicy(result, save, cli.dry_run, *rest, cli.limit)
        else:
            child_small(result, save, cli.dry_run, *rest)
    except (Exception, SystemExit) as error:  # noqa: BLE001  (SystemExit: an Args check that failed)
        result["status"] = f"error: {type(error).__name__}: {error}"[-3000:]
        import traceback
        result["traceback"] = traceback.format_exc()[-3000:]
    save()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not waiting for TensorBoard's writer threads or vector env workers of a train() stopped early


# ---- the parent --------------------------------------------------------------------------------------------------
def run_process(cmd: list[str], limit: float, env: dict, cwd: str) -> tuple[int | None, str, float]:
    """(exit code or None on time-out, the output's tail, seconds). The process gets its own group, so that a
    time-out ends its workers too (pytest-xdist's, inductor's compile workers)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, text=True,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            code = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the phase's leftovers, if any
        except ProcessLookupError:
            pass
        proc.wait()
        log.seek(0)
        return code, log.read()[-4000:], time.perf_counter() - start


def phase_env(cache: str) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg",
               SDL_VIDEODRIVER="dummy", TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
               TRITON_CACHE_DIR=os.path.join(cache, "triton"), PYTHONPATH=os.pathsep.join([ROOT, *SITE]))
    env.pop("OUT", None)  # a phase writes nowhere but its result file
    return env


def run_child(name: str, spec: str, limit: float, dry: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu_kit_") as tmp:  # runs/ and the compile caches: cold, thrown away
        path = os.path.join(tmp, "result.json")
        env = phase_env(tmp)
        if dry and spec.startswith("offpolicy") and spec.endswith(":compile"):
            env["TORCH_COMPILE_DISABLE"] = "1"  # the flow of --compile without its CPU minutes of compiling
        cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--result", path, "--limit", str(limit)]
        code, tail, seconds = run_process(cmd + ["--dry-run"] * dry, limit, env, tmp)
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, json.JSONDecodeError):
            result = {"status": "error: the phase wrote no result"}
    result["seconds"], result["limit_s"] = seconds, limit
    if code is None:
        result["status"] = f"error: timed out after {limit:.0f} s (last: {result.get('status')})"
    elif code != 0 and not result["status"].startswith("error"):
        result["status"] = f"error: exit code {code}"
    if not result["status"].startswith("ok"):
        result["output_tail"] = tail[-2500:]
    return result


def pins() -> dict[str, str]:
    found = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^\s;#]+)", line)
            if match and match.group(1).lower() in ("gymnasium", "mujoco", "tyro", "pytest-xdist"):
                found[match.group(1).lower()] = match.group(3)
    return found


def phase_install(limit: float) -> dict:
    wanted = pins()
    specs = [f"{'gymnasium[mujoco]' if name == 'gymnasium' else name}=={version}" for name, version in wanted.items()]
    have = {}
    for name in wanted:
        try:
            have[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have[name] = None
    result = {"wanted": specs, "installed_before": have}
    if all(have[name] == version for name, version in wanted.items()):
        return result | {"status": "ok (installed already)", "seconds": 0.0}
    if not glob.glob(os.path.join(WHEELS, "*.whl")):
        return result | {"status": f"error: no wheels in {WHEELS}: run bash benchmarks/gpu_prepare.sh where there "
                                   "is a network, and carry benchmarks/gpu_wheels to this machine"}
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", WHEELS, *specs]
    code, tail, seconds = run_process(cmd, limit, dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"), ROOT)
    if code and "externally-managed" in tail:  # a system Python under PEP 668
        code, tail, more = run_process(cmd + ["--break-system-packages"], limit - seconds, dict(os.environ), ROOT)
        seconds += more
    result["seconds"] = seconds
    if code == 0:
        return result | {"status": "ok"}
    result["pip_error"] = ("timed out" if code is None else f"exit code {code}") + ": " + tail[-2500:]
    # no pip, or pip refused: the wheels unpacked into a folder on the phases' PYTHONPATH (none has .data files)
    site = tempfile.mkdtemp(prefix="gpu_kit_site_")
    for wheel in sorted(glob.glob(os.path.join(WHEELS, "*.whl"))):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    SITE.append(site)
    return result | {"status": "ok (pip failed: the wheels unpacked onto PYTHONPATH)", "site": site}


def phase_tests(limit: float, dry: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu_kit_") as tmp:
        cmd = [sys.executable, "-m", "pytest", os.path.join(ROOT, "tests", "test_gpu.py"), "-q", "-rfEs",
               "-o", "addopts=", "-m", "not slow", "-p", "no:cacheprovider", "--rootdir", ROOT]
        if not dry and importlib.util.find_spec("xdist"):
            cmd += ["-n", "8"]  # the compiling tests side by side: the machine has 16 cores
        code, tail, seconds = run_process(cmd, limit, phase_env(tmp), ROOT)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", tail)}
    result = {"seconds": seconds, "limit_s": limit, "counts": counts, "command": " ".join(cmd[1:])}
    if code is None:
        status = f"error: timed out after {limit:.0f} s"
    elif code == 0 or (code == 5 and dry):  # 5: nothing collected
        status = "ok"
    else:
        status = f"error: pytest exit code {code}"
    result["status"] = status
    if status != "ok" or counts.get("failed") or counts.get("errors") or counts.get("error"):
        result["output_tail"] = tail[-3000:]
    return result


def plan(dry: bool) -> list[tuple[str, str, str]]:
    """(phase name, child spec or "", its LIMITS key), in the order they run."""
    phases = [("install", "", "install"), ("info", "info", "info")]
    phases += [(f"{s}/{m}", f"offpolicy:{s}:{m}", f"offpolicy/{m}") for s, m in OFFPOLICY]
    phases += [(s, f"small:{s}", "small") for s in SMALL]
    return phases + [("tests", "", "tests")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="a CPU, tiny budgets, no install (about a minute)")
    parser.add_argument("--json", help="where the JSON goes (the markdown table goes beside it, .md)")
    parser.add_argument("--budget", type=float, help="seconds for the whole kit (default 465; --dry-run 240)")
    parser.add_argument("--only", help="comma-separated phases to run (install and info always run), e.g. "
                        "sac/cudagraphs,tests; names: " + ", ".join(p[0] for p in plan(False)[2:]))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.child:
        child_main(cli)
    start, dry = time.perf_counter(), cli.dry_run
    budget = cli.budget or (240.0 if dry else 465.0)
    if cli.json:
        path = cli.json
    elif os.environ.get("OUT"):
        path = os.path.join(os.environ["OUT"], "gpu_dry_run.json" if dry else "gpu.json")
    elif dry:
        path = os.path.join(tempfile.mkdtemp(prefix="gpu_kit_"), "gpu_dry_run.json")
    else:
        path = os.path.join(ROOT, "benchmarks", "results", "gpu.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    phases = [p for p in plan(dry) if not cli.only or p[0] in ["install", "info", *cli.only.split(",")]]
    limits = DRY_LIMITS if dry else LIMITS
    report = {"kit": {"dry_run": dry, "budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                      "python": platform.python_version(), "git": git_head()}, "phases": {}}
    for k, (name, spec, key) in enumerate(phases):
        left = budget - (time.perf_counter() - start)
        reserve = sum(limits[later][1] for _, _, later in phases[k + 1:])
        limit = min(limits[key][0], max(left - reserve, limits[key][1]), left)
        print(f"[{time.perf_counter() - start:5.0f} s] {name} (limit {limit:.0f} s) ...", flush=True)
        if name == "install" and dry:
            result = {"status": "skipped (--dry-run)"}
        elif limit < 5:
            result = {"status": f"error: not run: the kit's budget of {budget:.0f} s ran out"}
        elif name == "install":
            result = phase_install(limit)
        elif name == "tests":
            result = phase_tests(limit, dry)
        else:
            result = run_child(name, spec, limit, dry)
        report["phases"][name] = result
        report["kit"]["wall_s"] = time.perf_counter() - start
        write_json(path, report)
        print(f"[{time.perf_counter() - start:5.0f} s] {name}: {result['status']}", flush=True)
        if name == "info" and not dry and result.get("cuda_available") is False:
            print("warning: no CUDA device here: every figure below is the CPU's", flush=True)
    for script in ("sac", "td3"):  # evaluation runs the same eager actor whatever the mode: its time, each mode's speed
        eager = report["phases"].get(f"{script}/eager", {})
        for mode in ("compile", "cudagraphs"):
            r = report["phases"].get(f"{script}/{mode}", {})
            if "eval_s_per_episode" in eager and "learning_sps" in r:
                eval_s = eager["eval_s_per_episode"] * eager["default_eval_episodes"]
                r["eval_share_at_defaults"] = eval_s / (eval_s + eager["default_eval_every"] / r["learning_sps"])
                r["eval_share_from"] = f"{script}/eager's evaluation, timed, with this phase's learning speed"
    table = markdown(report)
    report["markdown"] = table
    write_json(path, report)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(table + "\n")
    print("\n" + table)
    print(f"\nJSON: {path}\nkit: {report['kit']['wall_s']:.0f} s in all")


def git_head() -> str | None:
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fmt(value, pattern: str = "{:.0f}") -> str:
    return "-" if value is None else pattern.format(value)


def markdown(report: dict) -> str:
    phases, kit = report["phases"], report["kit"]
    info = phases.get("info", {})
    device = info.get("gpu") or f"no GPU: {info.get('cpu', '?')}"
    warmup = OFFPOLICY_SETTINGS["dry" if kit["dry_run"] else "gpu"]["warmup"]
    lines = [f"GPU kit{' (DRY RUN: a CPU, tiny budgets; not figures to publish)' if kit['dry_run'] else ''}: "
             f"{device}, torch {info.get('torch', '?')}, Python {info.get('python', '?')}, "
             f"git {kit.get('git')}, {kit['started']}, {kit.get('wall_s', 0):.0f} s in all", "",
             f"| script | mode | learning-phase steps/s | first {warmup} learning steps (compile cost) "
             "| random-phase steps/s | evaluation's share of a default run |", "|-|-|-|-|-|-|"]
    flags = {"eager": "eager", "compile": "--compile", "cudagraphs": "--compile --cudagraphs"}
    for script, mode in OFFPOLICY:
        r = phases.get(f"{script}/{mode}")
        if r is None:
            continue
        if not r["status"].startswith("ok"):
            lines.append(f"| {script} | {flags[mode]} | {short(r['status'])} | | | |")
            continue
        share = r.get("eval_share_at_defaults")
        notes = " (recompiled while timed)" * (r.get("graphs_at_end") != r.get("graphs_after_warmup"))
        notes += " (cut short)" * ("cut short" in r["status"])
        per_episode = f" ({r['eval_s_per_episode']:.2f} s/episode)" if "eval_s_per_episode" in r else ""
        lines.append(f"| {script} | {flags[mode]} | {fmt(r.get('learning_sps'))}{notes} | "
                     f"{fmt(r.get('warmup_s'), '{:.1f} s')} ({fmt(r.get('warmup_cost_s'), '{:.1f} s')}) | "
                     f"{fmt(r.get('random_phase_sps'))} | "
                     f"{fmt(None if share is None else 100 * share, '{:.0f}%')}{per_episode} |")
    lines += ["", "| script | --no-cuda SPS | --cuda SPS | --cuda / --no-cuda |", "|-|-|-|-|"]
    for script in SMALL:
        r = phases.get(script)
        if r is None:
            continue
        cells = []
        for device in ("cpu", "cuda"):
            d = r.get(device, {})
            cells.append(fmt(d.get("sps")) if "sps" in d else short(d.get("error") or r["status"]))
        unit = " (positions searched/s)" if script == "alphazero" else ""
        lines.append(f"| {script}{unit} | {cells[0]} | {cells[1]} | {fmt(r.get('cuda_over_cpu'), 'x{:.2f}')} |")
    tests = phases.get("tests")
    if tests:
        counts = ", ".join(f"{n} {w}" for w, n in tests.get("counts", {}).items()) or "no counts"
        lines += ["", f"tests/test_gpu.py: {counts} in {fmt(tests.get('seconds'))} s ({short(tests['status'])})"]
    mm = info.get("cublas_mm_us")
    if mm:
        lines.append(f"a 256x256 cuBLAS product: {mm['deterministic_off']:.1f} us; with --torch-deterministic "
                     f"(warn_only, CUBLAS_WORKSPACE_CONFIG={mm['CUBLAS_WORKSPACE_CONFIG']}): "
                     f"{mm['deterministic_warn_only']:.1f} us")
    sac = phases.get("sac/cudagraphs", {}).get("learning_sps")
    if sac is not None:
        lines.append(f"sac --compile --cudagraphs: {sac:.0f} learning-phase steps/s against issue #6's target of 725")
    return "\n".join(lines)


def short(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")[:100]


if __name__ == "__main__":
    main()
