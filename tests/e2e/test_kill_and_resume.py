"""SIGKILL or SIGTERM (once, twice, to a launcher of workers) stop a run cleanly, and resume matches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from enginefixtures import cli, events_of, tiny_sets, wait_for

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run

LONGER = ["--set", "run.epochs=3", "--set", "run.iterations=12"]


def evaluations(events):
    return [(e["epoch"], e["mAP"], e["rank1"], e["mINP"]) for e in events if e["event"] == "eval"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    result = cli("run", "demo", "--name", "ref", "--runs-dir", str(root), *tiny_sets(), *LONGER)
    assert result.returncode == 0, result.stderr
    return events_of(root / "ref")


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


def _has(path: Path, kind: str, epoch: int | None = None) -> bool:
    try:
        return any(e["event"] == kind and (epoch is None or e.get("epoch") == epoch) for e in events_of(path))
    except FileNotFoundError:
        return False


def test_sigterm_to_the_launcher_of_two_workers_stops_every_worker(tmp_path):
    sets = [*tiny_sets(), "--set", "run.epochs=30", "--set", "run.iterations=20"]
    process = subprocess.Popen([sys.executable, "-m", "oaecmlr.cli.app", "run", "demo", "--name", "w", "--gpus",
                                "cpu,cpu", "--runs-dir", str(tmp_path), *sets],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: _has(tmp_path / "w", "iter"))
    workers = json.loads((tmp_path / "w" / "status.json").read_text())["workers"]
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=180)
    for pid in workers:
        assert wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status")
                     .read_text().lower(), 30)
    assert events_of(tmp_path / "w")[-1]["event"] == "stopped"
    assert json.loads((tmp_path / "w" / "status.json").read_text())["state"] == "stopped"


def test_a_second_sigterm_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    sets = [*tiny_sets(), "--set", "run.epochs=30", "--set", "data.synthetic_ids=300", "--set", "cluster.k1=20"]
    process = subprocess.Popen([sys.executable, "-m", "oaecmlr.cli.app", "run", "demo", "--name", "twice",
                                "--runs-dir", str(tmp_path), *sets], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    folder = tmp_path / "twice"
    assert wait_for(lambda: _has(folder, "epoch_end", 1) and (folder / "last.pt").exists())
    assert wait_for(lambda: _has(folder, "epoch_start", 2))  # inside epoch 2's extraction and clustering
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    started = time.time()
    _, err = process.communicate(timeout=60)
    assert time.time() - started < 20 and "Traceback" not in err
    last = events_of(folder)[-1]
    assert last["event"] == "stopped" and "at once" in last["reason"]
    resume_run("twice", str(tmp_path), epochs=2)  # from the last checkpoint: epoch 1 done
    events = events_of(folder)
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2] and events[-1]["event"] == "end"
