"""Temp files named by their writer, so that a later process can tell a dead writer's leftovers
from a live one's: `.NAME.HOST~PID~RANDOM.tmp` beside the file they replace. Stdlib only; the data
cache and the run store both use it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from pathlib import Path


def temp_name(file: Path) -> Path:
    """Where to write `file` before `os.replace`: `.NAME.HOST~PID~RANDOM.tmp` in its folder."""
    return file.with_name(f".{file.name}.{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_is_dead(path: Path) -> bool:
    """True for a `temp_name` file whose writer, on this host, no longer runs; False for anything
    else (another host's, a live writer's, a name of another form)."""
    if not path.name.endswith(".tmp"):
        return False
    parts = path.name[:-len(".tmp")].rsplit(".", 1)[-1].split("~")
    return (len(parts) == 3 and parts[0] == socket.gethostname() and parts[1].isdigit()
            and not pid_alive(int(parts[1])))


def remove_files(paths: Iterable[Path]) -> list[str]:
    """Unlink each path that can be unlinked; the names removed."""
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path.name)
        except OSError:
            pass
    return removed
