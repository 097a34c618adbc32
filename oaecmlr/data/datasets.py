"""Parsers for the re-ID datasets of docs/method.md section 6, and where to find them on disk.

`load_dataset(name, data_root) -> ImageSplits`. Every known problem raises `DatasetError` with one
line naming the file; a split whose size differs from the standard release only warns.
Record paths are absolute; camids are 0-based; pid -1 (junk) is dropped everywhere.
"""

from __future__ import annotations

import csv
import os
import posixpath
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from oaecmlr.errors import DatasetError

from .records import SPLITS, DatasetCountWarning, ImageSplits, Record, num_ids
from .synthetic import synthetic_splits

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
# docs/method.md gives ([-\d]+)_c(\d); this is the same on valid names, and reads two-digit cameras
# (MSMT17 converted to the Market layout has c1..c15).
MARKET_NAME = re.compile(r"(-?\d+)_c(\d+)")
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_LAYOUT = "DIR/bounding_box_train, DIR/query, DIR/bounding_box_test"
MSMT_LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
              "gallery": ("list_gallery.txt",)}
MSMT_DIRS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}
MSMT_LAYOUT = ("DIR/train, DIR/test, DIR/list_{train,val,query,gallery}.txt "
               "(V2: mask_train_v2, mask_test_v2), or the Market layout " + MARKET_LAYOUT)
MANIFEST_COLUMNS = ("path", "pid", "camid", "split")
MANIFEST_LAYOUT = "DIR/manifest.csv with header path,pid,camid,split and paths relative to DIR"


# ---------------------------------------------------------------- Market-style folders

def _has_market_layout(folder: Path) -> bool:
    return all((folder / sub).is_dir() for sub in MARKET_FOLDERS.values())


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted; other files (Thumbs.db...) are ignored."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _parse_market_folder(folder: Path, split: str, pid0_is_distractor: bool) -> list[Record]:
    records = []
    for path in _image_files(folder):
        match = MARKET_NAME.match(path.name)
        if match is None:
            raise DatasetError(f"{path}: file name does not match PID_cCAM... (e.g. 0002_c1s1_000451_03.jpg); "
                               "rename or remove the file")
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid < -1 or cam < 1:
            raise DatasetError(f"{path}: pid must be >= -1 and camera >= 1 in the file name; rename or remove the file")
        if pid == -1 or (pid == 0 and pid0_is_distractor and split != "gallery"):
            continue  # junk, or a Market distractor outside the gallery
        records.append(Record(str(path), pid, cam - 1))
    if not records:
        raise DatasetError(f"{folder}: no usable images, so the {split} split is empty; copy the images there")
    return records


def _parse_market(folder: Path, pid0_is_distractor: bool = False) -> dict[str, list[Record]]:
    return {split: _parse_market_folder(folder / sub, split, pid0_is_distractor)
            for split, sub in MARKET_FOLDERS.items()}


# ---------------------------------------------------------------- MSMT17 list files

def _msmt_version(folder: Path) -> str | None:
    if all((folder / name).is_file() for names in MSMT_LISTS.values() for name in names):
        for version, dirs in MSMT_DIRS.items():
            if all((folder / d).is_dir() for d in dirs):
                return version
    return "market" if _has_market_layout(folder) else None


def _files_under(folder: Path) -> set[str]:
    """Relative posix paths of every file under folder (one walk instead of a stat per line)."""
    found = set()
    for dirpath, _, files in os.walk(folder):
        rel = Path(dirpath).relative_to(folder).as_posix()
        found.update(name if rel == "." else f"{rel}/{name}" for name in files)
    return found


def _parse_msmt_list(list_path: Path, image_dir: Path, existing: set[str]) -> list[Record]:
    records = []
    for lineno, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_path}:{lineno}"
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"-?\d+", parts[1]):
            raise DatasetError(f"{where}: expected 'RELPATH PID' (e.g. 0000/0000_000_01_0303morning_0015_0.jpg 0), "
                               f"got {line.strip()!r}")
        rel, pid = parts[0], int(parts[1])
        fields = posixpath.basename(rel).split("_")
        if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < 1:
            raise DatasetError(f"{where}: cannot read the camera (3rd '_' field, 1-based) from {rel!r}")
        if rel not in existing:
            raise DatasetError(f"{where}: image {image_dir / rel} does not exist; restore it or remove the line")
        if pid != -1:
            records.append(Record(str(image_dir / rel), pid, int(fields[2]) - 1))
    return records


def _parse_msmt(folder: Path) -> dict[str, list[Record]]:
    version = _msmt_version(folder)
    if version == "market":
        return _parse_market(folder)
    train_dir, test_dir = (folder / d for d in MSMT_DIRS[version])
    existing = {train_dir: _files_under(train_dir), test_dir: _files_under(test_dir)}
    splits = {}
    for split, list_names in MSMT_LISTS.items():
        image_dir = train_dir if split == "train" else test_dir
        splits[split] = [rec for name in list_names
                         for rec in _parse_msmt_list(folder / name, image_dir, existing[image_dir])]
        if not splits[split]:
            raise DatasetError(f"{folder / list_names[0]}: no images listed, so the {split} split is empty")
    return splits


# ---------------------------------------------------------------- manifest.csv

def _parse_manifest(folder: Path) -> dict[str, list[Record]]:
    """DIR/manifest.csv: path,pid,camid,split (extra columns allowed); all or nothing."""
    manifest = folder / "manifest.csv"
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    first_line: dict[str, int] = {}
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in MANIFEST_COLUMNS if c not in header]
        if missing:
            raise DatasetError(f"{manifest}:1: header lacks column(s) {','.join(missing)}; "
                               f"it must contain {','.join(MANIFEST_COLUMNS)}")
        col = {c: header.index(c) for c in MANIFEST_COLUMNS}
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{manifest}:{reader.line_num}"
            if len(row) < len(header):
                raise DatasetError(f"{where}: expected {len(header)} columns, got {len(row)}")
            rel, pid, camid, split = (row[col[c]].strip() for c in MANIFEST_COLUMNS)
            rel = _manifest_path(rel, where)
            if not re.fullmatch(r"-?\d+", pid) or int(pid) < -1:
                raise DatasetError(f"{where}: pid must be an integer >= -1, got {pid!r}")
            if not re.fullmatch(r"\d+", camid):
                raise DatasetError(f"{where}: camid must be an integer >= 0, got {camid!r}")
            if split not in SPLITS:
                raise DatasetError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            if rel in first_line:
                raise DatasetError(f"{where}: duplicate path {rel!r} (first on line {first_line[rel]})")
            first_line[rel] = reader.line_num
            if not (folder / rel).is_file():
                raise DatasetError(f"{where}: file {folder / rel} does not exist")
            if int(pid) != -1:
                splits[split].append(Record(str(folder / rel), int(pid), int(camid)))
    for split, recs in splits.items():
        if not recs:
            raise DatasetError(f"{manifest}: no rows with split={split}, so the {split} split is empty")
    return splits


def _manifest_path(rel: str, where: str) -> str:
    """Normalised relative posix path, or DatasetError for empty, absolute or escaping paths."""
    if not rel:
        raise DatasetError(f"{where}: empty path")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or PureWindowsPath(rel).drive:
        raise DatasetError(f"{where}: absolute path {rel!r}; paths must be relative to the manifest's folder")
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if norm in (".", "..") or norm.startswith("../"):
        raise DatasetError(f"{where}: path {rel!r} points outside the manifest's folder")
    return norm


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    aliases: tuple[str, ...]
    folder_names: tuple[str, ...]  # usual names of the unpacked folder, for data-root lookup
    layout: str  # one line, for error messages
    has_layout: Callable[[Path], bool]
    parse: Callable[[Path], dict[str, list[Record]]]
    expected: dict[str, tuple[int, int]] | None = None  # split -> (images, ids), docs/method.md section 6


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("market1501", ("market",), ("Market-1501-v15.09.15", "Market-1501"), MARKET_LAYOUT,
                _has_market_layout, lambda d: _parse_market(d, pid0_is_distractor=True),
                {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}),
    DatasetSpec("dukemtmcreid", ("duke",), ("DukeMTMC-reID",), MARKET_LAYOUT, _has_market_layout, _parse_market,
                {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}),
    DatasetSpec("msmt17", ("msmt",), ("MSMT17_V1", "MSMT17_V2", "MSMT17"), MSMT_LAYOUT,
                lambda d: _msmt_version(d) is not None, _parse_msmt,
                {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)}),
    DatasetSpec("cuhk03", (), ("cuhk03-market",), MARKET_LAYOUT, _has_market_layout, _parse_market,
                {"train": (7239, 743), "query": (451, 100), "gallery": (487, 100)}),
    DatasetSpec("manifest", (), (), MANIFEST_LAYOUT, lambda d: (d / "manifest.csv").is_file(), _parse_manifest),
    DatasetSpec("synthetic", (), (), "no files", lambda d: True, lambda d: {}),
]}
ALIASES: dict[str, str] = {alias: spec.name for spec in DATASETS.values() for alias in (spec.name, *spec.aliases)}


def get_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in ALIASES:
        choices = ", ".join(f"{s.name} ({', '.join(s.aliases)})" if s.aliases else s.name for s in DATASETS.values())
        raise DatasetError(f"unknown dataset {name!r}; choose one of {choices}")
    return DATASETS[ALIASES[key]]


def _dataset_folder(root: Path, spec: DatasetSpec) -> Path | None:
    """root if it has the layout, else its single child that has it (e.g. root/Market-1501-v15.09.15)."""
    if root.is_dir() and spec.has_layout(root):
        return root
    hits = [c for c in sorted(root.iterdir()) if c.is_dir() and spec.has_layout(c)] if root.is_dir() else []
    if len(hits) > 1:
        raise DatasetError(f"{root} holds several {spec.name} folders ({', '.join(h.name for h in hits)}); "
                           "point the data root at one of them")
    return hits[0] if hits else None


def _locate(base: Path, spec: DatasetSpec) -> Path | None:
    """base if it is the dataset folder, else its child with a usual name for the dataset."""
    if base.is_dir() and spec.has_layout(base):
        return base
    names = {n.lower() for n in (spec.name, *spec.aliases, *spec.folder_names)}
    for child in sorted(base.iterdir()) if base.is_dir() else []:
        if child.name.lower() in names and child.is_dir() and _dataset_folder(child, spec) is not None:
            return child
    return None


def resolve_data_root(name: str, data_root: str | os.PathLike | None = None) -> Path | None:
    """Where dataset `name` lives: data_root, else $OAECMLR_DATA, else ./data/<name>.

    data_root and $OAECMLR_DATA may be the dataset folder itself or a folder holding it under a
    usual name (market1501, Market-1501-v15.09.15, cuhk03-market...). None for synthetic.
    """
    spec = get_spec(name)
    if spec.name == "synthetic":
        return None
    if data_root is not None:
        return _locate(Path(data_root), spec) or Path(data_root)
    env = os.environ.get("OAECMLR_DATA")
    base = Path(env) if env else Path("data")
    return _locate(base, spec) or base / spec.name


def load_dataset(name: str, data_root: str | os.PathLike | None = None, cuhk03: str = "labeled",
                 allow_outside: bool = False) -> ImageSplits:
    """Parse dataset `name` (aliases allowed); synthetic gives the records of the default `make_synthetic()`."""
    spec = get_spec(name)
    if spec.name == "synthetic":
        return synthetic_splits()
    root = Path(os.path.abspath(resolve_data_root(spec.name, data_root)))
    hint = "point --data-root or OAECMLR_DATA at the dataset folder"
    if not root.is_dir():
        raise DatasetError(f"no {spec.name} data at {root}: expected {spec.layout}; {hint}")
    folder = _dataset_folder(root, spec)
    if folder is None:
        raise DatasetError(f"{root} is not a {spec.name} folder: expected {spec.layout}; {hint}")
    try:
        parsed = spec.parse(folder)
    except UnicodeDecodeError:
        raise DatasetError(f"a list or manifest under {folder} is not UTF-8 text; re-save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {exc.filename or folder} ({exc.strerror}); check the permissions") from None
    splits = ImageSplits(spec.name, *(sorted(parsed[s], key=lambda r: r.path) for s in SPLITS), root=str(folder))
    _warn_if_unusual(splits, spec)
    return splits


def _warn_if_unusual(splits: ImageSplits, spec: DatasetSpec) -> None:
    for split, (images, ids) in (spec.expected or {}).items():
        recs = splits.split(split)
        if (len(recs), num_ids(recs)) != (images, ids):
            warnings.warn(f"{spec.name} {split}: {len(recs):,} images / {num_ids(recs):,} ids, but the standard "
                          f"release has {images:,} / {ids:,}; results will not match published numbers",
                          DatasetCountWarning, stacklevel=3)
