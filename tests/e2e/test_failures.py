"""A run survives what goes wrong: SIGKILL mid-epoch, SIGTERM, torn event lines, foreign or malicious
checkpoints."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from enginefixtures import cli, events_of, tiny_config, tiny_sets

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import CheckpointError, RunFailed

LONGER = ["--set", "run.epochs=3", "--set", "run.iterations=12"]


def evaluations(events):
    return [(e["epoch"], e["mAP"], e["rank1"], e["mINP"]) for e in events if e["event"] == "eval"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    result = cli("run", "demo", "--name", "ref", "--runs-dir", str(root), *tiny_sets(), *LONGER)
    assert result.returncode == 0, result.stderr
    return events_of(root / "ref")


def wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def start_detached(root: Path, name: str) -> int:
    result = cli("run", "demo", "--name", name, "--runs-dir", str(root), "--detach", *tiny_sets(), *LONGER)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name
    status = json.loads((root / name / "status.json").read_text())
    return status["pid"]


def in_epoch_two(path: Path) -> bool:
    try:
        return any(e["event"] == "iter" and e["epoch"] == 2 and e["iteration"] >= 2 for e in events_of(path))
    except FileNotFoundError:
        return False


def process_gone(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    pid = start_detached(tmp_path, "killed")
    assert wait_for(lambda: in_epoch_two(tmp_path / "killed"))
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: process_gone(pid), 30)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1  # intact, from the last epoch

    status = cli("runs", "--runs-dir", str(tmp_path), "--format", "json")
    if status.returncode == 0:  # the runs command lists it as stale (its pid is gone)
        assert any(r["name"] == "killed" and r["status"] == "stale" for r in json.loads(status.stdout))

    result = cli("resume", "killed", "--runs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    events = events_of(tmp_path / "killed")
    assert events[-1]["event"] == "end"
    assert Counter(e["epoch"] for e in events if e["event"] == "epoch_end") == {1: 1, 2: 1, 3: 1}
    assert Counter(e["epoch"] for e in events if e["event"] == "cluster") == {1: 1, 2: 1, 3: 1}
    steps = [(e["epoch"], e["iteration"]) for e in events if e["event"] == "iter"]
    assert len(steps) == len(set(steps)) == 36
    assert [e["event"] for e in events].count("resume") == 1
    assert (tmp_path / "killed" / "events.discarded.jsonl").exists()  # the torn epoch is kept aside
    assert evaluations(events) == evaluations(uninterrupted)


def in_epoch_one(path: Path) -> bool:
    try:
        return any(e["event"] == "iter" and e["epoch"] == 1 for e in events_of(path))
    except FileNotFoundError:
        return False


def test_sigkill_before_any_checkpoint_then_resume_starts_over(tmp_path, uninterrupted):
    pid = start_detached(tmp_path, "early")
    assert wait_for(lambda: in_epoch_one(tmp_path / "early"))
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: process_gone(pid), 30)
    assert not (tmp_path / "early" / "last.pt").exists()
    before = len((tmp_path / "early" / "events.jsonl").read_text().splitlines())

    result = cli("resume", "early", "--runs-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "started over from epoch 0" in result.stderr
    events = events_of(tmp_path / "early")
    assert [e["event"] for e in events].count("start") == 1 and events[0]["restarted"] is True
    assert events[0]["discarded_events"] == before
    assert len((tmp_path / "early" / "events.discarded.jsonl").read_text().splitlines()) == before
    assert events[-1]["event"] == "end"
    assert evaluations(events) == evaluations(uninterrupted)


def test_sigterm_checkpoints_and_stops_then_resume_matches(tmp_path, uninterrupted):
    pid = start_detached(tmp_path, "termed")
    assert wait_for(lambda: in_epoch_two(tmp_path / "termed"))
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: process_gone(pid), 60)
    events = events_of(tmp_path / "termed")
    assert events[-1]["event"] == "stopped" and events[-1]["reason"] == "SIGTERM"
    assert json.loads((tmp_path / "termed" / "status.json").read_text())["state"] == "stopped"
    labels = load_checkpoint(tmp_path / "termed" / "last.pt")["epoch_labels"]
    assert labels["epoch"] == 2 and labels["iteration"] >= 2

    assert cli("resume", "termed", "--runs-dir", str(tmp_path)).returncode == 0
    events = events_of(tmp_path / "termed")
    steps = [(e["epoch"], e["iteration"]) for e in events if e["event"] == "iter"]
    assert len(steps) == len(set(steps)) == 36
    assert evaluations(events) == evaluations(uninterrupted)


def test_torn_and_corrupt_event_lines_are_skipped_by_readers(tmp_path):
    run = start_run(tiny_config("run.epochs=1"), "torn", str(tmp_path), preset="demo")
    with open(run.events, "a") as f:
        f.write("{not json at all}\n")
        f.write('{"event": "iter", "epoch": 1, "iter')  # a torn last line, as after a crash
    result = cli("show", "torn", "--runs-dir", str(tmp_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["best"]["epoch"] == 1
    assert "skipping a malformed event" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    run = start_run(tiny_config("run.epochs=1"), "r18", str(tmp_path), preset="demo")
    config = tiny_config("run.epochs=1", "model.arch=mobilenet_v2")
    config.model.init = str(run.path)
    with pytest.raises(CheckpointError, match="resnet18"):
        start_run(config, "mob", str(tmp_path), preset="demo")
    result = cli("run", "demo", "--init", "r18", "--arch", "mobilenet_v2", "--runs-dir", str(tmp_path), *tiny_sets())
    assert result.returncode == 1 and "resnet18" in result.stderr and "Traceback" not in result.stderr
    # resuming after the config was edited to another architecture is refused too
    text = run.config.read_text().replace('arch = "resnet18"', 'arch = "mobilenet_v2"')
    run.config.write_text(text)
    with pytest.raises(RunFailed, match="resnet18"):
        resume_run("r18", str(tmp_path), epochs=2)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/oaecmlr-pwned",))


def test_checkpoint_loading_never_unpickles_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "oaecmlr-checkpoint", "model": Payload()}, path)
    Path("/tmp/oaecmlr-pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not Path("/tmp/oaecmlr-pwned").exists()
