"""Hostile conditions met by real (tiny) training runs: the largest seed, torn and corrupt event lines."""

from __future__ import annotations

import json

from enginefixtures import cli, tiny_config

from oaecmlr.engine.launch import start_run


def test_the_largest_seed_trains(tmp_path):
    from enginefixtures import events_of, tiny_config

    from oaecmlr.engine.launch import start_run

    config = tiny_config("run.epochs=1", f"run.seed={2**64 - 1}")
    start_run(config, "seed", str(tmp_path), preset="demo")
    events = events_of(tmp_path / "seed")
    assert events[0]["seed"] == 2**64 - 1 and events[-1]["event"] == "end"


def test_torn_and_corrupt_event_lines_are_skipped_by_readers(tmp_path):
    run = start_run(tiny_config("run.epochs=1"), "torn", str(tmp_path), preset="demo")
    with open(run.events, "a") as f:
        f.write("{not json at all}\n")
        f.write('{"event": "iter", "epoch": 1, "iter')  # a torn last line, as after a crash
    result = cli("show", "torn", "--runs-dir", str(tmp_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["best"]["epoch"] == 1
    assert "skipping a malformed event" in result.stderr and "Traceback" not in result.stderr

