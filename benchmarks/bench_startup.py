"""How long the watching commands take to first output, beside `python -c "import torch"` measured
in the same run: `oaecmlr --help`, `runs`, `show`, `compare` and the dashboard
(`oaecmlr tui` in a pseudo-terminal: until its first frame, the header, is drawn, and until its runs
table shows the runs). None of them imports torch.
The dashboard is also set beside the floor Textual itself sets: a bare Textual app drawing a
20-row DataTable, measured the same way.

    python benchmarks/bench_startup.py [--repeats 5]

Each command runs `--repeats` times in a fresh interpreter, alternating with the others so that
load from other work hits all of them alike; the median is printed. The runs folder holds 20
fixture runs written with the real event writer.
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from runfixtures import make_run  # noqa: E402


def oaecmlr() -> list[str]:
    found = shutil.which("oaecmlr")
    return [found] if found else [sys.executable, "-m", "oaecmlr.cli.app"]


def first_output_seconds(command: list[str], env: dict) -> float:
    """Seconds from start until the command wrote its first output; the command runs to its end."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    first = process.stdout.read(1)
    elapsed = time.perf_counter() - start
    process.stdout.read()
    process.wait()
    if not first or process.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode})")
    return elapsed


BARE_TEXTUAL_APP = """
from textual.app import App
from textual.widgets import DataTable, Footer, Header

class Bare(App):
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("run", "status")
        for i in range(20):
            table.add_row(f"run-{i:02d}", "finished")

Bare().run()
"""


def dashboard_seconds(command: list[str], env: dict, marker: bytes = b"finished") -> float:
    """Seconds until a dashboard has drawn a run's status in its table, in a 100x30 pseudo-terminal."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                               env={**env, "COLUMNS": "100", "LINES": "30", "TERM": "xterm-256color"},
                               start_new_session=True)
    os.close(slave)
    seen, elapsed = b"", None
    try:
        while time.perf_counter() - start < 60:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
                if marker in seen:
                    elapsed = time.perf_counter() - start
                    break
    finally:
        os.write(master, b"q")
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        os.close(master)
    if elapsed is None:
        raise SystemExit("the dashboard did not draw its runs table within 60 s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as runs:
        for i in range(20):
            make_run(runs, f"run-{i:02d}", sets={"run.seed": i})
        env = {**os.environ, "OAECMLR_RUNS": runs, "COLUMNS": "120"}
        cases = {
            'python -c "import torch"': lambda: first_output_seconds(
                [sys.executable, "-c", "import torch; print(1)"], env),
            "oaecmlr --help": lambda: first_output_seconds([*oaecmlr(), "--help"], env),
            "oaecmlr runs": lambda: first_output_seconds([*oaecmlr(), "runs"], env),
            "oaecmlr show RUN": lambda: first_output_seconds([*oaecmlr(), "show", "run-00"], env),
            "oaecmlr compare A B": lambda: first_output_seconds([*oaecmlr(), "compare", "run-00", "run-01"], env),
            "oaecmlr tui (first frame)": lambda: dashboard_seconds([*oaecmlr(), "tui", "--runs-dir", runs], env,
                                                                   marker=b"oaecmlr"),
            "oaecmlr tui (runs table)": lambda: dashboard_seconds([*oaecmlr(), "tui", "--runs-dir", runs], env),
            "bare Textual app (floor)": lambda: dashboard_seconds([sys.executable, "-c", BARE_TEXTUAL_APP], env),
        }
        times = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, measure in cases.items():
                times[name].append(measure())
    torch_s = statistics.median(times['python -c "import torch"'])
    print(f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.repeats} runs each")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<30} {median:6.2f} s   x{median / torch_s:.2f} of importing torch")


if __name__ == "__main__":
    main()
