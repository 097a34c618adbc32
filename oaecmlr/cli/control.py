"""`oaecmlr stop` and `oaecmlr note`: the two commands that change a run folder without training."""

from __future__ import annotations

from oaecmlr.cli.common import console, escape, warn
from oaecmlr.store.runs import find_run, read_meta, request_stop, write_meta


def stop_run(name: str, runs_dir: str | None) -> None:
    console.print(escape(request_stop(find_run(name, runs_dir))), highlight=False)


def note_run(name: str, runs_dir: str | None, text: str | None, tags: list[str], untag: list[str]) -> None:
    run = find_run(name, runs_dir)
    meta = read_meta(run, warn)
    if text is not None:
        meta["note"] = text
    meta["tags"] = sorted((set(meta.get("tags", [])) | set(tags)) - set(untag))
    write_meta(run, meta)
    console.print(escape(f"{run.name}: note {meta.get('note', '')!r}, tags {', '.join(meta['tags']) or '-'}"),
                  highlight=False)
