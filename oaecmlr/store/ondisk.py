"""What a run folder holds, read bounded and checked: the one place where a field read from disk
(status.json, meta.json, a line of events.jsonl) is checked against its type and range before
anything acts on it. `config.toml` is checked by `oaecmlr.config.checks.validate`, as a new run's
config is; the image cache checks its own entries (`oaecmlr.data.cache`).

- Only regular files are opened (a FIFO or a device in place of status.json would block a reader
  forever) and no file or line is read past its limit (`STATUS_LIMIT`, `META_LIMIT`, `LINE_LIMIT`):
  what is larger is skipped with a warning naming the file (and line).
- A field of the wrong type or out of range is dropped with one warning naming the file, the line
  (events) and the field; a JSON document that is not an object is skipped whole. NaN and Infinity
  are no numbers here; every number is finite and bounded, so no reader overflows on a 400-digit
  integer.
- Text fields come back with their control characters escaped (`oaecmlr.formatting.printable`):
  nothing a file holds reaches a terminal as an escape sequence, whichever view shows it.
- Fields this version does not know pass through untouched (a newer writer's); give one a rule
  here before acting on it.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oaecmlr.formatting import printable

STATUS_LIMIT = 64 * 1024  # bytes of status.json (the writer's is under 1 KB)
META_LIMIT = 256 * 1024  # bytes of meta.json (a note of NOTE_LIMIT characters and MAX_TAGS tags fit)
LINE_LIMIT = 1024 * 1024  # bytes of one events.jsonl line (the longest the engine writes is a few KB)
NOTE_LIMIT = 10_000  # characters of a run's note
TAG_LIMIT = 64  # characters of a tag
MAX_TAGS = 100
PID_MAX = 2**22  # Linux's largest pid_max: no process has a larger pid
TIME_MAX = 2.0**36  # unix seconds (the year 4147): a later time is not a clock's
NUMBER_MAX = 1e18  # magnitude of any other float an event may hold
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # integers fit int64 (seeds: uint64)
SHORT_TEXT = 256  # characters of a name-like text (dataset, host, arch...)
LONG_TEXT = 16_384  # characters of a message (a failure, a warning)
MAX_ENTRIES = 1_000  # keys of an object inside an event (timings, size_histogram, provenance...)

Warn = Callable[[str], None]


def silent(message: str) -> None:
    pass


class Refused(ValueError):
    """A file that is not read: not a regular file, or larger than its limit (str: why, one line)."""


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` of them. FileNotFoundError when it is
    absent, Refused when it is a FIFO, a device or a folder, or larger than `limit`; other OSErrors
    as they come. Never blocks: the file is opened non-blocking and checked before it is read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(f"{printable(str(path))} is not a regular file; skipped")
        if info.st_size > limit:
            raise Refused(f"{printable(str(path))} holds {info.st_size:,} bytes, more than the {limit:,} it may; skipped")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:  # it grew since fstat
            raise Refused(f"{printable(str(path))} holds more than the {limit:,} bytes it may; skipped")
        return data
    finally:
        os.close(fd)


def is_regular(path: str | Path) -> bool:
    """Whether `path` is a regular file (after symlinks); False for a FIFO, a device, a folder, nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # one, not one per line as json.loads(..., parse_constant=)


def load_json(data: bytes | str) -> Any:
    """JSON without NaN and Infinity (ValueError, as for any invalid JSON)."""
    return _DECODER.decode(data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data)


def shown(value: Any, limit: int = 40) -> str:
    """repr of a value read from a file, cut to `limit` characters (a 400-digit number stays short)."""
    text = printable(repr(value))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# ---------------------------------------------------------------- rules: (check, what it must be)

Rule = tuple[Callable[[Any], bool], str]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int, high: int) -> Rule:
    return (lambda v: _is_int(v) and low <= v <= high), f"an integer between {low:,} and {high:,}"


def number(low: float, high: float) -> Rule:
    """A finite number in [low, high] (NaN fails every comparison; an int of any size compares exactly)."""
    return ((lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high),
            f"a number between {low:g} and {high:g}")


def text(limit: int) -> Rule:
    return (lambda v: isinstance(v, str) and len(v) <= limit), f"text of at most {limit:,} characters"


def one_of(*choices: str) -> Rule:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


def list_of(rule: Rule, limit: int) -> Rule:
    check, what = rule
    return ((lambda v: isinstance(v, list) and len(v) <= limit and all(check(x) for x in v)),
            f"a list of at most {limit:,} entries, each {what}")


def clean(value: Any) -> Any:
    """A checked value with the control characters of its texts escaped (lists and objects too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {printable(str(k)): clean(v) for k, v in value.items()}
    return value


def checked_fields(raw: dict, rules: dict[str, Rule], where: str, warn: Warn) -> dict[str, Any]:
    """The fields of `raw` that pass their rule (texts escaped); each one that fails is dropped with
    a warning naming `where` and the field. Fields without a rule pass as they are."""
    out = {}
    for key, value in raw.items():
        rule = rules.get(key)
        if rule is None:
            out[key] = value
        elif rule[0](value):
            out[key] = clean(value)
        else:
            warn(f"{where}: field {printable(key)} must be {rule[1]}, got {shown(value)}; ignored")
    return out


def read_object(path: Path, limit: int, warn: Warn) -> dict | None:
    """The JSON object in `path`; None, with a warning, when it is not one or cannot be read (None,
    silently, when it does not exist)."""
    try:
        data = read_regular(path, limit)
    except FileNotFoundError:
        return None
    except Refused as exc:
        warn(str(exc))
        return None
    except OSError as exc:
        warn(f"{printable(str(path))}: cannot be read ({exc.strerror or exc}); skipped")
        return None
    try:
        raw = load_json(data)
    except (ValueError, RecursionError) as exc:
        reason = str(exc) if "finite" in str(exc) else "not valid JSON"
        warn(f"{printable(str(path))}: {reason}; skipped")
        return None
    if not isinstance(raw, dict):
        warn(f"{printable(str(path))}: not a JSON object but {type(raw).__name__}; skipped")
        return None
    return raw


# ---------------------------------------------------------------- status.json

STATES = ("starting", "running", "finished", "failed", "stopped")
PID = integer(1, PID_MAX)
TIME = number(0, TIME_MAX)
STATUS_RULES: dict[str, Rule] = {
    "state": one_of(*STATES), "pid": PID, "supervisor": PID, "workers": list_of(PID, 4096),
    "host": text(SHORT_TEXT), "updated": TIME, "started": TIME, "resumed": TIME,
    "world_size": integer(1, 4096), "error": text(LONG_TEXT),
}


def read_status(path: Path, warn: Warn | None = None) -> dict[str, Any]:
    """status.json with every known field checked ({} when it is absent or unusable)."""
    warn = warn or silent
    raw = read_object(path, STATUS_LIMIT, warn)
    return {} if raw is None else checked_fields(raw, STATUS_RULES, printable(str(path)), warn)


# ---------------------------------------------------------------- meta.json

META_RULES: dict[str, Rule] = {"note": text(NOTE_LIMIT), "tags": list_of(text(TAG_LIMIT), MAX_TAGS)}


def read_meta(path: Path, warn: Warn | None = None) -> dict[str, Any]:
    """The user's note and tags: {"note": str, "tags": [str]} ({} when there is no usable meta.json)."""
    warn = warn or silent
    raw = read_object(path, META_LIMIT, warn)
    if raw is None:
        return {}
    meta = checked_fields(raw, META_RULES, printable(str(path)), warn)
    return {"note": meta.get("note", ""), "tags": list(meta.get("tags", []))}


# ---------------------------------------------------------------- the fields of events

# Fractions (docs/method.md, Logged): in [0, 1], with room for float rounding.
FRACTIONS = {"mAP", "rank1", "rank5", "rank10", "mINP", "purity", "nmi", "cross_camera", "cross_camera_images",
             "oae_precision", "oae_pairwise_precision", "oae_ceiling", "oae_same_camera", "oae_assigned_share",
             "cmlr_mass_clean", "cmlr_mass_mislabelled", "cmlr_auroc", "cmlr_mislabelled"}
COUNTS = {"epoch", "iteration", "total_iterations", "clusters", "outliers_before", "outliers_after", "oae_assigned",
          "oae_passed_neighbourhood", "num_query", "num_gallery", "skipped_queries", "world_size", "per_rank_batch",
          "global_batch", "epochs", "iterations", "from_epoch", "discarded_events", "schema", "rank", "seed",
          "done", "total"}
NON_NEGATIVE = {"seconds", "images_per_s", "lr", "cmlr_entropy", "cmlr_weight", "cmlr_kl", "cameras_per_cluster"}
SHORT_FIELDS = {"kind", "run", "dataset", "arch", "device", "host", "knn_backend", "what", "status", "split"}
EVENT_RULES: dict[str, Rule] = {
    "time": TIME, "pid": PID,
    **{name: number(-1e-6, 1 + 1e-6) for name in FRACTIONS},
    **{name: integer(0, INT_MAX) for name in COUNTS},
    **{name: number(0, NUMBER_MAX) for name in NON_NEGATIVE},
    **{name: text(SHORT_TEXT) for name in SHORT_FIELDS},
}
OBJECT_VALUES: dict[str, Rule] = {  # objects whose values readers compute with
    "timings": number(0, NUMBER_MAX), "size_histogram": integer(0, INT_MAX), "best": number(-NUMBER_MAX, NUMBER_MAX),
}


def _plain(value: Any, depth: int) -> bool:
    """JSON of bounded size and depth, whose numbers are finite and bounded and whose texts are not too long."""
    if value is None or isinstance(value, bool):
        return True
    if _is_int(value):
        return INT_MIN <= value <= INT_MAX
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) <= NUMBER_MAX
    if isinstance(value, str):
        return len(value) <= LONG_TEXT
    if isinstance(value, list):
        return depth > 0 and len(value) <= MAX_ENTRIES and all(_plain(v, depth - 1) for v in value)
    if isinstance(value, dict):
        return (depth > 0 and len(value) <= MAX_ENTRIES
                and all(len(k) <= SHORT_TEXT and _plain(v, depth - 1) for k, v in value.items()))
    return False


def event_value(name: str, value: Any) -> tuple[Any, str | None]:
    """(the value with its texts escaped, None) when a field of an event that has the right type is
    also in range; (None, what it must be) when it is not. Called for every field of every event
    read: the common cases come first."""
    rule = EVENT_RULES.get(name)
    if rule is not None:
        if not rule[0](value):
            return None, rule[1]
        return (printable(value) if isinstance(value, str) else value), None
    if isinstance(value, str):
        return (printable(value), None) if len(value) <= LONG_TEXT else (None, _LONG)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (value, None) if -NUMBER_MAX <= value <= NUMBER_MAX else (None, _MAGNITUDE)  # NaN compares False
    if isinstance(value, dict):
        values = OBJECT_VALUES.get(name)
        if values is not None and not all(values[0](v) for v in value.values()):
            return None, f"an object whose values are each {values[1]}"
        if not _plain(value, 3):
            return None, _OBJECT
        return clean(value), None
    return value, None


_LONG = f"text of at most {LONG_TEXT:,} characters"
_MAGNITUDE = f"a number of magnitude at most {NUMBER_MAX:g}"
_OBJECT = (f"an object of at most {MAX_ENTRIES:,} entries, 3 levels deep, of finite numbers and texts of at most "
           f"{LONG_TEXT:,} characters")


def range_check(name: str, hint: Any) -> Callable[[Any], tuple[Any, str | None]] | None:
    """`event_value` for field `name`, specialised once per field of an event class (`hint`: its
    declared type, whose check came first); None when a value of that type needs none (a bool)."""
    rule = EVENT_RULES.get(name)
    if rule is not None:
        ok, what = rule
        if hint is str:
            return lambda v: (printable(v), None) if ok(v) else (None, what)
        return lambda v: (v, None) if ok(v) else (None, what)
    if hint in (int, float):
        return lambda v: (v, None) if -NUMBER_MAX <= v <= NUMBER_MAX else (None, _MAGNITUDE)
    if hint is bool:
        return None
    return lambda v: event_value(name, v)
