"""From what a user typed to a checked Config: the one place that resolves presets, for the CLI and
the dashboard alike.

Precedence, lowest first: built-in defaults < the preset (`oaecmlr/presets/NAME.toml`, package data
read with importlib.resources, so a wheel has them) < `--config
FILE` (key by key: a file that sets one key leaves its neighbours alone) < options typed on the
command line (a dataset named instead of a preset is one) < `--set key=value`. Whenever a file
would override something typed, or a `--set` overrides an option, the result says so in a note.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from difflib import get_close_matches
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oaecmlr.config.checks import dataset_name, validate
from oaecmlr.config.checks import notes as setting_notes
from oaecmlr.config.files import parse_override, read_toml, set_value, settings_of
from oaecmlr.config.settings import DATASETS, Config
from oaecmlr.errors import ConfigError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PRESET_ALIASES = {"market1501": "market", "dukemtmcreid": "duke", "msmt": "msmt17"}

# Suffixes, applied right after the preset in the order of SUFFIXES (so --config, options and --set
# still win); they touch disjoint keys and compose: `market+cam+cpu`.
# `+cam`: the camera-aware pipeline on any preset or dataset. The same as
#   --set cluster.camera_jaccard=true --set cluster.camera_norm=mean --set memory.camera_proxies=true
CAMERA_SUFFIX = "+cam"
CAMERA_AWARE = {"cluster.camera_jaccard": True, "cluster.camera_norm": "mean", "memory.camera_proxies": True}
# `+cpu`: the 2-CPU-core budget on any preset. It keeps the preset's dataset and method (OAE, CMLR,
# memory, clustering rule) and swaps in MobileNetV2 (ImageNet weights from --pretrained) at 128 x 64,
# PK 16 x 4, and the epochs, iterations and eps chosen on held-out Market identities (docs/results.md).
CPU_SUFFIX = "+cpu"
CPU_BUDGET = {
    "run.gpus": "cpu", "run.epochs": 10, "run.iterations": 50, "run.eval_every": 2, "run.log_every": 5,
    "model.arch": "mobilenet_v2", "model.pooling": "avg",
    "data.height": 128, "data.width": 64, "data.num_ids": 16, "data.num_instances": 4, "data.eval_batch": 128,
}
SUFFIXES = {CAMERA_SUFFIX: CAMERA_AWARE, CPU_SUFFIX: CPU_BUDGET}


def presets_dir() -> Traversable:
    """The preset files: the package's own (`oaecmlr.presets`), or the folder $OAECMLR_PRESETS names."""
    override = os.environ.get("OAECMLR_PRESETS")
    return Path(override) if override else resources.files("oaecmlr.presets")


def available_presets() -> list[str]:
    folder = presets_dir()
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir()
                  if p.name.endswith(".toml") and p.is_file()) if folder.is_dir() else []


def preset_path(name: str) -> Traversable | None:
    path = presets_dir() / f"{PRESET_ALIASES.get(name, name)}.toml"
    return path if path.is_file() else None


def preset_description(name: str) -> str:
    path = preset_path(name)
    return str(read_toml(path).get("preset", {}).get("description", "")) if path else ""


@dataclass
class Resolved:
    config: Config
    preset: str | None  # None when a bare dataset was named
    notes: list[str] = field(default_factory=list)  # one line each, for the user
    promise: str = ""  # what the preset promises (its [preset] promise), when nothing changes the preset


def resolve_config(target: str, *, config_file: str | None = None, options: dict[str, Any] | None = None,
                   sets: list[str] | tuple[str, ...] = (), supervised: bool = False) -> Resolved:
    """The Config for `oaecmlr run TARGET ...`: TARGET is a preset or a dataset name."""
    name, suffixes = split_suffixes(target)
    preset = name if preset_path(name) else None
    options = {k: v for k, v in (options or {}).items() if v is not None}
    typed_dataset = dataset_name(name)  # a dataset typed on the command line wins over any file, preset or not
    if preset is None and typed_dataset is None:
        raise ConfigError(unknown_target(name))
    if typed_dataset:
        options = {"data.dataset": typed_dataset, **options}
    config = Config()
    if supervised:
        config.run.kind = "supervised"
    notes: list[str] = []
    layers = []
    preset_file = read_toml(preset_path(preset)) if preset else {}
    if preset:
        layers.append((preset_file, f"the {preset} preset"))
    for suffix in suffixes:
        layers.append((nested(SUFFIXES[suffix]), suffix))
    if config_file:
        layers.append((read_toml(config_file), config_file))
    chosen: dict[str, tuple[Any, str]] = {}
    for mapping, source in layers:
        values = settings_of(mapping, source)
        if supervised:
            values.update(settings_of(mapping.get("pretrain", {}), f"{source} [pretrain]"))
        for dotted, value in values.items():
            previous = chosen.get(dotted)
            if dotted == "data.dataset" and preset and not typed_dataset and previous and previous[0] != value:
                notes.append(f"{source} sets data.dataset = {value!r}, replacing {previous[0]!r} of {previous[1]}")
            set_value(config, dotted, value, source)
            chosen[dotted] = (config.get(dotted), source)
    for dotted, value in options.items():
        set_value(config, dotted, value, "option")
        previous = chosen.get(dotted)
        if previous and previous[1] == config_file and previous[0] != config.get(dotted):
            notes.append(f"{config_file} sets {dotted} = {previous[0]!r}; the command line's {config.get(dotted)!r} wins")
        chosen[dotted] = (config.get(dotted), "the command line")
    for text in sets:
        dotted, value = parse_override(text)
        set_value(config, dotted, value)
        previous = chosen.get(dotted)
        if previous and previous[1] == "the command line" and previous[0] != config.get(dotted):
            notes.append(f"--set {dotted}={value} replaces the option's {previous[0]!r}")
    validate(config)
    label = (preset or config.data.dataset) + "".join(suffixes) if suffixes else preset
    as_measured = preset and not (suffixes or config_file or sets or supervised or set(options) - {"run.seed"})
    promise = str(preset_file.get("preset", {}).get("promise", "")) if as_measured else ""
    return Resolved(config, label, notes + setting_notes(config), promise)


def split_suffixes(target: str) -> tuple[str, list[str]]:
    """"market+cpu+cam" -> ("market", ["+cam", "+cpu"]): the name and its suffixes in SUFFIXES order."""
    name, *rest = target.strip().split("+")
    typed = [f"+{s.strip()}" for s in rest]
    for suffix in typed:
        if suffix not in SUFFIXES:
            raise ConfigError(f"unknown suffix {suffix!r} in {target!r}; suffixes: {', '.join(SUFFIXES)} "
                              f"(for example market+cam+cpu)")
    if len(set(typed)) != len(typed):
        raise ConfigError(f"{target!r} names a suffix twice; write each once, for example market+cam+cpu")
    return name.strip(), [s for s in SUFFIXES if s in typed]


def nested(dotted: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"a.b": 1} as the TOML tables {"a": {"b": 1}}."""
    tables: dict[str, dict[str, Any]] = {}
    for key, value in dotted.items():
        section, name = key.split(".", 1)
        tables.setdefault(section, {})[name] = value
    return tables


def unknown_target(name: str) -> str:
    presets = available_presets()
    close = get_close_matches(name, presets + list(DATASETS), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"unknown preset or dataset {name!r}; {hint}presets: {', '.join(presets) or '(none found)'}; "
            f"datasets: {', '.join(DATASETS)}; or pass --config FILE.toml")


def load_config(preset: str | None = None, config_file: str | None = None,
                overrides: dict[str, Any] | None = None, sets: list[str] | None = None,
                supervised: bool = False) -> Config:
    """A Config from a preset name (None: the built-in defaults), a TOML file, option overrides and
    --set strings (for code and tests; the CLI goes through `resolve_config`)."""
    if preset is not None and preset_path(preset) is None:
        raise ConfigError(unknown_target(preset))
    if preset is None:
        config = Config()
        if supervised:
            config.run.kind = "supervised"
        for mapping, source in ([(read_toml(config_file), config_file)] if config_file else []):
            for dotted, value in settings_of(mapping, source).items():
                set_value(config, dotted, value, source)
        for dotted, value in (overrides or {}).items():
            if value is not None:
                set_value(config, dotted, value, "option")
        for text in sets or []:
            set_value(config, *parse_override(text))
        validate(config)
        return config
    return resolve_config(preset, config_file=config_file, options=overrides, sets=sets or [],
                          supervised=supervised).config
