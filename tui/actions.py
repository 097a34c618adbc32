"""What the dashboard's keys do to runs, without Textual: launch, clone, stop, resume.

Launching resolves the form exactly as `oaecmlr run` resolves its command line
(`oaecmlr.config.resolve_config`). Errors are the project's known ones (`OaecmlrError`); the
screens turn them into notifications.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oaecmlr.config import (
    Resolved,
    available_presets,
    config_from_dict,
    load_config,
    read_toml,
    resolve_config,
)
from oaecmlr.errors import ConfigError, OaecmlrError
from oaecmlr.store.runs import RunDir, request_stop

# Settings that have fields of their own in the form (the rest go into the overrides).
FORM_KEYS = ("data.root", "run.gpus")
DATASETS = ("synthetic", "manifest")
KNOWN_ERRORS = (OaecmlrError, OSError)


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


def build_config(request: LaunchRequest) -> Resolved:
    """The checked Config of a launch request, the preset it came from and the notes for the user."""
    target = request.preset.strip()
    if not target:
        raise ConfigError("choose a dataset or preset")
    options = {"data.root": request.data_root.strip() or None, "run.gpus": request.gpus.strip() or None}
    return resolve_config(target, options=options, sets=list(request.overrides))


def launch(request: LaunchRequest, runs_dir: str | None) -> tuple[RunDir, list[str]]:
    """Check and start a detached run; returns its folder and the notes on how it was resolved.
    The settings are checked before the engine (and torch, seconds to import) is loaded, so a bad
    preset or key is reported at once."""
    resolved = build_config(request)
    from oaecmlr.engine.launch import start_run

    run = start_run(resolved.config, request.name.strip() or None, runs_dir, preset=resolved.preset, detach=True)
    return run, resolved.notes


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
