"""Temp files of dead writers are removed, by resume and by the image cache; a live or remote one's stay."""

from __future__ import annotations

import os
import socket

from runfixtures import dead_pid, make_run

from oaecmlr.store.runs import RunDir


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
