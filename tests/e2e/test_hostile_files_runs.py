"""Hostile conditions met by real (tiny) training runs: the largest seed."""

from __future__ import annotations


def test_the_largest_seed_trains(tmp_path):
    from enginefixtures import events_of, tiny_config

    from oaecmlr.engine.launch import start_run

    config = tiny_config("run.epochs=1", f"run.seed={2**64 - 1}")
    start_run(config, "seed", str(tmp_path), preset="demo")
    events = events_of(tmp_path / "seed")
    assert events[0]["seed"] == 2**64 - 1 and events[-1]["event"] == "end"
