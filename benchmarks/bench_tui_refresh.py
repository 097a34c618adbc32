"""How long the dashboard takes to read a runs folder, and to refresh it after a few new events.

50 runs of ~10,000 events each. Measures, with the dashboard's own reader (`RunTracker`: one
EventTail per run, only new bytes, an incremental fold):

  (a) the first poll: read and fold every events.jsonl from the start;
  (b) a refresh after appending 10 events to every run (median of several rounds);

and the naive refresh measured in the same run: json-parse every file whole (`read_events`), and
`run_summary` of every run (parse + summarize: what a dashboard without tails would do every
tick). Target: (b) < 1 s.

    python benchmarks/bench_tui_refresh.py
    python benchmarks/bench_tui_refresh.py --runs 50 --events 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from oaecmlr_tui.tailer import RunTracker  # noqa: E402
from runfixtures import append_events, make_run  # noqa: E402

from oaecmlr.store.events import read_events  # noqa: E402
from oaecmlr.store.runs import list_runs, run_summary  # noqa: E402


def make_runs(root: Path, runs: int, events: int) -> int:
    """`runs` run folders of about `events` events each (epochs of 196 iterations); returns the total."""
    iterations = 196
    epochs = max(1, round(events / (iterations + 4)))
    for index in range(runs):
        make_run(root, f"run-{index:03d}", state="running" if index % 5 == 0 else "finished", epochs=epochs,
                 iterations=iterations, start_time=1_700_000_000.0 + 60 * index)
    return sum(sum(1 for _ in open(run.events, "rb")) for run in list_runs(root))


def new_events(round_index: int, count: int = 10) -> list[dict]:
    return [{"event": "iter", "time": time.time(), "epoch": 999, "iteration": round_index * count + i + 1,
             "total_iterations": 10_000, "loss": 1.0, "lr": 1e-4, "images_per_s": 100.0} for i in range(count)]


def naive_parse(root: Path) -> int:
    """Every events.jsonl parsed whole, as a dashboard without tails would each tick."""
    return sum(len(read_events(run.events)) for run in list_runs(root))


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_tui_") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        total = make_runs(root, args.runs, args.events)
        size = sum(run.events.stat().st_size for run in list_runs(root))
        print(f"{args.runs} runs, {total:,} events ({total / args.runs:,.0f} per run, {size / 2**20:.1f} MiB), "
              f"written in {time.perf_counter() - started:.1f} s")

        tracker = RunTracker(root)
        initial = timed(tracker.poll)
        assert len(tracker.snapshots()) == args.runs

        refresh, naive, naive_summary = [], [], []
        for round_index in range(args.rounds):
            for run in list_runs(root):
                append_events(run.path, new_events(round_index))
            refresh.append(timed(lambda: tracker.poll() and tracker.snapshots()))
            naive.append(timed(lambda: naive_parse(root)))
            naive_summary.append(timed(lambda: [run_summary(run) for run in list_runs(root)]))
        assert sum(s.events for s in tracker.snapshots()) == total + 10 * args.runs * args.rounds
        idle = timed(tracker.poll)

        r, n, ns = (statistics.median(v) for v in (refresh, naive, naive_summary))
        print(f"(a) initial read, incremental reader:        {initial * 1000:8.1f} ms")
        print(f"(b) refresh after +10 events per run:         {r * 1000:8.1f} ms  (median of {args.rounds}; "
              f"target < 1000 ms: {'met' if r < 1 else 'MISSED'})")
        print(f"    refresh with nothing new:                 {idle * 1000:8.1f} ms")
        print(f"naive refresh, read_events of every file:     {n * 1000:8.1f} ms  ({n / r:,.0f}x the incremental refresh)")
        print(f"naive refresh, run_summary of every run:      {ns * 1000:8.1f} ms  ({ns / r:,.0f}x the incremental refresh)")


if __name__ == "__main__":
    main()
