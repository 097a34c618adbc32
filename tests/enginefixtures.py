"""Tiny real training runs on the synthetic set, small enough for the test suite (seconds each)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

TINY = [
    "run.epochs=2", "run.iterations=3", "run.eval_every=1", "run.log_every=1",
    "data.synthetic_ids=24", "data.synthetic_test_ids=10", "data.synthetic_cams=3", "data.synthetic_images=3",
    "data.height=32", "data.width=16", "data.num_ids=4", "data.num_instances=4", "data.eval_batch=64", "data.pad=2",
    "cluster.k1=6", "cluster.k2=2", "cluster.min_samples=2", "cluster.eps=0.6", "oae.rho=2.0",
]


def tiny_config(*extra: str, epochs: int | None = None):
    from oaecmlr.config import load_config

    sets = TINY + list(extra) + ([f"run.epochs={epochs}"] if epochs is not None else [])
    return load_config("demo", sets=sets)


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `oaecmlr ARGS` in a fresh interpreter, as a user would."""
    return subprocess.run([sys.executable, "-m", "oaecmlr.cli.app", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def main_in_process(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`oaecmlr ARGS` through the real entry point, in this process: (exit code, stdout, stderr)."""
    import pytest

    from oaecmlr.cli.app import main as entry

    monkeypatch.setattr(sys, "argv", ["oaecmlr", *map(str, args)])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        entry()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_error_line(err: str) -> str:
    """The one `error:` line of a command's stderr, which holds no traceback and no terminal escape."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err and "\x1b" not in err, err
    return errors[0]


def tiny_sets() -> list[str]:
    out = []
    for item in TINY:
        out += ["--set", item]
    return out


def events_of(run_path: Path) -> list[dict]:
    """A run's events as their JSON objects (each one checked against the schema on the way)."""
    from oaecmlr.store.events import read_events
    from oaecmlr.store.schema import to_record

    return [to_record(e) for e in read_events(Path(run_path) / "events.jsonl")]


def wait_for(predicate, timeout=900.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
