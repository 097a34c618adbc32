"""The run store: event writing and tailing, run names, status and stale detection."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from oaecmlr.store.events import SCHEMA_VERSION, EventTail, EventWriter, read_events
from oaecmlr.store.runs import RunError, create_run, live_state, request_stop, run_dir


def test_writer_appends_one_flushed_json_object_per_line(tmp_path):
    writer = EventWriter(tmp_path / "events.jsonl")
    writer.write("start", schema=SCHEMA_VERSION)
    writer.write("iter", epoch=1, loss=1.5)
    lines = (tmp_path / "events.jsonl").read_text().splitlines()  # readable before close: flushed
    assert [json.loads(line)["event"] for line in lines] == ["start", "iter"]
    assert writer.offset() == (tmp_path / "events.jsonl").stat().st_size
    writer.close()


def test_tail_reads_only_new_complete_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "a", "n": 1}\n{"event": "b", "n"')
    tail = EventTail(path)
    assert [e["event"] for e in tail.read_new()] == ["a"]
    assert tail.read_new() == []
    with open(path, "a") as f:
        f.write(': 2}\n{"event": "c"}\n')
    assert [(e["event"], e.get("n")) for e in tail.read_new()] == [("b", 2), ("c", None)]


def test_tail_skips_corrupt_lines_with_a_warning(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "a"}\nnot json\n[1, 2]\n{"event": "b"}\n')
    seen = []
    events = EventTail(path, warn=seen.append).read_new()
    assert [e["event"] for e in events] == ["a", "b"]
    assert len(seen) == 2 and ":2:" in seen[0] and ":3:" in seen[1]


def test_tail_restarts_when_the_file_is_replaced_even_if_it_regrew(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"event": "e", "i": i}) + "\n" for i in range(5)))
    tail = EventTail(path, warn=lambda m: pytest.fail(m))
    assert len(tail.read_new()) == 5
    replacement = tmp_path / "new"
    replacement.write_text("".join(json.dumps({"event": "f", "i": i, "pad": "x" * 40}) + "\n" for i in range(4)))
    os.replace(replacement, path)  # longer than the old offset already
    events = tail.read_new()
    assert [e["i"] for e in events] == [0, 1, 2, 3] and tail.reset_count == 1


def test_read_events_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "a"}\n{"event": "b", "x": [1, 2')
    assert [e["event"] for e in read_events(path)] == ["a"]


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
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        run = run_dir("live", tmp_path)
        run.path.mkdir()
        run.write_status("running", pid=sleeper.pid, host=os.uname().nodename)
        assert "SIGTERM" in request_stop(run)
        assert run.stop_request.exists()
        assert sleeper.wait(timeout=10) == -15
        run.write_status("finished")
        with pytest.raises(RunError, match="not running"):
            request_stop(run)
    finally:
        sleeper.kill()
