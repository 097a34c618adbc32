"""`oaecmlr data check`: parse a dataset, compare its split sizes with the standard release, and
optionally decode every image to find broken files.

For cuhk03 the standard release is the chosen CUHK03-NP variant (labeled or detected); a folder
that is a subset of it gets a `note:` line, not a warning.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

from rich.progress import Progress

from oaecmlr.cli.common import console, err_console, escape, print_json
from oaecmlr.cli.tables import Section, rich_table
from oaecmlr.data.cache import decode_image
from oaecmlr.data.datasets import get_spec, load_dataset, standard_counts
from oaecmlr.data.records import SPLITS, DatasetCountWarning, DatasetNote, ImageSplits
from oaecmlr.errors import DatasetError


def identity_warnings(splits: ImageSplits) -> list[str]:
    """Problems the counts do not show: queries without a gallery match, train ids reused in test."""
    out = []
    query, gallery = {r.pid for r in splits.query}, {r.pid for r in splits.gallery}
    unmatched = query - gallery
    if unmatched:
        out.append(f"{len(unmatched)} query ids have no gallery image (their queries are skipped by the evaluation)")
    shared = {r.pid for r in splits.train} & (query | gallery)
    if shared:
        out.append(f"{len(shared)} ids appear in both train and query/gallery; the test identities should be unseen")
    return out


def find_corrupt(paths: list[str], show_progress: bool = True) -> list[str]:
    """Decode every file (no cache) and return one line per unreadable one."""
    def check(path):
        try:
            decode_image(path, 32, 16)
        except DatasetError as exc:
            return str(exc)
        return None

    errors = []
    with Progress(console=err_console, transient=True, disable=not show_progress) as progress, \
            ThreadPoolExecutor(min(16, (os.cpu_count() or 1) + 2)) as pool:
        task = progress.add_task("decoding", total=len(paths))
        for error in pool.map(check, paths):
            progress.advance(task)
            if error:
                errors.append(error)
    return errors


def check_dataset(name: str, data_root: str | None, decode: bool, cuhk03: str = "labeled",
                  allow_outside: bool = False) -> dict:
    """The check as data: dataset, variant (cuhk03), root, per-split counts with the standard ones,
    warnings, notes, and with decode the broken images."""
    spec = get_spec(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DatasetCountWarning)
        warnings.simplefilter("always", DatasetNote)
        splits = load_dataset(name, data_root, cuhk03=cuhk03, allow_outside=allow_outside)
    stats = splits.stats()
    expected = standard_counts(spec.name, splits.variant) or {}
    for split in SPLITS:
        images, ids = expected.get(split, (None, None))
        stats[split].update(standard_images=images, standard_ids=ids)
    result = {"dataset": spec.name, "variant": splits.variant, "root": splits.root, "splits": stats,
              "warnings": [str(w.message) for w in caught if issubclass(w.category, DatasetCountWarning)]
              + identity_warnings(splits),
              "notes": [str(w.message) for w in caught if issubclass(w.category, DatasetNote)]}
    if decode:
        paths = [r.path for s in SPLITS for r in splits.split(s)] if splits.root else []
        result["decode"] = {"images": len(paths), "corrupt": find_corrupt(paths) if paths else []}
    return result


def _count(value: int, standard: int | None) -> str:
    if standard is None or value == standard:
        return f"{value:,}"
    return f"[yellow]{value:,}[/] (standard {standard:,})"


def _standard_line(result: dict) -> str | None:
    """`standard CUHK03-NP labeled: train 7,368 images / 767 ids, ...` for a dataset with a variant."""
    if result["variant"] is None:
        return None
    splits = result["splits"]
    (first, *rest) = SPLITS
    parts = [f"{first} {splits[first]['standard_images']:,} images / {splits[first]['standard_ids']:,} ids",
             *(f"{s} {splits[s]['standard_images']:,} / {splits[s]['standard_ids']:,}" for s in rest)]
    return f"standard CUHK03-NP {result['variant']}: " + ", ".join(parts)


def data_check_command(name: str, data_root: str | None, decode: bool, fmt: str, cuhk03: str = "labeled",
                       allow_outside: bool = False) -> bool:
    """Print the check; False when broken images were found."""
    result = check_dataset(name, data_root, decode, cuhk03=cuhk03, allow_outside=allow_outside)
    corrupt = result.get("decode", {}).get("corrupt", [])
    if fmt == "json":
        print_json(result)
        return not corrupt
    rows = [[split, _count(s["images"], s["standard_images"]), _count(s["ids"], s["standard_ids"]), str(s["cams"])]
            for split, s in result["splits"].items()]
    variant = f" (CUHK03-NP {result['variant']})" if result["variant"] else ""
    title = escape(f"{result['dataset']}{variant} at {result['root'] or '(generated)'}")
    console.print(rich_table(Section(title, ["split", "images", "ids", "cams"], rows, markup=True)), highlight=False)
    standard = _standard_line(result)
    if standard:
        console.print(escape(standard), highlight=False, soft_wrap=True)
    for note in result["notes"]:
        console.print(f"[cyan]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if not result["warnings"]:
        matches = all(s["standard_images"] is not None and (s["images"], s["ids"]) == (s["standard_images"],
                      s["standard_ids"]) for s in result["splits"].values())
        console.print("[green]ok[/]: " + ("the split sizes match the standard release" if matches
                                          else "the dataset parses"))
    if decode:
        d = result["decode"]
        if not d["images"]:
            console.print("no image files to decode (generated dataset)")
        elif corrupt:
            for line in corrupt[:50]:
                err_console.print(f"[red]corrupt:[/] {escape(line)}", highlight=False, soft_wrap=True)
            more = " (first 50 shown; --format json lists all)" if len(corrupt) > 50 else ""
            err_console.print(f"{len(corrupt)} of {d['images']:,} images cannot be decoded{more}")
        else:
            console.print(f"[green]ok[/]: all {d['images']:,} images decode")
    return not corrupt
