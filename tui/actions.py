"""What the dashboard's keys do to runs, without Textual: launch, clone, stop, resume.

Launching mirrors `oaecmlr run`: a preset name loads the preset; any other dataset name starts
from the defaults with `data.dataset` set. Errors are the engine's own (ConfigError, DatasetError,
RunError, ...); the screens turn them into notifications.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oaecmlr.engine.config import (
    PRESET_ALIASES,
    Config,
    available_presets,
    config_from_dict,
    load_config,
    read_toml,
)
from oaecmlr.store.runs import RunDir, request_stop

# Settings that have fields of their own in the form (the rest go into the overrides).
FORM_KEYS = ("data.root", "run.gpus")
DATASETS = ("synthetic", "manifest")


def known_errors() -> tuple[type[Exception], ...]:
    from oaecmlr.data.records import DatasetError
    from oaecmlr.engine.config import ConfigError
    from oaecmlr.engine.session import RunFailed
    from oaecmlr.store.checkpoint import CheckpointError
    from oaecmlr.store.runs import RunError

    return ConfigError, DatasetError, RunError, CheckpointError, RunFailed, OSError


@dataclass(frozen=True)
class LaunchRequest:
    preset: str = "demo"
    data_root: str = ""
    gpus: str = ""
    name: str = ""
    overrides: tuple[str, ...] = ()


def parse_overrides(text: str) -> tuple[str, ...]:
    """`key=value` per line or comma-separated; a comma inside a value (run.gpus=0,1) stays."""
    items = []
    for line in text.splitlines():
        for part in re.split(r",\s*(?=[A-Za-z_][\w]*\.[\w.]+\s*=)", line):
            if part.strip():
                items.append(part.strip())
    return tuple(items)


def is_preset(name: str) -> bool:
    return name in available_presets() or name in PRESET_ALIASES


def build_config(request: LaunchRequest) -> tuple[Config, str | None]:
    """The Config of a launch request and the preset it came from (None: a bare dataset)."""
    preset = request.preset.strip()
    if not preset:
        from oaecmlr.engine.config import ConfigError

        raise ConfigError("choose a dataset or preset")
    overrides = {"data.root": request.data_root.strip() or None, "run.gpus": request.gpus.strip() or None}
    if not is_preset(preset):
        overrides["data.dataset"] = preset
    config = load_config(preset if is_preset(preset) else None, None, overrides, list(request.overrides))
    return config, (preset if is_preset(preset) else None)


def launch(request: LaunchRequest, runs_dir: str | None) -> RunDir:
    """Check and start a detached run; returns its folder."""
    from oaecmlr.engine.launch import start_run

    config, preset = build_config(request)
    return start_run(config, request.name.strip() or None, runs_dir, preset=preset, detach=True)


def resume(run: RunDir, runs_dir: str | None) -> RunDir:
    from oaecmlr.engine.launch import resume_run

    return resume_run(str(run.path), runs_dir, detach=True)


def stop(run: RunDir) -> str:
    return request_stop(run)


def _value_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def clone_request(run: RunDir) -> LaunchRequest:
    """A launch request that reproduces `run`: the closest preset (or its bare dataset) plus the
    settings that differ from it as overrides."""
    flat = config_from_dict(read_toml(run.config)).flat()
    candidates = [(p, load_config(p).flat()) for p in available_presets()]
    candidates.append((flat["data.dataset"], load_config(None, overrides={"data.dataset": flat["data.dataset"]}).flat()))

    def differences(base: dict) -> list[str]:
        return [k for k in flat if k not in FORM_KEYS and flat[k] != base.get(k)]

    preset, base = min(candidates, key=lambda c: (len(differences(c[1])), c[0] != flat["data.dataset"]))
    return LaunchRequest(preset=preset, data_root=flat["data.root"], gpus=flat["run.gpus"], name=f"{run.name}-clone",
                         overrides=tuple(f"{k}={_value_text(flat[k])}" for k in differences(base)))
