"""Loading a checkpoint never unpickles objects: a pickle that would run a command is refused, unrun."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.errors import CheckpointError


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
