"""The GPU checks of the project in one run, for a session lent a GPU machine (`device` tool):
each step with its own time cap, 470 s in all, unbuffered, so a step stopped by its cap keeps what
it printed. Started by `benchmarks/device_check.sh`, which sets the environment.

    bash benchmarks/device_check.sh             # on the GPU machine (run's timeout_s: 520 or more)
    bash benchmarks/device_check.sh --dry-run   # anywhere: print every step, check each one's code imports

Output: everything in $OUT/device_check.log; each JSON line a step prints, with the step's name,
in $OUT/results.jsonl (2 files: the device tool returns at most 8).

The dry run prints each step's command and cap, and checks what can be checked without a GPU:
the benchmark scripts import and accept the step's arguments, `oaecmlr` accepts the step's
command line, inline Python compiles, pytest collects the CUDA tests.
tests/e2e/test_device_check_dry_run.py runs it (and tests/unit/test_device_check.py checks its
steps), so the script cannot rot while no GPU is lent.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_CAP_S = 470
RUNS = "/tmp/oaecmlr-device-check"  # the end-to-end run's folder (not $OUT: few files come back)
PY = sys.executable

# After `run demo --gpus 0 --epochs 2` and `resume --epochs 3`: what the run says about the CUDA path.
E2E_CHECK = f"""
import json, sys, torch
sys.path.insert(0, "tests")
from enginefixtures import events_of
from pathlib import Path
run = Path("{RUNS}/device-demo")
events = events_of(run)
start, resume = events[0], next(e for e in events if e["event"] == "resume")
ends = [e["epoch"] for e in events if e["event"] == "epoch_end"]
state = torch.load(run / "last.pt", weights_only=True, map_location="cpu")
print("e2e:", json.dumps({{"device": start["device"], "image_cache": start["data"].get("image_cache"),
      "provenance": {{k: start["provenance"].get(k) for k in ("gpu", "capability", "bf16", "cudnn_benchmark", "gpus")}},
      "resumed_from": resume["from_epoch"], "resume_gpus": resume["gpus"], "epochs": ends, "last": events[-1]["event"],
      "cuda_rng_in_checkpoint": "cuda" in state["rng"]}}))
assert start["device"].startswith("cuda:") and ends == [1, 2, 3] and events[-1]["event"] == "end"
assert "cuda" in state["rng"] and start["provenance"].get("gpus"), "CUDA RNG state and GPU identity recorded"
"""

NVML_LINE = """
import importlib.util, torch
spec = importlib.util.spec_from_file_location("gpu", "tui/gpu.py")
gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu)
p = torch.cuda.get_device_properties(0)
run = ({"device": "cuda:0", "uuid": "GPU-" + str(p.uuid)},)
print("dashboard GPU lines (this process's cuda:0 as the run's):", *gpu.gpu_lines(run), sep="\\n  ")
"""


@dataclass(frozen=True)
class Step:
    name: str
    cap_s: int
    command: tuple[str, ...]
    what: str


def steps() -> list[Step]:
    bench = "benchmarks/"
    return [
        Step("gpu", 10, ("nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv"),
             "the GPU and its driver"),
        Step("cuda-tests", 40, (PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit/test_jaccard.py",
                                "tests/unit/test_augment.py", "tests/unit/test_placement.py", "tests/unit/test_cuda_path.py",
                                "-k", "cuda"),
             "CUDA results against the CPU's, the image-cache placement, the CUDA path's CPU checks"),
        Step("e2e-run", 45, (PY, "-m", "oaecmlr", "run", "demo", "--gpus", "0", "--epochs", "2", "--name",
                             "device-demo", "--runs-dir", RUNS),
             "a real run on the GPU: placement, events, CUDA RNG in the checkpoint"),
        Step("e2e-resume", 35, (PY, "-m", "oaecmlr", "resume", "device-demo", "--epochs", "3", "--runs-dir", RUNS),
             "resume it to a third epoch"),
        Step("e2e-check", 10, (PY, "-c", E2E_CHECK), "what the run's events and checkpoint say"),
        Step("pseudo-labels", 35, (PY, bench + "bench_pseudo_labels.py", "--device", "cuda", "--sizes", "12936,32621",
                                   "--dense-max", "0"),
             "kNN + Jaccard + DBSCAN on the GPU (issue 2 target: N = 32,621 under 1 s)"),
        Step("train-bf16", 75, (PY, bench + "bench_train.py", "--full", "--ddp", "--iterations", "40"),
             "ResNet-50 throughput in bf16 (train.amp=true) against pure compute, and the NCCL path at world size 1"),
        Step("train-fp32", 60, (PY, bench + "bench_train.py", "--full", "--no-amp", "--iterations", "40",
                                "--sync-count", "5"),
             "the same at the default precision (train.amp=false), and the host syncs of 5 iterations"),
        Step("msmt", 110, (PY, bench + "bench_train.py", "--full", "--msmt", "--iterations", "20"),
             "MSMT17 sizes: caches, peak memory (allocated and reserved), one evaluate() of 11,659 x 82,161"),
        Step("batchnorm", 35, (PY, bench + "bench_batchnorm.py", "--device", "cuda", "--arch", "resnet50", "--size",
                               "256x128", "--repeats", "5"),
             "BatchNorm groups of 64 against whole-batch BatchNorm, ResNet-50 at 256 x 128"),
        Step("nvml", 10, (PY, "-c", NVML_LINE), "the dashboard's NVML line"),
    ]


def run_step(step: Step, cap_s: float, log, results) -> tuple[int | None, float]:
    """Run one step under its cap, its output streamed to the console and the log as it comes;
    JSON lines also go to results. Returns (exit code, None when stopped by the cap; seconds)."""
    started = time.monotonic()
    try:
        process = subprocess.Popen(step.command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, start_new_session=True)
    except OSError as exc:
        print(f"  cannot start: {exc}", flush=True)
        log.write(f"  cannot start: {exc}\n")
        return 127, 0.0

    def relay() -> None:
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    results.write(json.dumps({"step": step.name, **json.loads(line)}) + "\n")
                    results.flush()

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    try:
        code = process.wait(timeout=cap_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the step and everything it started
        process.wait()
        code = None
    reader.join(timeout=5)
    return code, time.monotonic() - started


def dry_check(step: Step) -> str:
    """What can be checked of a step without a GPU; raises when the step's code has rotted."""
    command = step.command
    if command[0] != PY:
        return "not run (needs the GPU machine)"
    if command[1] == "-c":
        compile(command[2], f"<{step.name}>", "exec")
        return "compiles"
    if command[1:3] == ("-m", "oaecmlr"):
        import typer

        from oaecmlr.cli.app import app

        group = typer.main.get_command(app)
        context = group.make_context("oaecmlr", list(command[3:]), resilient_parsing=True)
        subcommand = group.get_command(context, command[3])
        subcommand.make_context(command[3], list(command[4:]))  # raises on an unknown option or a missing argument
        return "oaecmlr accepts it"
    if command[1:3] == ("-m", "pytest"):
        import pytest

        args = [a for a in command[3:] if a != "-q"]
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            code = pytest.main(["--collect-only", "-q", *args])
        if code != 0:
            raise RuntimeError(f"pytest could not collect {shlex.join(args)} (exit {code})")
        return "pytest collects it"
    script = ROOT / command[1]
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    module.arguments().parse_args(list(command[2:]))
    return "imports, accepts its arguments"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="print the steps and check their code; run nothing")
    args = parser.parse_args(argv)
    plan = steps()
    total = sum(s.cap_s for s in plan)
    if total > TOTAL_CAP_S:
        raise SystemExit(f"the steps' caps add up to {total} s, above the {TOTAL_CAP_S} s of the whole check")
    if args.dry_run:
        sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
        failed = 0
        for step in plan:
            print(f"[{step.name}] cap {step.cap_s} s: {step.what}\n  $ {shlex.join(step.command)}", flush=True)
            try:
                print(f"  dry run: {dry_check(step)}", flush=True)
            except BaseException as exc:  # SystemExit from argparse included
                failed += 1
                print(f"  dry run: FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"dry run: {len(plan)} steps, caps {total} s of {TOTAL_CAP_S} s, {failed} failed", flush=True)
        return 1 if failed else 0
    os.environ["PYTHONUNBUFFERED"] = "1"  # every step's prints reach the log as they happen
    out = Path(os.environ.get("OUT") or "/tmp/out")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["rm", "-rf", RUNS], check=False)
    deadline = time.monotonic() + TOTAL_CAP_S
    summary = []
    with open(out / "device_check.log", "a") as log, open(out / "results.jsonl", "a") as results:
        for step in plan:
            left = deadline - time.monotonic()
            cap = min(step.cap_s, left)
            header = f"\n=== [{step.name}] cap {cap:.0f} s: {step.what}\n$ {shlex.join(step.command)}\n"
            print(header, end="", flush=True)
            log.write(header)
            if left < 3:
                summary.append(f"{step.name}: skipped (the {TOTAL_CAP_S} s are spent)")
                continue
            code, seconds = run_step(step, cap, log, results)
            state = f"stopped by its {cap:.0f} s cap" if code is None else f"exit {code}"
            summary.append(f"{step.name}: {state} after {seconds:.1f} s")
        footer = "\n=== summary\n" + "\n".join(summary) + "\n"
        print(footer, end="", flush=True)
        log.write(footer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
