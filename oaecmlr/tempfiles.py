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


def replace_text(file: Path, text: str, encoding: str | None = None) -> None:
    """Replace `file` whole with `text` (a `temp_name` file, then `os.replace`): a reader sees the old
    text or the new, never a part. On an OSError (a full disk) no temp file is left, and it is raised."""
    tmp = temp_name(file)
    try:
        tmp.write_text(text, encoding=encoding)
        os.replace(tmp, file)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


PID_MAX = 2**22  # Linux's largest pid_max: no process has a larger pid


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that pid exists (one we may not signal counts). Only a
    positive pid up to PID_MAX names one process: 0 and -1 name groups, a larger one none."""
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid <= PID_MAX:
        return False
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
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    pid = parts[1]  # ASCII digits of a pid that can exist, else the name is not one temp_name wrote
    if not (pid.isascii() and pid.isdigit() and len(pid) <= len(str(PID_MAX)) and 0 < int(pid) <= PID_MAX):
        return False
    return not pid_alive(int(pid))


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
