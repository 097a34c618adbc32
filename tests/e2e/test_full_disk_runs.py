"""A full disk while a real (tiny) run checkpoints: one line that says so, nothing lost, resume goes on."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch
from enginefixtures import events_of, tiny_config

from oaecmlr.engine import checkpoint as checkpoint_module
from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import RunFailed


def full_while_writing(monkeypatch, fail_at: int):
    """torch.save fails on its `fail_at`-th call the way it does on a full disk (its own RuntimeError
    after a partial write), and the disk looks full exactly while the partial temp file exists."""
    import shutil

    import torch

    from oaecmlr.engine import checkpoint

    real_save, real_usage, calls = torch.save, shutil.disk_usage, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == fail_at:
            f.write(b"partial")
            f.flush()
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        return real_save(obj, f, *args, **kwargs)

    def usage(folder):
        total, used, free = real_usage(folder)
        partial = any(p.name.endswith(".tmp") for p in Path(folder).iterdir())
        return type(real_usage(folder))(total, used, 0 if partial else free)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", usage)
    return lambda: (monkeypatch.setattr(checkpoint.torch, "save", real_save),
                    monkeypatch.setattr(shutil, "disk_usage", real_usage))


def test_a_full_disk_at_the_second_checkpoint_says_so_and_resume_reproduces_the_run(tmp_path, monkeypatch):
    from enginefixtures import events_of, tiny_config

    from oaecmlr.engine.launch import resume_run, start_run
    from oaecmlr.errors import RunFailed

    start_run(tiny_config("run.eval_every=1"), "reference", str(tmp_path), preset="demo")
    space_back = full_while_writing(monkeypatch, fail_at=3)  # epoch 1: best.pt, last.pt; epoch 2: best.pt
    with pytest.raises(RunFailed) as failure:
        start_run(tiny_config("run.eval_every=1"), "full", str(tmp_path), preset="demo")
    folder = tmp_path / "full"
    assert str(failure.value) == (f"no space left on device at {folder}; free some space; "
                                  f"`oaecmlr resume full --runs-dir {tmp_path}` continues from the last checkpoint")
    assert "inline_container" not in (folder / "events.jsonl").read_text()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    space_back()
    resume_run("full", str(tmp_path))

    def evaluations(path):
        return [(e["epoch"], e["mAP"], e["rank1"]) for e in events_of(path) if e["event"] == "eval"]

    assert evaluations(folder) == evaluations(tmp_path / "reference")  # nothing lost: the same run


def test_a_full_disk_before_any_checkpoint_does_not_promise_one(tmp_path, monkeypatch):
    from enginefixtures import tiny_config

    from oaecmlr.engine.launch import start_run
    from oaecmlr.errors import RunFailed

    full_while_writing(monkeypatch, fail_at=1)
    with pytest.raises(RunFailed, match=r"there is no checkpoint yet: `oaecmlr resume early --runs-dir \S+` starts over "
                                        r"from epoch 0$"):
        start_run(tiny_config("run.eval_every=1"), "early", str(tmp_path), preset="demo")


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


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    real_save = torch.save
    saves = {"n": 0}

    def full_disk(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] >= 3:  # best.pt and last.pt of epoch 1 go through; epoch 2 hits a full disk
            f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    config = tiny_config("run.eval_every=5")  # only the last epoch evaluates: one save per epoch
    with pytest.raises(RunFailed, match="no space left on device at"):
        start_run(config, "full", str(tmp_path), preset="demo")
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    state = load_checkpoint(tmp_path / "full" / "last.pt")
    assert state["epoch"] == 1
    assert not [p for p in (tmp_path / "full").iterdir() if p.name.endswith(".tmp")]
    assert events_of(tmp_path / "full")[-1]["event"] == "failure"
