"""Hostile input and bad luck: malformed events, a full disk, exit codes, checks made before anything
is created, partial config files, training that learns nothing, signals, leftovers, messages.
Each case at the smallest size that shows it (a tiny synthetic run where a run is needed)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from enginefixtures import events_of, main_in_process, one_error_line, tiny_config, tiny_sets
from runfixtures import dead_pid, make_run

from oaecmlr.config import resolve_config
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import RunFailed
from oaecmlr.store.runs import RunDir

main = main_in_process


# 2. events that are valid JSON with wrong types --------------------------------------------------
BAD_EVENTS = ['{"event":"eval","epoch":"x","mAP":"bad"}', '{"event":"eval","epoch":1,"mAP":null,"rank1":0,'
              '"rank5":0,"rank10":0,"mINP":0}', '{"event":"cluster","epoch":2,"clusters":"many"}',
              '{"event":"iter","epoch":1,"iteration":1,"total_iterations":10,"loss":"nan?","lr":1}',
              '{"event":"start","schema":"two"}', '{"event":"end","best":"yes"}', '{"event":5}', '[]', '"text"']


@pytest.mark.parametrize("bad", BAD_EVENTS)
def test_a_malformed_event_is_skipped_by_runs_show_and_compare(tmp_path, monkeypatch, capsys, bad):
    for name in ("a", "b"):
        make_run(tmp_path, name)
    with open(tmp_path / "a" / "events.jsonl", "a") as f:
        f.write(bad + "\n")
    line = len((tmp_path / "a" / "events.jsonl").read_text().splitlines())
    for args in (["runs"], ["show", "a"], ["compare", "a", "b"], ["runs", "--format", "json"]):
        code, out, err = main(monkeypatch, capsys, *args, "--runs-dir", tmp_path)
        assert code == 0, err
        assert f"events.jsonl:{line}: skipping a malformed event" in err, err
        assert "Traceback" not in err
    code, out, _ = main(monkeypatch, capsys, "runs", "--format", "json", "--runs-dir", tmp_path)
    assert {r["name"] for r in json.loads(out)} == {"a", "b"}  # one bad run does not hide the others


# 3. a full disk ------------------------------------------------------------------------------------
def test_a_full_disk_writing_the_status_leaves_no_temp_file_and_keeps_a_readable_status(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.write_status("running", pid=1, host="h", note="x" * 200)
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        run.write_status("failed", error="disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    assert run.read_status()["state"] == "failed"  # overwritten in place: the old file was long enough


@pytest.mark.e2e
def test_torch_running_out_of_space_while_checkpointing_says_so_and_resumes(tmp_path, monkeypatch):
    from oaecmlr.engine import checkpoint

    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2's last.pt
            f.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    monkeypatch.setattr("oaecmlr.engine.train_process.LOW_SPACE", 2**62)  # as if the disk were full
    with pytest.raises(RunFailed, match=r"^no space left on device at .*full; free some space"):
        start_run(tiny_config("run.eval_every=5"), "full", str(tmp_path), preset="demo")
    folder = tmp_path / "full"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((folder / "status.json").read_text())["state"] == "failed"
    assert events_of(folder)[-1]["event"] == "failure"
    monkeypatch.setattr(checkpoint.torch, "save", real_save)  # space is back
    resume_run("full", str(tmp_path))
    events = events_of(folder)
    assert events[-1]["event"] == "end" and [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2]


# 4. exit codes ------------------------------------------------------------------------------------
def test_failures_exit_non_zero(tmp_path, monkeypatch, capsys):
    from PIL import Image

    data = tmp_path / "data"
    for folder, name in (("bounding_box_train", "0001_c1s1_000001_00.jpg"), ("query", "0002_c1s1_000001_00.jpg"),
                         ("bounding_box_test", "0002_c2s1_000002_00.jpg")):
        (data / folder).mkdir(parents=True)
        Image.new("RGB", (16, 32)).save(data / folder / name)
    (data / "bounding_box_train" / "0003_c1s1_000001_00.jpg").write_bytes(b"not a jpeg")
    code, _, err = main(monkeypatch, capsys, "data", "check", "cuhk03", "--data-root", data, "--decode")
    assert code == 1 and "cannot be decoded" in err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, _ = main(monkeypatch, capsys, "doctor", "--runs-dir", blocker / "runs")  # main() keeps the code
    assert code == 1 and "missing" in out


@pytest.mark.e2e
def test_a_sweep_whose_runs_all_fail_exits_non_zero(tmp_path, monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "sweep", "demo", "--grid", "cluster.eps=0.99", "--set", "cluster.camera_norm=none",
                        "--seeds", "1",
                        "--runs-dir", tmp_path, *tiny_sets())
    assert code == 1 and "1 failed" in err


# 5. checks before anything is created ------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["run", "demo", "--name", "x" * 300], ["invalid run name", "128"]),
    (["show", "x" * 300], ["invalid run name"]),
    (["run", "demo", "--set", "data.height=0"], ["data.height must be between 8 and 1,024"]),
    (["run", "demo", "--set", "data.eval_batch=0"], ["data.eval_batch must be between 1 and"]),
    (["run", "demo", "--set", "run.threads=-1"], ["run.threads must be between 0 and"]),
    (["run", "demo", "--set", "cluster.k1=0"], ["cluster.k1 must be between 1 and 1,000"]),
    (["run", "demo", "--set", "optim.lr=nan"], ["optim.lr must be a finite number"]),
    (["run", "demo", "--arch", "resnet51"], ["model.arch must be one of", "resnet50"]),
    (["run", "dmeo"], ["did you mean demo", "presets:"]),
    (["run", "demo", "--set", "cluster.knn_backend=fais"], ["one of", "faiss"]),
    (["run", "demo", "--set", "data.sampler=random"], ["data.sampler must be one of"]),
])
def test_bad_values_are_one_line_and_create_nothing(tmp_path, monkeypatch, capsys, args, words):
    code, _, err = main(monkeypatch, capsys, *args, "--runs-dir", tmp_path / "runs")
    line = one_error_line(err)
    assert code == 1 and all(w in line for w in words), line
    assert not (tmp_path / "runs").exists()


def test_visrank_into_a_file_is_refused_before_any_work(tmp_path):
    from oaecmlr.cli.visrank import check_folder
    from oaecmlr.errors import CliError

    with pytest.raises(CliError, match="is a file, not a folder"):
        check_folder("/etc/passwd")
    assert check_folder(tmp_path / "new" / "ranks") == tmp_path / "new" / "ranks"


# 6. a partial --config section ----------------------------------------------------------------------
def test_a_config_file_sets_only_its_keys_and_the_typed_dataset_wins(tmp_path):
    partial = tmp_path / "f.toml"
    partial.write_text("[data]\nheight = 96\n")
    resolved = resolve_config("manifest", config_file=str(partial))
    assert resolved.config.data.dataset == "manifest" and resolved.config.data.height == 96
    assert resolved.config.data.width == 128  # the neighbours keep their defaults
    other = tmp_path / "g.toml"
    other.write_text('[data]\ndataset = "cuhk03"\nheight = 96\n')
    resolved = resolve_config("manifest", config_file=str(other))
    assert resolved.config.data.dataset == "manifest"
    assert any("g.toml sets data.dataset = 'cuhk03'; the command line's 'manifest' wins" in n for n in resolved.notes)
    cuhk = resolve_config("cuhk03", config_file=str(tmp_path / "f.toml"), options={"run.epochs": 3})
    assert cuhk.config.data.dataset == "cuhk03" and cuhk.config.data.height == 96 and cuhk.notes == []


# 7. training that silently produces garbage ---------------------------------------------------------
@pytest.mark.e2e
def test_exploding_weights_fail_the_run_with_what_to_change(tmp_path):
    config = tiny_config("run.epochs=3")
    config.optim.lr = 1e6  # beyond what the command line accepts (optim.lr <= 10): the health check still acts
    with pytest.raises(RunFailed, match=r"weights exploded.*lower optim.lr \(now 1e\+06\)"):
        start_run(config, "boom", str(tmp_path), preset="demo")
    assert events_of(tmp_path / "boom")[-1]["event"] == "failure"


@pytest.mark.e2e
def test_a_single_cluster_fails_the_run_with_what_to_change(tmp_path):
    with pytest.raises(RunFailed, match=r"one cluster.*lower cluster.eps \(now 0.99\)"):
        start_run(tiny_config("cluster.eps=0.99", "cluster.camera_norm=none"), "one", str(tmp_path), preset="demo")


def test_health_findings_in_isolation():
    import numpy as np

    from oaecmlr.engine.health import Watch, clustering_findings

    warnings, fatal = clustering_findings(np.array([0] * 90 + [1] * 5 + [-1] * 5), 0.6, 4)
    assert fatal is None and "one cluster holds 95%" in warnings[0]
    warnings, fatal = clustering_findings(np.array([-1] * 99 + [0]), 0.6, 4)
    assert "all 1 clustered images into one cluster" in fatal
    watch = Watch()
    assert watch.check_weights(10.0, 1e-3) == (None, None)
    warning, fatal = watch.check_weights(10.0 * 200, 1e-3)
    assert "grew 200-fold" in warning and fatal is None
    assert watch.check_weights(10.0 * 300, 1e-3) == (None, None)  # warned once
    assert "exploded" in watch.check_weights(float("inf"), 1e-3)[1]
    assert watch.check_loss(0.0) is not None and watch.check_loss(0.0) is None
    assert "exactly 0 for the whole of epoch 3" in watch.end_of_epoch(3)
    assert watch.check_loss(1.0) is None and watch.end_of_epoch(4) is None


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


@pytest.mark.e2e
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


@pytest.mark.e2e
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


# 9. leftovers ------------------------------------------------------------------------------------------------
def test_resume_and_the_cache_remove_the_temp_files_of_dead_writers(tmp_path):
    from oaecmlr.data.cache import clean_stale_temp_files as clean_cache
    from oaecmlr.store.runs import clean_stale_temp_files

    run = make_run(tmp_path, "r", state="stopped", upto_epoch=1)
    for name in (".last.pt.a1b2.tmp", ".best.pt.c3d4.tmp", ".status.json.999.tmp", "events.jsonl.tmp"):
        (run / name).write_bytes(b"x" * 10)
    assert clean_stale_temp_files(RunDir(run)) == sorted([".best.pt.c3d4.tmp", ".last.pt.a1b2.tmp",
                                                          ".status.json.999.tmp", "events.jsonl.tmp"])
    cache = tmp_path / "cache"
    cache.mkdir()
    host = socket.gethostname()
    dead = cache / f".images-8x8-n1-abc.npy.{host}~{dead_pid()}~deadbeef.tmp"
    alive = cache / f".images-8x8-n1-abc.npy.{host}~{os.getpid()}~cafecafe.tmp"
    elsewhere = cache / ".images-8x8-n1-abc.npy.otherhost~1~00000000.tmp"
    for path in (dead, alive, elsewhere):
        path.write_bytes(b"x")
    assert clean_cache(cache) == [dead.name]
    assert alive.exists() and elsewhere.exists()


# 10. messages -------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_nan_before_any_checkpoint_does_not_claim_one_was_kept(tmp_path, monkeypatch):
    from oaecmlr.core.memory import ClusterMemory

    original = ClusterMemory.forward
    monkeypatch.setattr(ClusterMemory, "forward", lambda self, *a, **k: original(self, *a, **k) * float("nan"))
    with pytest.raises(RunFailed, match="there is no checkpoint yet") as failure:
        start_run(tiny_config(), "early", str(tmp_path), preset="demo")
    assert "kept" not in str(failure.value)
