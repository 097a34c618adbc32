"""Configs as TOML: reading files, setting dotted keys with type checks, writing a run's
config.toml, and reading back the config.toml of a run written by an older version."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

from oaecmlr.config.settings import Config
from oaecmlr.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NOT_SETTINGS = ("preset", "pretrain")  # a preset's description, and its `oaecmlr pretrain` tables


TOML_LIMIT = 1024 * 1024  # bytes of a config file (a full one is about 2 KB)


def read_toml(path: str | Path | Traversable) -> dict[str, Any]:
    """A TOML file (a path, or a preset inside the package) as nested dicts; ConfigError, in one
    line, for a file that is missing, not a regular file (a FIFO would block), larger than
    TOML_LIMIT, not UTF-8, not TOML or nested too deep."""
    path = Path(path) if isinstance(path, str) else path
    data = _regular_file_bytes(path) if isinstance(path, Path) else _package_file_bytes(path)
    if len(data) > TOML_LIMIT:
        raise ConfigError(f"{path} is larger than {TOML_LIMIT:,} bytes: not a config file")
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not valid TOML: its tables or arrays are nested too deep") from None


def _regular_file_bytes(path: Path) -> bytes:
    """At most TOML_LIMIT + 1 bytes of a regular file, opened without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ConfigError(f"{path} is not a regular file; give a .toml file")
        try:
            return f.read(TOML_LIMIT + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {path} ({exc.strerror or exc})") from None


def _package_file_bytes(path: Traversable) -> bytes:
    """A preset inside the package (importlib.resources), where no file descriptor may exist."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return path.read_bytes()


def settings_of(mapping: dict[str, Any], source: str) -> dict[str, Any]:
    """The {"section.key": value} settings of a nested TOML mapping (its [preset]/[pretrain.*] left out)."""
    out = {}
    for section, values in mapping.items():
        if section in NOT_SETTINGS:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: top-level key {section!r} must be a [section]")
        out.update({f"{section}.{key}": value for key, value in values.items()})
    return out


def set_value(config: Config, dotted: str, value: Any, source: str = "--set") -> None:
    """Set one dotted key, checking that it exists and converting `value` to its type."""
    section_name, _, key = dotted.partition(".")
    section = getattr(config, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not key:
        names = ", ".join(f.name for f in dataclasses.fields(config))
        raise ConfigError(f"{source}: unknown key {dotted!r}; sections are {names}")
    fields = {f.name for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown key {dotted!r}{_did_you_mean(key, fields, section_name)}; "
                          f"{section_name} has {', '.join(sorted(fields))}")
    setattr(section, key, coerce(getattr(section, key), value, dotted, source))


def _did_you_mean(key: str, fields: set[str], section: str) -> str:
    from difflib import get_close_matches

    close = get_close_matches(key, sorted(fields), n=1)
    return f" (did you mean {section}.{close[0]}?)" if close else ""


TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def coerce(current: Any, value: Any, dotted: str, source: str) -> Any:
    """`value` as the type of `current` (strings from --set are parsed); ConfigError if it is not one."""
    kind = type(current)
    expects = f"{source}: {dotted} expects {TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}"
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                raise ConfigError(expects)
            return text in ("true", "1", "yes", "on")
        try:
            value = kind(value)
        except (ValueError, OverflowError):
            raise ConfigError(expects) from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(expects)
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"{source}: {dotted} must be a finite number, got {value!r}")
    return value


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. --set oae.rho=0), got {text!r}")
    return key.strip(), value.strip()


# Settings added later with another default: a run written before them keeps the behaviour it had.
RETIRED = {"train.sync_bn"}
LEGACY = {"train.bn_group": 0, "data.sampler": "distinct", "data.resize": "bilinear"}


def config_from_dict(mapping: dict[str, Any]) -> Config:
    """The Config of a run folder's config.toml. A run written before `train.bn_group` existed
    keeps the behaviour of the code that wrote it: whole-batch BatchNorm, the distinct-images
    sampler, bilinear resizing, and bf16 extraction whenever train.amp was on."""
    settings = {k: v for k, v in settings_of(mapping, "config.toml").items() if k not in RETIRED}
    if "train.bn_group" not in settings:
        settings = {**LEGACY, "train.amp_extract": settings.get("train.amp", True), **settings}
    config = Config()
    for dotted, value in settings.items():
        set_value(config, dotted, value, "config.toml")
    return config


def to_toml(config: Config) -> str:
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)  # newlines, tabs, escapes
    return f'"{text}"'
