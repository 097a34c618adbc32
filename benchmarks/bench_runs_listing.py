"""How long `oaecmlr runs` takes, and how much memory, on a run whose events.jsonl is large.

`runs` folds each run's events as a stream (`summarize_run(history=False)`: the file is read in
1 MiB chunks, each event folded as it is parsed, only the best and the last evaluation and the last
clustering kept), instead of holding every event and every loss (`summarize_run()`, what `show`
and `compare` need, and what `runs` did before). Both are measured here, each in a fresh process
(peak resident memory is that process's), on the same file, plus `oaecmlr runs --format json`
end to end.

The file: a plausible history (per epoch a cluster event, `--iterations` iter events, an eval,
epoch_end) repeated until it holds `--mb` megabytes: 200 MB is about 1.3 million events.

    python benchmarks/bench_runs_listing.py
    python benchmarks/bench_runs_listing.py --mb 200 --iterations 200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from runfixtures import make_run  # noqa: E402

CHILD = """
import json, resource, sys, time
from pathlib import Path
from oaecmlr.store.runs import RunDir, summarize_run
run = RunDir(Path(sys.argv[1]))
started, cpu = time.perf_counter(), time.process_time()
summary = summarize_run(run, warn=lambda m: None, history=sys.argv[2] == "full")
seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "events": summary.events, "epoch": summary.epoch,
                  "best": summary.best.mAP if summary.best else None}))
"""


def write_history(path: Path, megabytes: float, iterations: int) -> int:
    """Append epochs of events to `path` until it holds `megabytes` MB; returns the events written."""
    lines, epoch, written = 0, 0, path.stat().st_size
    t = 1.8e9
    with open(path, "a") as f:
        while written < megabytes * 1e6:
            epoch += 1
            block = [json.dumps({"event": "epoch_start", "time": t, "epoch": epoch, "lr": 3.5e-4}),
                     json.dumps({"event": "cluster", "time": t, "epoch": epoch, "clusters": 700, "outliers_before": 900,
                                 "outliers_after": 400, "oae_assigned": 500, "timings": {"knn": 1.0, "jaccard": 2.0},
                                 "size_histogram": {"4-7": 300, "8-15": 400}, "purity": 0.8, "nmi": 0.9})]
            block += [json.dumps({"event": "iter", "time": t + i, "epoch": epoch, "iteration": i,
                                  "total_iterations": iterations, "loss": 4.1234, "lr": 3.5e-4, "images_per_s": 812.5})
                      for i in range(1, iterations + 1)]
            block += [json.dumps({"event": "eval", "time": t + iterations, "epoch": epoch, "mAP": 0.5, "rank1": 0.7,
                                  "rank5": 0.8, "rank10": 0.85, "mINP": 0.2, "num_query": 3368, "num_gallery": 15913}),
                      json.dumps({"event": "epoch_end", "time": t + iterations, "epoch": epoch, "seconds": 60.0})]
            text = "\n".join(block) + "\n"
            f.write(text)
            written += len(text)
            lines += len(block)
            t += iterations + 1
    return lines


def measure(run: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(run), mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def measure_cli(root: Path) -> dict:
    command = [sys.executable, "-c", "import resource, sys, time\nfrom oaecmlr.cli.app import main\n"
               "sys.argv = ['oaecmlr', 'runs', '--format', 'json', '--runs-dir', sys.argv[1]]\n"
               "started, cpu = time.perf_counter(), time.process_time()\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
               "print(time.perf_counter() - started, time.process_time() - cpu, "
               "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)", str(root)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds, cpu, peak = out.stderr.strip().splitlines()[-1].split()
    return {"seconds": float(seconds), "cpu": float(cpu), "peak_mb": float(peak), "rows": len(json.loads(out.stdout))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200.0, help="size of events.jsonl in MB")
    parser.add_argument("--iterations", type=int, default=200, help="iter events per epoch")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        run = make_run(root, "big", epochs=1)
        events = write_history(run / "events.jsonl", args.mb, args.iterations)
        size = (run / "events.jsonl").stat().st_size
        print(f"events.jsonl: {size / 1e6:.0f} MB, {events:,} events appended")
        stream, full = measure(run, "stream"), measure(run, "full")
        assert (stream["events"], stream["epoch"], stream["best"]) == (full["events"], full["epoch"], full["best"])
        cli = measure_cli(root)
        for label, m in (("runs' fold (a stream, history=False)", stream), ("full fold (every event kept, as show)", full),
                         ("oaecmlr runs --format json, end to end", cli)):
            print(f"{label:40s} {m['seconds']:6.1f} s wall  {m['cpu']:6.1f} s CPU  peak {m['peak_mb']:6.0f} MB")
        print(f"runs' fold against the full fold: {full['peak_mb'] / stream['peak_mb']:.1f}x less memory, "
              f"{full['cpu'] / stream['cpu']:.1f}x less CPU time")


if __name__ == "__main__":
    main()
