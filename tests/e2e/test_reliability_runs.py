"""Real (tiny) runs that fail or stop say so in one line and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from enginefixtures import events_of, main_in_process, tiny_config, tiny_sets

from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import RunFailed

main = main_in_process


def test_a_sweep_whose_runs_all_fail_exits_non_zero(tmp_path, monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "sweep", "demo", "--grid", "cluster.eps=0.99", "--set", "cluster.camera_norm=none",
                        "--seeds", "1",
                        "--runs-dir", tmp_path, *tiny_sets())
    assert code == 1 and "1 failed" in err


# 7. training that silently produces garbage ---------------------------------------------------------
def test_exploding_weights_fail_the_run_with_what_to_change(tmp_path):
    config = tiny_config("run.epochs=3")
    config.optim.lr = 1e6  # beyond what the command line accepts (optim.lr <= 10): the health check still acts
    with pytest.raises(RunFailed, match=r"weights exploded.*lower optim.lr \(now 1e\+06\)"):
        start_run(config, "boom", str(tmp_path), preset="demo")
    assert events_of(tmp_path / "boom")[-1]["event"] == "failure"


def test_a_single_cluster_fails_the_run_with_what_to_change(tmp_path):
    with pytest.raises(RunFailed, match=r"one cluster.*lower cluster.eps \(now 0.99\)"):
        start_run(tiny_config("cluster.eps=0.99", "cluster.camera_norm=none"), "one", str(tmp_path), preset="demo")


# 8. signals -----------------------------------------------------------------------------------------------
def _wait(predicate, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


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
    assert _wait(lambda: _has(tmp_path / "w", "iter"))
    workers = json.loads((tmp_path / "w" / "status.json").read_text())["workers"]
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=180)
    for pid in workers:
        assert _wait(lambda pid=pid: not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status")
                     .read_text().lower(), 30)
    assert events_of(tmp_path / "w")[-1]["event"] == "stopped"
    assert json.loads((tmp_path / "w" / "status.json").read_text())["state"] == "stopped"


def test_a_second_sigterm_stops_at_once_keeping_the_last_checkpoint(tmp_path):
    sets = [*tiny_sets(), "--set", "run.epochs=30", "--set", "data.synthetic_ids=300", "--set", "cluster.k1=20"]
    process = subprocess.Popen([sys.executable, "-m", "oaecmlr.cli.app", "run", "demo", "--name", "twice",
                                "--runs-dir", str(tmp_path), *sets], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    folder = tmp_path / "twice"
    assert _wait(lambda: _has(folder, "epoch_end", 1) and (folder / "last.pt").exists())
    assert _wait(lambda: _has(folder, "epoch_start", 2))  # inside epoch 2's extraction and clustering
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


# 10. messages -------------------------------------------------------------------------------------------------
def test_a_nan_before_any_checkpoint_does_not_claim_one_was_kept(tmp_path, monkeypatch):
    from oaecmlr.core.memory import ClusterMemory

    original = ClusterMemory.forward
    monkeypatch.setattr(ClusterMemory, "forward", lambda self, *a, **k: original(self, *a, **k) * float("nan"))
    with pytest.raises(RunFailed, match="there is no checkpoint yet") as failure:
        start_run(tiny_config(), "early", str(tmp_path), preset="demo")
    assert "kept" not in str(failure.value)
