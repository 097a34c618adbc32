"""A full disk while writing a status, a checkpoint, the log or a note: nothing torn or left, one line."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from enginefixtures import main_in_process, one_error_line
from runfixtures import make_run

from oaecmlr.engine import checkpoint as checkpoint_module
from oaecmlr.engine.checkpoint import atomic_save, load_checkpoint
from oaecmlr.store.runs import RunDir

main = main_in_process


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


def test_atomic_save_never_leaves_a_torn_file(tmp_path, monkeypatch):
    target = tmp_path / "x.pt"
    atomic_save({"a": torch.ones(3)}, target)

    def boom(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", boom)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(3)}, target)
    assert torch.equal(load_checkpoint(target)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]


def test_closing_a_run_on_a_full_disk_raises_nothing(tmp_path, monkeypatch):
    import errno
    import logging

    from oaecmlr.engine.recorder import RunRecorder

    recorder = RunRecorder(RunDir(tmp_path))
    recorder.log.info("a line still in the buffer")

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logging.FileHandler, "flush", full)
    recorder.close()  # logging's close() flushed into the full disk and raised


def test_note_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import errno

    run = make_run(tmp_path, "a")
    (run / "meta.json").write_text('{"note": "before", "tags": []}')
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            real(self, "partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    code, _, err = main(monkeypatch, capsys, "note", "a", "after", "--runs-dir", tmp_path)
    assert code == 1 and "No space left on device" in one_error_line(err)
    assert (run / "meta.json").read_text() == '{"note": "before", "tags": []}'
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_no_space_left_says_whether_a_checkpoint_exists(tmp_path):
    import errno

    from oaecmlr.engine.recorder import RunRecorder
    from oaecmlr.engine.train_process import record_failure

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    recorder = RunRecorder(run)
    message = str(record_failure(recorder, OSError(errno.ENOSPC, "No space left on device")))
    run.last.write_bytes(b"a checkpoint")
    later = str(record_failure(recorder, OSError(errno.ENOSPC, "No space left on device")))
    recorder.close()
    assert message.endswith(f"there is no checkpoint yet: `oaecmlr resume r --runs-dir {tmp_path}` starts over "
                            "from epoch 0")
    assert later.endswith(f"`oaecmlr resume r --runs-dir {tmp_path}` continues from the last checkpoint")
