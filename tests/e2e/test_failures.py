"""A run survives what goes wrong: foreign or malicious checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from enginefixtures import cli, tiny_config, tiny_sets

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import CheckpointError, RunFailed


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
