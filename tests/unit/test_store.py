"""The run store: event writing and tailing, run names, status and stale detection."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import types
import typing

import pytest
from runfixtures import stand_in_process

from oaecmlr.errors import RunError
from oaecmlr.store.events import SCHEMA_VERSION, EventTail, EventWriter, read_events
from oaecmlr.store.runs import create_run, live_state, request_stop, run_dir
from oaecmlr.store.schema import (
    KINDS,
    EpochEnd,
    Eval,
    EventError,
    Iter,
    Resume,
    Start,
    Stopped,
    UnknownEvent,
    parse_event,
    to_record,
    type_check,
)
from oaecmlr.store.summary import RunFold


def test_writer_appends_one_flushed_json_object_per_line(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl", clock=iter([100.0, 101.5]).__next__)
    start = writer.write(Start(schema=SCHEMA_VERSION, kind="usl", run="r", dataset="synthetic", epochs=2,
                               iterations=3, arch="resnet18", world_size=1, per_rank_batch=16, global_batch=16,
                               lr=3.5e-4, device="cpu", seed=0))
    writer.write(Iter(epoch=1, iteration=1, total_iterations=3, loss=1.5, lr=3.5e-4))
    lines = (tmp_path / "events.jsonl").read_text().splitlines()  # readable before close: flushed
    records = [json.loads(line) for line in lines]
    assert [(r["event"], r["time"]) for r in records] == [("start", 100.0), ("iter", 101.5)]
    assert records[1] == {"event": "iter", "time": 101.5, "epoch": 1, "iteration": 1, "total_iterations": 3,
                          "loss": 1.5, "lr": 3.5e-4, "images_per_s": 0.0}
    assert start.time == 100.0 and writer.offset() == (tmp_path / "events.jsonl").stat().st_size
    writer.close()
    assert read_events(tmp_path / "events.jsonl")[1] == Iter(time=101.5, epoch=1, iteration=1, total_iterations=3,
                                                             loss=1.5, lr=3.5e-4)


def lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_tail_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "epoch_end", "epoch": 1}\n{"event": "epoch_end", "epoch"')
    tail = EventTail(path)
    assert tail.read_new() == [EpochEnd(epoch=1)]
    assert tail.read_new() == []
    with open(path, "a") as f:
        f.write(': 2}\n{"event": "something_new", "x": 1}\n')
    assert tail.read_new() == [EpochEnd(epoch=2), UnknownEvent(event="something_new", fields={"x": 1})]


@pytest.mark.parametrize("bad", [
    "not json", "[1, 2]", '{"no": "event"}', '{"event": 3}',
    '{"event": "eval", "epoch": "x", "mAP": "bad", "rank1": 0, "rank5": 0, "rank10": 0, "mINP": 0}',
    '{"event": "eval", "epoch": 1, "mAP": "0.5", "rank1": 0, "rank5": 0, "rank10": 0, "mINP": 0}',
    '{"event": "eval", "epoch": 1}', '{"event": "iter", "epoch": true, "iteration": 1, "total_iterations": 2, '
    '"loss": 1, "lr": 1}', '{"event": "cluster", "epoch": 1, "clusters": null, "outliers_before": 1, '
    '"outliers_after": 1, "oae_assigned": 0}', '{"event": "start"}', '{"event": "end", "best": [1]}',
    '{"event": "failure", "error": 5}', '{"event": "epoch_end", "epoch": 1, "time": "noon"}',
])
def test_a_malformed_event_is_skipped_with_a_warning_naming_file_and_line(tmp_path, bad):
    path = tmp_path / "events.jsonl"
    path.write_text(lines({"event": "epoch_end", "epoch": 1}, bad, {"event": "epoch_end", "epoch": 2}))
    seen = []
    events = EventTail(path, warn=seen.append).read_new()
    assert events == [EpochEnd(epoch=1), EpochEnd(epoch=2)]
    assert len(seen) == 1 and f"{path}:2: skipping a malformed event" in seen[0]


def test_known_fields_are_typed_and_unknown_fields_ignored():
    event = parse_event({"event": "eval", "time": 5, "epoch": 2, "mAP": 1, "rank1": 0.5, "rank5": 0.5, "rank10": 0.5,
                         "mINP": 0.25, "from_the_future": {"a": 1}})
    assert event == Eval(time=5.0, epoch=2, mAP=1.0, rank1=0.5, rank5=0.5, rank10=0.5, mINP=0.25)
    assert isinstance(event.mAP, float)  # an integer where a number belongs is that number
    with pytest.raises(EventError, match="epoch must be an integer"):
        parse_event({"event": "eval", "epoch": 1.5, "mAP": 0, "rank1": 0, "rank5": 0, "rank10": 0, "mINP": 0})
    assert to_record(parse_event(to_record(event))) == to_record(event)  # round trip


def fits(value, hint) -> bool:
    """The oracle, read off the hint each time: a union takes any member, NoneType only null, float any
    number that is not a bool, int any integer that is not a bool, a generic an instance of its origin."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (float, int):
        allowed = (int, float) if hint is float else (int,)
        return isinstance(value, allowed) and type(value) is not bool
    return isinstance(value, typing.get_origin(hint) or hint)


def test_the_compiled_type_checks_agree_with_the_oracle_on_every_field_of_every_kind():
    values = [None, True, False, 0, 3, -2, 0.5, float("nan"), "", "text", [], [1, "a"], {}, {"a": 1}]
    hints = {typing.get_type_hints(cls)[f.name] for cls in KINDS.values() for f in dataclasses.fields(cls)}
    assert {float, int, str, bool} <= hints and len(hints) > 6
    for hint in hints:
        check = type_check(hint)
        assert [check(v) for v in values] == [fits(v, hint) for v in values], hint


def test_tail_restarts_when_the_file_is_replaced_even_if_it_regrew(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(lines(*({"event": "epoch_end", "epoch": i} for i in range(5))))
    tail = EventTail(path, warn=lambda m: pytest.fail(m))
    assert len(tail.read_new()) == 5
    replacement = tmp_path / "new"
    replacement.write_text(lines(*({"event": "epoch_end", "epoch": i, "pad": "x" * 40} for i in range(4))))
    os.replace(replacement, path)  # longer than the old offset already
    assert [e.epoch for e in tail.read_new()] == [0, 1, 2, 3] and tail.reset_count == 1


def test_read_events_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "epoch_end", "epoch": 1}\n{"event": "end", "best": {"x": [1, 2')
    assert read_events(path) == [EpochEnd(epoch=1)]


def evaluation(epoch: int, m: float, t: float) -> Eval:
    return Eval(time=t, epoch=epoch, mAP=m, rank1=m, rank5=m, rank10=m, mINP=m)


def test_the_summary_of_a_stopped_and_resumed_run():
    start = Start(time=100.0, schema=2, kind="usl", run="r", dataset="synthetic", epochs=4, iterations=10,
                  arch="resnet18", world_size=1, per_rank_batch=16, global_batch=16, lr=1e-3, device="cpu", seed=0)
    events = [start, evaluation(0, 0.1, 110), EpochEnd(time=120, epoch=1), evaluation(2, 0.5, 125),
              EpochEnd(time=130, epoch=2), Iter(time=131, epoch=3, iteration=5, total_iterations=10, loss=2, lr=1),
              Stopped(time=140, epoch=3, iteration=5),
              Resume(time=10_000, from_epoch=2, iteration=5, epochs=6), evaluation(4, 0.3, 10_020),
              EpochEnd(time=10_030, epoch=4)]
    summary = RunFold().add(events).summary("r", "/r", "running")
    assert (summary.epoch, summary.epochs, summary.resumes) == (4, 6, 1)  # the target from `resume --epochs 6`
    assert summary.best.epoch == 2 and summary.final.epoch == 4  # epoch 0 is never the best
    assert summary.elapsed == pytest.approx((140 - 100) + (10_030 - 10_000))  # the stopped night does not count
    assert summary.stopped is None and summary.losses == ((25, 2.0),)
    incremental = RunFold()
    for event in events:
        incremental.add([event])
    assert incremental.summary("r", "/r", "running") == summary


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", ".hidden", "x" * 200, "a b"])
def test_bad_run_names_are_refused(tmp_path, name):
    with pytest.raises(RunError):
        create_run(name, tmp_path)


def test_existing_run_is_refused(tmp_path):
    run = create_run("one", tmp_path)
    run.events.write_text("{}\n")
    with pytest.raises(RunError, match="already exists"):
        create_run("one", tmp_path)


def test_a_running_run_whose_process_is_gone_is_stale(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    run = run_dir("r", tmp_path)
    run.path.mkdir()
    run.write_status("running", pid=gone.pid, host=os.uname().nodename)
    assert live_state(run.read_status(), "iter") == "stale"
    run.write_status("running", pid=os.getpid(), host=os.uname().nodename)
    assert live_state(run.read_status(), "iter") == "running"
    run.write_status("running", pid=1, host="elsewhere", )
    assert live_state({**run.read_status(), "updated": 0}, "iter") == "stale"  # no heartbeat for long
    assert live_state({}, "end") == "finished" and live_state({}, "failure") == "failed"


def test_request_stop_signals_a_live_run_and_refuses_a_finished_one(tmp_path):
    run = run_dir("live", tmp_path)
    run.path.mkdir()
    process = stand_in_process(run.path)  # the run's own process (tests/unit/test_lifecycle.py: no other)
    try:
        assert "SIGTERM" in request_stop(run)
        assert run.stop_request.exists()
        assert process.wait(timeout=10) == 0
        run.write_status("finished")
        with pytest.raises(RunError, match="not running"):
            request_stop(run)
    finally:
        process.kill()
        process.wait()
