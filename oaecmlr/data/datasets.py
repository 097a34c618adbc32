"""Parsers for the re-ID datasets of docs/method.md section 6, and where to find them on disk.

`load_dataset(name, data_root, cuhk03="labeled", allow_outside=False) -> ImageSplits`. Every known
problem raises `DatasetError` with one line naming the file (and the line of a list or manifest);
the message never holds a control character (they are shown escaped, e.g. \\x1b). A split whose
size differs from the standard release warns (`DatasetCountWarning`); a CUHK03 folder that is a
subset of CUHK03-NP gets one `DatasetNote` instead. Record paths are absolute; camids are 0-based;
pid -1 (junk) is dropped everywhere. A folder that looks like another release (`recognise`: its
file names and camera count) is refused in one line that names it: `market-subset looks like Market-1501`.

Ids: pids and camids (and the camera numbers of file names) are plain decimal integers of at most
`MAX_ID` = 2**31 - 1 = 2,147,483,647, so they fit an int32 and leave room in int64 arithmetic;
larger ones are refused, naming the file and line (or the file name).

Containment: every image path of every layout must stay inside its data folder. Manifest entries
and MSMT17 list entries are checked as text (no absolute paths, no `..` out of it); all of them,
and the images of Market-layout folders (Market-1501, DukeMTMC-reID, CUHK03-NP, MSMT17 converted),
once symlinks are resolved (`os.path.realpath`): an image that resolves outside the resolved data
folder (a symlink in bounding_box_train/ to /etc/shadow, a split folder linked elsewhere) is
refused unless `allow_outside=True` (`data.allow_outside`, for datasets that are symlink farms).
Symlinks that stay inside are fine.

CUHK03 is CUHK03-NP (Zhong et al., CVPR 2017): a folder holding `labeled/` and `detected/`, each in
the Market layout; `cuhk03` picks one of them. A folder that is itself in the Market layout loads as
it is: its variant is its name (`labeled`, `cuhk03-np-detected`...), else the variant whose standard
sizes it has, else the requested one.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from oaecmlr.errors import DatasetError

from .records import SPLITS, DatasetCountWarning, DatasetNote, ImageSplits, Record, num_ids
from .synthetic import synthetic_splits

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
# docs/method.md gives ([-\d]+)_c(\d); this is the same on valid names, and reads two-digit cameras
# (MSMT17 converted to the Market layout has c1..c15). ASCII digits only.
MARKET_NAME = re.compile(r"(-?\d+)_c(\d+)", re.ASCII)
MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_LAYOUT = "DIR/bounding_box_train, DIR/query, DIR/bounding_box_test"
MSMT_LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",),
              "gallery": ("list_gallery.txt",)}
MSMT_DIRS = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}
MSMT_LAYOUT = ("DIR/train, DIR/test, DIR/list_{train,val,query,gallery}.txt "
               "(V2: mask_train_v2, mask_test_v2), or the Market layout " + MARKET_LAYOUT)
MANIFEST_COLUMNS = ("path", "pid", "camid", "split")
MANIFEST_LAYOUT = "DIR/manifest.csv with header path,pid,camid,split and paths relative to DIR"
CUHK03_VARIANTS = ("labeled", "detected")  # the values of data.cuhk03
CUHK03_NP = {  # split -> (images, ids) of CUHK03-NP, docs/method.md section 6
    "labeled": {"train": (7368, 767), "query": (1400, 700), "gallery": (5328, 700)},
    "detected": {"train": (7365, 767), "query": (1400, 700), "gallery": (5332, 700)},
}
CUHK03_LAYOUT = ("DIR/labeled and DIR/detected (CUHK03-NP), each with bounding_box_train, query, "
                 "bounding_box_test; or one of them: " + MARKET_LAYOUT)
MAX_ID = 2**31 - 1  # the largest pid, camid or camera number accepted
_INTEGER = re.compile(r"-?[0-9]+")
_ALLOW_OUTSIDE = "or, if the dataset is a symlink farm, set data.allow_outside=true (--set data.allow_outside=true)"


# ---------------------------------------------------------------- messages and small checks

def _clean(text: str) -> str:
    """text with every non-printable character (terminal escapes, newlines, bidi controls) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _shown(value: str, limit: int = 40) -> str:
    """repr of a value read from a file, cut to `limit` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value):,} characters)"


def _bounded_int(text: str) -> int | None:
    """int(text) for decimal text of magnitude <= MAX_ID, else None (never a huge int, never ValueError)."""
    if not _INTEGER.fullmatch(text):
        return None
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > len(str(MAX_ID)):
        return None
    value = int(text)
    return value if abs(value) <= MAX_ID else None


def _parse_id(text: str, where: str, what: str, minimum: int, fix: str) -> int:
    """The integer `text`, or DatasetError: not a decimal integer >= minimum, or beyond MAX_ID."""
    if not _INTEGER.fullmatch(text) or (minimum >= 0 and text.startswith("-")):
        raise DatasetError(f"{where}: {what} must be an integer >= {minimum}, got {_shown(text)}")
    value = _bounded_int(text)
    if value is None:
        raise DatasetError(f"{where}: {what} {_shown(text)} does not fit: it must lie between {minimum} and "
                           f"{MAX_ID:,} (2**31 - 1); {fix}")
    if value < minimum:
        raise DatasetError(f"{where}: {what} must be an integer >= {minimum}, got {_shown(text)}")
    return value


def _relative_path(rel: str, where: str, folder_kind: str) -> str:
    """Normalised relative posix path, or DatasetError for empty, absolute or escaping paths."""
    if not rel:
        raise DatasetError(f"{where}: empty path")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or PureWindowsPath(rel).drive:
        raise DatasetError(f"{where}: absolute path {_shown(rel, 200)}; paths must be relative to {folder_kind}")
    norm = posixpath.normpath(rel.replace("\\", "/"))
    if norm in (".", "..") or norm.startswith("../"):
        raise DatasetError(f"{where}: path {_shown(rel, 200)} points outside {folder_kind}")
    return norm


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


class _Containment:
    """Whether relative entries under `folder` still lie inside it once symlinks are resolved.

    Parent folders are resolved once each (cached); the entry itself only when it is a symlink.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.root = os.path.realpath(folder)
        self._parents: dict[str, str] = {}

    def resolved(self, rel: str) -> str:
        parent, name = posixpath.split(rel)
        real_parent = self._parents.get(parent)
        if real_parent is None:
            real_parent = self._parents[parent] = os.path.realpath(self.folder / parent) if parent else self.root
        full = self.folder / rel
        return os.path.realpath(full) if os.path.islink(full) else os.path.join(real_parent, name)

    def check(self, rel: str, where: str, fix: str = "remove the line or the link") -> None:
        real = self.resolved(rel)
        if not _inside(real, self.root):
            raise DatasetError(f"{where}: {_shown(rel, 200)} resolves (through a symlink) to {real}, outside the "
                               f"data folder {self.root}; {fix}, {_ALLOW_OUTSIDE}")


# ---------------------------------------------------------------- Market-style folders

def _has_market_layout(folder: Path) -> bool:
    return all((folder / sub).is_dir() for sub in MARKET_FOLDERS.values())


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted; other files (Thumbs.db...) are ignored."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _parse_market_folder(folder: Path, split: str, pid0_is_distractor: bool,
                         containment: _Containment | None) -> list[Record]:
    records = []
    for path in _image_files(folder):
        if containment is not None:
            containment.check(os.path.relpath(path, containment.folder), str(path), "remove the link")
        match = MARKET_NAME.match(path.name)
        if match is None:
            raise DatasetError(f"{path}: file name does not match PID_cCAM... (e.g. 0002_c1s1_000451_03.jpg); "
                               "rename or remove the file")
        pid, cam = _bounded_int(match.group(1)), _bounded_int(match.group(2))
        if pid is None or cam is None:
            raise DatasetError(f"{path}: the pid or camera number in the file name does not fit: they must be at "
                               f"most {MAX_ID:,} (2**31 - 1); rename or remove the file")
        if pid < -1 or cam < 1:
            raise DatasetError(f"{path}: pid must be >= -1 and camera >= 1 in the file name; rename or remove the file")
        if pid == -1 or (pid == 0 and pid0_is_distractor and split != "gallery"):
            continue  # junk, or a Market distractor outside the gallery
        records.append(Record(str(path), pid, cam - 1))
    if not records:
        raise DatasetError(f"{folder}: no usable images, so the {split} split is empty; copy the images there")
    return records


def _parse_market(folder: Path, pid0_is_distractor: bool = False, allow_outside: bool = False,
                  container: Path | None = None, **_) -> dict[str, list[Record]]:
    """The three split folders; each image must resolve inside `container` (default: `folder`)."""
    containment = None if allow_outside else _Containment(container or folder)
    return {split: _parse_market_folder(folder / sub, split, pid0_is_distractor, containment)
            for split, sub in MARKET_FOLDERS.items()}


# ---------------------------------------------------------------- CUHK03-NP: labeled/ and detected/

def _cuhk03_variants(folder: Path) -> dict[str, Path]:
    """{variant: folder} of the labeled/ and detected/ children (any case) in the Market layout."""
    if not folder.is_dir():
        return {}
    found = {}
    for child in sorted(folder.iterdir()):
        variant = child.name.lower()
        if variant in CUHK03_VARIANTS and variant not in found and child.is_dir() and _has_market_layout(child):
            found[variant] = child
    return found


def _has_cuhk03_layout(folder: Path) -> bool:
    return bool(_cuhk03_variants(folder)) or _has_market_layout(folder)


def _variant_by_name(folder: Path) -> str | None:
    """labeled / detected when the folder's name says so (labeled, CUHK03-NP_detected...), else None."""
    words = set(re.split(r"[^a-z]+", folder.name.lower()))
    hits = [v for v in CUHK03_VARIANTS if v in words or (v == "labeled" and "labelled" in words)]
    return hits[0] if len(hits) == 1 else None


def _cuhk03_folder(folder: Path, requested: str) -> tuple[Path, str | None, str]:
    """The Market-layout folder to parse, its variant (None: decide by the split sizes) and how it was chosen."""
    if requested not in CUHK03_VARIANTS:
        raise DatasetError(f"data.cuhk03 must be one of {', '.join(CUHK03_VARIANTS)}, got {requested!r}")
    variants = _cuhk03_variants(folder)
    if variants:
        if requested not in variants:
            other = next(iter(variants))
            raise DatasetError(f"{folder} has no {requested}/ folder in the Market layout (it holds {other}/); "
                               f"set data.cuhk03={other}, or add {folder / requested}")
        return variants[requested], requested, "requested"
    variant = _variant_by_name(folder)
    return folder, variant, "its folder name" if variant else ""


def _cuhk03_variant_by_counts(counts: dict[str, tuple[int, int]], requested: str) -> tuple[str, str]:
    matching = [v for v in CUHK03_VARIANTS if counts == CUHK03_NP[v]]
    return (matching[0], "its split sizes") if len(matching) == 1 else (requested, "")


# ---------------------------------------------------------------- MSMT17 list files

def _msmt_version(folder: Path) -> str | None:
    if all((folder / name).is_file() for names in MSMT_LISTS.values() for name in names):
        for version, dirs in MSMT_DIRS.items():
            if all((folder / d).is_dir() for d in dirs):
                return version
    return "market" if _has_market_layout(folder) else None


def _files_under(folder: Path) -> set[str]:
    """Relative posix paths of the files under folder that are no symlinks and lie under no symlinked
    folder (one walk instead of a stat per line): list entries not among them are resolved one by one."""
    files: set[str] = set()
    pending = [(folder, "")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    continue
                if entry.is_dir():
                    pending.append((Path(entry.path), prefix + entry.name + "/"))
                else:
                    files.add(prefix + entry.name)
    return files


def _read_text(path: Path) -> str:
    """The UTF-8 text of a list or manifest (a BOM is dropped), or DatasetError naming the line of a bad byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); re-save the file as UTF-8") \
            from None


def _parse_msmt_list(list_path: Path, image_dir: Path, files: set[str],
                     containment: _Containment | None) -> list[Record]:
    records = []
    for lineno, line in enumerate(_read_text(list_path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{list_path}:{lineno}"
        parts = line.split()
        if len(parts) != 2 or not _INTEGER.fullmatch(parts[1]):
            raise DatasetError(f"{where}: expected 'RELPATH PID' (e.g. 0000/0000_000_01_0303morning_0015_0.jpg 0), "
                               f"got {_shown(line.strip(), 200)}")
        rel = _relative_path(parts[0], where, "the image folder")
        pid = _parse_id(parts[1], where, "pid", -1, "renumber the identities")
        fields = posixpath.basename(rel).split("_")
        if len(fields) < 3 or not re.fullmatch(r"[0-9]+", fields[2]) or fields[2].strip("0") == "":
            raise DatasetError(f"{where}: cannot read the camera (3rd '_' field, 1-based) from {_shown(rel, 200)}")
        cam = _parse_id(fields[2], where, "camera (3rd '_' field of the file name)", 1, "renumber the cameras")
        if rel not in files:  # a symlink, a file under a symlinked folder, or missing: resolve it
            if containment is not None:
                containment.check(rel, where)
            if not (image_dir / rel).is_file():
                raise DatasetError(f"{where}: image {image_dir / rel} does not exist; restore it or remove the line")
        if pid != -1:
            records.append(Record(str(image_dir / rel), pid, cam - 1))
    return records


def _parse_msmt(folder: Path, allow_outside: bool = False, **_) -> dict[str, list[Record]]:
    version = _msmt_version(folder)
    if version == "market":
        return _parse_market(folder, allow_outside=allow_outside)
    train_dir, test_dir = (folder / d for d in MSMT_DIRS[version])
    existing = {train_dir: _files_under(train_dir), test_dir: _files_under(test_dir)}
    containment = {d: None if allow_outside else _Containment(d) for d in (train_dir, test_dir)}
    splits = {}
    for split, list_names in MSMT_LISTS.items():
        image_dir = train_dir if split == "train" else test_dir
        splits[split] = [rec for name in list_names
                         for rec in _parse_msmt_list(folder / name, image_dir, existing[image_dir],
                                                     containment[image_dir])]
        if not splits[split]:
            raise DatasetError(f"{folder / list_names[0]}: no images listed, so the {split} split is empty")
    return splits


# ---------------------------------------------------------------- manifest.csv

def _parse_manifest(folder: Path, allow_outside: bool = False, **_) -> dict[str, list[Record]]:
    """DIR/manifest.csv: path,pid,camid,split (extra columns allowed); all or nothing."""
    manifest = folder / "manifest.csv"
    splits: dict[str, list[Record]] = {s: [] for s in SPLITS}
    first_line: dict[str, int] = {}
    containment = None if allow_outside else _Containment(folder)
    reader = csv.reader(io.StringIO(_read_text(manifest), newline=""))
    try:
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
            rel, pid_text, camid_text, split = (row[col[c]].strip() for c in MANIFEST_COLUMNS)
            rel = _relative_path(rel, where, "the manifest's folder")
            pid = _parse_id(pid_text, where, "pid", -1, "renumber the identities")
            camid = _parse_id(camid_text, where, "camid", 0, "renumber the cameras from 0")
            if split not in SPLITS:
                raise DatasetError(f"{where}: split must be one of {', '.join(SPLITS)}, got {_shown(split)}")
            if rel in first_line:
                raise DatasetError(f"{where}: duplicate path {rel!r} (first on line {first_line[rel]})")
            first_line[rel] = reader.line_num
            if containment is not None:
                containment.check(rel, where)
            if not (folder / rel).is_file():
                raise DatasetError(f"{where}: file {folder / rel} does not exist")
            if pid != -1:
                splits[split].append(Record(str(folder / rel), pid, camid))
    except csv.Error as exc:
        raise DatasetError(f"{manifest}:{reader.line_num}: not valid CSV ({exc}); fix the line") from None
    for split, recs in splits.items():
        if not recs:
            raise DatasetError(f"{manifest}: no rows with split={split}, so the {split} split is empty")
    return splits


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    name: str
    aliases: tuple[str, ...]
    folder_names: tuple[str, ...]  # usual names of the unpacked folder, for data-root lookup, in order of preference
    layout: str  # one line, for error messages
    has_layout: Callable[[Path], bool]
    parse: Callable[..., dict[str, list[Record]]]  # parse(folder, allow_outside=False, container=None)
    expected: dict[str, tuple[int, int]] | None = None  # split -> (images, ids), docs/method.md section 6
    cameras: int | None = None  # cameras of the release: a smaller set with as many is a subset
    release: str = ""  # the release's name in messages


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("market1501", ("market",), ("Market-1501-v15.09.15", "Market-1501"), MARKET_LAYOUT,
                _has_market_layout, lambda d, **options: _parse_market(d, pid0_is_distractor=True, **options),
                {"train": (12936, 751), "query": (3368, 750), "gallery": (15913, 751)}, 6, "Market-1501"),
    DatasetSpec("dukemtmcreid", ("duke",), ("DukeMTMC-reID",), MARKET_LAYOUT, _has_market_layout, _parse_market,
                {"train": (16522, 702), "query": (2228, 702), "gallery": (17661, 1110)}, 8, "DukeMTMC-reID"),
    DatasetSpec("msmt17", ("msmt",), ("MSMT17_V1", "MSMT17_V2", "MSMT17"), MSMT_LAYOUT,
                lambda d: _msmt_version(d) is not None, _parse_msmt,
                {"train": (32621, 1041), "query": (11659, 3060), "gallery": (82161, 3060)}, 15, "MSMT17"),
    # expected is per variant: CUHK03_NP
    DatasetSpec("cuhk03", (), ("cuhk03-np", "cuhk03_np", "cuhk03np", "cuhk03-market"), CUHK03_LAYOUT,
                _has_cuhk03_layout, _parse_market, None, 2, "CUHK03"),
    DatasetSpec("manifest", (), (), MANIFEST_LAYOUT, lambda d: (d / "manifest.csv").is_file(), _parse_manifest),
    DatasetSpec("synthetic", (), (), "no files", lambda d: True, lambda d, **_: {}),
]}
ALIASES: dict[str, str] = {alias: spec.name for spec in DATASETS.values() for alias in (spec.name, *spec.aliases)}


def get_spec(name: str) -> DatasetSpec:
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in ALIASES:
        choices = ", ".join(f"{s.name} ({', '.join(s.aliases)})" if s.aliases else s.name for s in DATASETS.values())
        raise DatasetError(f"unknown dataset {_clean(repr(name))}; choose one of {choices}")
    return DATASETS[ALIASES[key]]


def standard_counts(name: str, variant: str | None = None) -> dict[str, tuple[int, int]] | None:
    """split -> (images, ids) of the standard release (cuhk03: of CUHK03-NP `variant`), None when there is none."""
    spec = get_spec(name)
    if spec.name == "cuhk03":
        return CUHK03_NP[variant or CUHK03_VARIANTS[0]]
    return spec.expected


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
    """base if it is the dataset folder, else its child with a usual name for the dataset (the first
    name of spec.name, aliases, folder_names that is there, matched without regard to case)."""
    if base.is_dir() and spec.has_layout(base):
        return base
    children: dict[str, list[Path]] = {}
    for child in sorted(base.iterdir()) if base.is_dir() else []:
        children.setdefault(child.name.lower(), []).append(child)
    for name in (spec.name, *spec.aliases, *spec.folder_names):
        for child in children.get(name.lower(), []):
            if child.is_dir() and _dataset_folder(child, spec) is not None:
                return child
    return None


def resolve_data_root(name: str, data_root: str | os.PathLike | None = None) -> Path | None:
    """Where dataset `name` lives: data_root, else $OAECMLR_DATA, else ./data/<name>.

    data_root and $OAECMLR_DATA may be the dataset folder itself or a folder holding it under a
    usual name (market1501, Market-1501-v15.09.15, cuhk03-np, cuhk03-market...). None for synthetic.
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
    """Parse dataset `name` (aliases allowed); synthetic gives the records of the default `make_synthetic()`.

    cuhk03: the CUHK03-NP variant, labeled or detected, taken from a folder holding both.
    allow_outside: accept images (symlinks, manifest and list entries) that resolve outside the data folder.
    Only file names, lists and manifests are read: no image is opened.
    """
    spec = get_spec(name)
    if spec.name == "synthetic":
        return synthetic_splits()
    try:
        return _load(spec, data_root, cuhk03, allow_outside)
    except DatasetError as exc:
        raise DatasetError(_clean(str(exc))) from None
    except UnicodeDecodeError:
        raise DatasetError(_clean(f"a list or manifest under {data_root} is not UTF-8 text; re-save it as UTF-8")) \
            from None
    except OSError as exc:
        where = exc.filename or data_root or "the data folder"
        raise DatasetError(_clean(f"cannot read {where} ({exc.strerror or exc}); check the permissions")) from None


def _load(spec: DatasetSpec, data_root, cuhk03: str, allow_outside: bool) -> ImageSplits:
    root = Path(os.path.abspath(resolve_data_root(spec.name, data_root)))
    hint = "point --data-root or OAECMLR_DATA at the dataset folder"
    if not root.is_dir():
        raise DatasetError(f"no {spec.name} data at {root}: expected {spec.layout}; {hint}")
    folder = _dataset_folder(root, spec)
    if folder is None:
        raise DatasetError(f"{root} is not a {spec.name} folder: expected {spec.layout}; {hint}")
    variant, how = None, ""
    container = folder  # what every image must resolve inside (CUHK03-NP: the folder of both variants)
    if spec.name == "cuhk03":
        folder, variant, how = _cuhk03_folder(folder, cuhk03)
    parsed = spec.parse(folder, allow_outside=allow_outside, container=container)
    splits = ImageSplits(spec.name, *(sorted(parsed[s], key=lambda r: r.path) for s in SPLITS), root=str(folder))
    if spec.release:
        _refuse_another_release(splits, spec)
    if spec.name == "cuhk03":
        counts = {s: (len(splits.split(s)), num_ids(splits.split(s))) for s in SPLITS}
        if variant is None:
            variant, how = _cuhk03_variant_by_counts(counts, cuhk03)
        splits.variant = variant
        if variant != cuhk03:
            _note(f"cuhk03: {folder} is the {variant} variant of CUHK03-NP (by {how}); data.cuhk03={cuhk03} only "
                  "chooses between labeled/ and detected/ in a folder holding both")
        _compare_cuhk03(splits, counts, variant)
    else:
        _warn_if_unusual(splits, spec)
    return splits


# ---------------------------------------------------------------- which release a folder looks like

# What the file names of a release look like: 0002_c1s1_000451_03.jpg, 0001_c2_f0046182.jpg, 0001_c1_1.png.
RELEASE_NAMES = {
    "market1501": re.compile(r"(-1|\d{4})_c[1-6]s\d_\d{6}_\d{2}\.jpg", re.ASCII),
    "dukemtmcreid": re.compile(r"\d{4}_c[1-8]_f\d{7}\.jpg", re.ASCII),
    "cuhk03": re.compile(r"\d{4}_c[12]_\d+\.png", re.ASCII),  # CUHK03-NP as released
}
SHORT_NAMES = {"market1501": "market", "dukemtmcreid": "duke"}  # as presets and `data check` know them
NAME_SHARE = 0.9  # of the file names that must look like a release's for the names to decide
JUDGE_MIN_IMAGES = 100  # below, Market-style names and a few cameras cannot tell a small subset from another release


def recognise(splits: ImageSplits) -> tuple[str, str] | None:
    """(dataset name, why) of the release a parsed folder looks like, or None when it looks like none.

    Duke's and CUHK03-NP's file names are their own. Market-style names (`0002_c1s1_000451_03.jpg`)
    are also what CUHK03 converted to the Market layout uses, so for them the camera count decides:
    two cameras is CUHK03, three to six Market-1501, in a folder of at least `JUDGE_MIN_IMAGES`
    images. Cameras beyond c8 exist only in MSMT17 (15)."""
    records = [r for s in SPLITS for r in splits.split(s)]
    if not records:
        return None
    cameras = len({r.camid for r in records})
    names = [os.path.basename(r.path) for r in records]

    def share(dataset: str) -> float:
        return sum(RELEASE_NAMES[dataset].fullmatch(n) is not None for n in names) / len(names)

    def names_like(dataset: str) -> str:
        example = next(n for n in names if RELEASE_NAMES[dataset].fullmatch(n))
        return f"file names such as {example}, {cameras} camera{'s' if cameras > 1 else ''}"

    for dataset in ("dukemtmcreid", "cuhk03"):
        if share(dataset) >= NAME_SHARE:
            return dataset, names_like(dataset)
    if max(r.camid for r in records) + 1 > DATASETS["dukemtmcreid"].cameras:
        return "msmt17", f"camera numbers up to c{max(r.camid for r in records) + 1}; only MSMT17 has more than 8"
    if share("market1501") >= NAME_SHARE and len(records) >= JUDGE_MIN_IMAGES:
        if cameras <= DATASETS["cuhk03"].cameras:
            return "cuhk03", (f"{names_like('market1501')} in {len(records):,} images: CUHK03 converted to the "
                              "Market layout")
        return "market1501", names_like("market1501")
    return None


def _refuse_another_release(splits: ImageSplits, spec: DatasetSpec) -> None:
    """A folder of another release is refused in one line that names the release it looks like."""
    looks = recognise(splits)
    if looks is None or looks[0] == spec.name:
        return
    other = DATASETS[looks[0]]
    raise DatasetError(f"{splits.root} looks like {other.release} ({looks[1]}), not {spec.release}: use the dataset "
                       f"{SHORT_NAMES.get(other.name, other.name)} for it, or point --data-root at the {spec.release} "
                       "folder")


def _note(message: str) -> None:
    warnings.warn(_clean(message), DatasetNote, stacklevel=4)  # _note, _load, load_dataset, its caller


def _compare_cuhk03(splits: ImageSplits, counts: dict[str, tuple[int, int]], variant: str) -> None:
    """Nothing for the standard sizes; a note for a subset (no split larger); else a warning per split."""
    standard = CUHK03_NP[variant]
    if counts == standard:
        return
    if all(counts[s][0] <= standard[s][0] and counts[s][1] <= standard[s][1] for s in SPLITS):
        (images, ids), *rest = (counts[s] for s in SPLITS)
        have = ", ".join([f"train {images:,} images / {ids:,} ids",
                          *(f"{s} {n:,} / {i:,}" for s, (n, i) in zip(SPLITS[1:], rest))])
        full = ", ".join(f"{standard[s][0]:,} / {standard[s][1]:,}" for s in SPLITS)
        warnings.warn(_clean(f"cuhk03: {splits.root} is a subset of CUHK03-NP {variant}: {have} (the full "
                             f"{variant} set: {full}); fine for experiments, but its scores are not comparable "
                             "with published CUHK03-NP numbers"), DatasetNote, stacklevel=4)
        return
    _warn_counts(splits, standard, f"cuhk03 (CUHK03-NP {variant})", stacklevel=5)


def _warn_if_unusual(splits: ImageSplits, spec: DatasetSpec) -> None:
    """Nothing for the standard sizes; a note for a subset (no split larger, every camera of the
    release present); else a warning per split."""
    expected = spec.expected or {}
    counts = {s: (len(splits.split(s)), num_ids(splits.split(s))) for s in expected}
    if counts == expected:
        return
    cameras = len({r.camid for s in SPLITS for r in splits.split(s)})
    if (expected and spec.cameras == cameras
            and all(counts[s][0] <= expected[s][0] and counts[s][1] <= expected[s][1] for s in expected)):
        have = ", ".join(f"{s} {n:,} images / {i:,} ids" for s, (n, i) in counts.items())
        full = ", ".join(f"{expected[s][0]:,} / {expected[s][1]:,}" for s in expected)
        _note(f"{spec.name}: {splits.root} is a subset of {spec.release} with all {cameras} cameras: {have} (the "
              f"full release: {full}); fine for experiments, but its scores are not comparable with published "
              f"{spec.release} numbers")
        return
    _warn_counts(splits, expected, spec.name, stacklevel=5)


def _warn_counts(splits: ImageSplits, expected: dict[str, tuple[int, int]], label: str, stacklevel: int) -> None:
    for split, (images, ids) in expected.items():
        recs = splits.split(split)
        if (len(recs), num_ids(recs)) != (images, ids):
            warnings.warn(_clean(f"{label} {split}: {len(recs):,} images / {num_ids(recs):,} ids, but the standard "
                                 f"release has {images:,} / {ids:,}; results will not match published numbers"),
                          DatasetCountWarning, stacklevel=stacklevel)
