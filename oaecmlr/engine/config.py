"""The run configuration: typed sections, TOML presets, `--set key=value` overrides.

Only the engine reads a Config; it hands plain values to the core. Precedence, lowest first:
built-in defaults < preset `experiments/<name>.toml` < `--config FILE` < CLI flags < `--set`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oaecmlr.engine.bn_plan import RUNNING, plan_batchnorm

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad preset, config file or override; the message says what and how to fix it."""


@dataclass
class RunSection:
    kind: str = "usl"  # "usl" (unsupervised) or "supervised" (oaecmlr pretrain)
    seed: int = 0
    epochs: int = 50
    iterations: int = 200  # training iterations per epoch
    eval_every: int = 10
    log_every: int = 10  # iterations between iteration events
    gpus: str = "cpu"  # "cpu", "0", "0,1", "cpu,cpu"
    threads: int = 0  # CPU threads for torch (0 = leave torch's default)


@dataclass
class DataSection:
    dataset: str = "market1501"
    root: str = ""  # empty: OAECMLR_DATA or ./data/<dataset>
    height: int = 256
    width: int = 128
    num_ids: int = 16  # P identities per batch
    num_instances: int = 16  # K images per identity
    sampler: str = "reference"  # PK positives: "reference" (RandomMultipleGallerySampler) or "distinct"
    resize: str = "bicubic"  # PIL filter into the image cache: "bicubic" (the reference) or "bilinear"
    eval_batch: int = 256
    cache_dir: str = ""  # empty: OAECMLR_CACHE or ~/.cache/oaecmlr
    holdout_ids: int = 0  # > 0: evaluate on this many held-out training ids, never on the test split
    flip_p: float = 0.5
    pad: int = 10
    erase_p: float = 0.5
    image_cache: str = "auto"  # on a GPU: auto (device memory when it fits, else pinned host), device, host
    device_reserve_gb: float = 24.0  # GPU memory `auto` leaves free for training
    # synthetic dataset size (dataset = "synthetic")
    synthetic_ids: int = 100
    synthetic_test_ids: int = 50
    synthetic_cams: int = 4
    synthetic_images: int = 4  # per identity and camera
    synthetic_seed: int = 0


@dataclass
class ModelSection:
    arch: str = "resnet50"
    pretrained: str = ""  # torchvision-format weights file
    init: str = ""  # a run (its best.pt) or a checkpoint to start from (UDA stage 2)
    pooling: str = "gem"
    last_stride: int = 1


@dataclass
class OptimSection:
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    step_size: int = 20  # epochs between lr x gamma
    gamma: float = 0.1


@dataclass
class ClusterSection:
    eps: float = 0.6
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    knn_backend: str = "auto"


@dataclass
class OAESection:
    enabled: bool = True
    k: int = 5
    rho: float = 1.0
    rounds: int = 1


@dataclass
class CMLRSection:
    enabled: bool = True
    lam: float = 0.5
    tau_r: float = 0.05
    top_k: int = 0  # 0 = all centroids
    weight: float = 1.0


@dataclass
class MemorySection:
    temperature: float = 0.05
    momentum: float = 0.1
    mode: str = "mean"


@dataclass
class SupervisedSection:
    """`oaecmlr pretrain`: label-smoothed CE + batch-hard triplet (UDA stage 1)."""

    label_smoothing: float = 0.1
    triplet_margin: float = 0.3


@dataclass
class TrainSection:
    amp: bool = True  # bf16 autocast of the training step on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX)
    amp_extract: bool = False  # bf16 also for clustering and test features (the reference extracts in float32)
    channels_last: bool = True
    bn_group: int = 64  # images per BatchNorm statistics group (the reference: 4 DataParallel GPUs); 0 = global batch
    bn_running: str = "first"  # running statistics of the first group (as DataParallel's replica 0) or the "mean"
    dist_timeout: float = 300.0  # seconds before a hung worker fails the run


@dataclass
class Config:
    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    oae: OAESection = field(default_factory=OAESection)
    cmlr: CMLRSection = field(default_factory=CMLRSection)
    memory: MemorySection = field(default_factory=MemorySection)
    supervised: SupervisedSection = field(default_factory=SupervisedSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        return {f"{section}.{key}": value for section, values in self.to_dict().items() for key, value in values.items()}


PRESET_ALIASES = {"market1501": "market", "dukemtmcreid": "duke", "msmt": "msmt17"}


def presets_dir() -> Path:
    return Path(os.environ.get("OAECMLR_PRESETS", Path(__file__).resolve().parents[2] / "experiments"))


def available_presets() -> list[str]:
    folder = presets_dir()
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def apply_mapping(config: Config, mapping: dict[str, Any], source: str) -> None:
    """Set the values of a nested {section: {key: value}} mapping, checking names and types."""
    for section, values in mapping.items():
        if section in ("preset", "pretrain"):  # a preset's description; its `oaecmlr pretrain` overrides
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: top-level key {section!r} must be a [section]")
        for key, value in values.items():
            set_value(config, f"{section}.{key}", value, source)


def set_value(config: Config, dotted: str, value: Any, source: str = "--set") -> None:
    section_name, _, key = dotted.partition(".")
    section = getattr(config, section_name, None)
    if section is None or not dataclasses.is_dataclass(section) or not key:
        raise ConfigError(f"{source}: unknown key {dotted!r}; sections are {', '.join(f.name for f in dataclasses.fields(config))}")
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown key {dotted!r}; {section_name} has {', '.join(fields)}")
    setattr(section, key, _coerce(getattr(section, key), value, dotted, source))


def _coerce(current: Any, value: Any, dotted: str, source: str) -> Any:
    kind = type(current)
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        try:
            if kind is bool:
                if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError
                return text in ("true", "1", "yes", "on")
            return kind(value)
        except ValueError:
            raise ConfigError(f"{source}: {dotted} expects a {kind.__name__}, got {value!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {dotted} expects a {kind.__name__}, got {value!r}")
    return value


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value (e.g. --set oae.rho=0), got {text!r}")
    return key.strip(), value.strip()


def load_config(preset: str | None = None, config_file: str | None = None,
                overrides: dict[str, Any] | None = None, sets: list[str] | None = None,
                supervised: bool = False) -> Config:
    """Build a Config from a preset name, a TOML file, explicit flag overrides and --set strings.

    With `supervised`, the `[pretrain.*]` tables of the preset and file apply too (oaecmlr pretrain).
    """
    config = Config()
    if supervised:
        config.run.kind = "supervised"
    sources = []
    if preset:
        name = PRESET_ALIASES.get(preset, preset)
        path = presets_dir() / f"{name}.toml"
        if not path.is_file():
            choices = ", ".join(available_presets()) or "(none found)"
            raise ConfigError(f"unknown dataset or preset {preset!r}; presets: {choices}; or use --config FILE.toml")
        sources.append((read_toml(path), str(path)))
    if config_file:
        sources.append((read_toml(config_file), config_file))
    for mapping, source in sources:
        apply_mapping(config, mapping, source)
        if supervised:
            apply_mapping(config, mapping.get("pretrain", {}), f"{source} [pretrain]")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_value(config, dotted, value, "option")
    for text in sets or []:
        key, value = parse_override(text)
        set_value(config, key, value)
    validate(config)
    return config


def validate(config: Config) -> None:
    checks = [
        (config.run.kind in ("usl", "supervised"), "run.kind must be 'usl' or 'supervised'"),
        (config.run.epochs >= 0, "run.epochs must be >= 0"),
        (config.run.iterations >= 1, "run.iterations must be >= 1"),
        (config.run.eval_every >= 1, "run.eval_every must be >= 1"),
        (config.run.log_every >= 1, "run.log_every must be >= 1"),
        (0 < config.cluster.eps < 1, "cluster.eps must be in (0, 1)"),
        (config.cluster.min_samples >= 1, "cluster.min_samples must be >= 1"),
        (config.oae.rho >= 0, "oae.rho must be >= 0"),
        (0 <= config.cmlr.lam <= 1, "cmlr.lam must be in [0, 1]"),
        (config.cmlr.tau_r > 0, "cmlr.tau_r must be > 0"),
        (config.memory.mode in ("mean", "hard"), "memory.mode must be 'mean' or 'hard'"),
        (config.data.image_cache in ("auto", "device", "host"), "data.image_cache must be 'auto', 'device' or 'host'"),
        (config.data.num_ids >= 1 and config.data.num_instances >= 1, "data.num_ids and data.num_instances must be >= 1"),
        (config.data.sampler in SAMPLERS, f"data.sampler must be one of {', '.join(SAMPLERS)}"),
        (config.data.resize in RESIZE_FILTERS, f"data.resize must be one of {', '.join(RESIZE_FILTERS)}"),
        (config.train.bn_running in RUNNING, f"train.bn_running must be one of {', '.join(RUNNING)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    world = max(1, len([g for g in config.run.gpus.split(",") if g.strip()]))
    batch = config.data.num_ids // world * world * config.data.num_instances
    try:
        plan_batchnorm(config.train.bn_group, batch, world)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


SAMPLERS = ("reference", "distinct")
RESIZE_FILTERS = ("bicubic", "bilinear")
# Settings added later with another default: a run written before them keeps the behaviour it had.
RETIRED = {"train": ("sync_bn",)}
LEGACY = {("train", "bn_group"): 0, ("data", "sampler"): "distinct", ("data", "resize"): "bilinear"}


def with_legacy_defaults(mapping: dict[str, Any]) -> dict[str, Any]:
    """A stored run config as its run understood it: retired keys dropped, keys it predates set to
    the behaviour of the code that wrote it (bf16 extraction followed train.amp then)."""
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in mapping.items()}
    for section, keys in RETIRED.items():
        for key in keys:
            out.get(section, {}).pop(key, None)
    if "train" in out and "bn_group" not in out["train"]:  # written before train.bn_group existed
        for (section, key), value in LEGACY.items():
            out.setdefault(section, {}).setdefault(key, value)
        out["train"].setdefault("amp_extract", out["train"].get("amp", True))
    return out


def config_from_dict(mapping: dict[str, Any]) -> Config:
    """The Config of a run folder's config.toml (older runs keep the behaviour they were run with)."""
    config = Config()
    apply_mapping(config, with_legacy_defaults(mapping), "config.toml")
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
    return f'"{text}"'
