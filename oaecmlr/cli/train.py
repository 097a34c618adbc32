"""`oaecmlr run`, `pretrain` and `resume`: the typed options resolved into a Config (notes on what
a file overrode), then the engine, which is imported only here."""

from __future__ import annotations

import os
from typing import Any

from oaecmlr.cli.common import console, err_console, escape
from oaecmlr.config import Resolved, resolve_config


def option_values(*, data_root: str | None = None, arch: str | None = None, pretrained: str | None = None,
                  init: str | None = None, epochs: int | None = None, seed: int | None = None,
                  gpus: str | None = None) -> dict[str, Any]:
    """The settings the typed options stand for (None: not typed)."""
    return {"data.root": data_root, "model.arch": arch, "model.pretrained": pretrained, "model.init": init,
            "run.epochs": epochs, "run.seed": seed, "run.gpus": gpus}


def resolve(*, target: str, config_file: str | None, sets: list[str] | None, options: dict[str, Any],
            supervised: bool = False, quiet: bool = False) -> Resolved:
    resolved = resolve_config(target, config_file=config_file, options=options, sets=sets or [], supervised=supervised)
    if not quiet:
        for note in resolved.notes:
            err_console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    return resolved


def other_torchrun_worker() -> bool:
    """A torchrun worker other than rank 0: it trains and says nothing (rank 0 speaks for the run)."""
    return os.environ.get("RANK", "0") != "0"


def train(*, target: str, config_file: str | None, sets: list[str] | None, options: dict[str, Any],
          runs_dir: str | None, name: str | None, detach: bool, supervised: bool) -> None:
    resolved = resolve(target=target, config_file=config_file, sets=sets, options=options, supervised=supervised,
                       quiet=other_torchrun_worker())
    from oaecmlr.cli.console import ConsoleReporter
    from oaecmlr.engine.launch import start_run

    reporter = None if detach else ConsoleReporter(err_console)
    run = start_run(resolved.config, name, runs_dir, preset=resolved.preset, listener=reporter, detach=detach)
    if detach:
        console.print(run.name, highlight=False)
    elif not other_torchrun_worker():
        err_console.print(f"run folder: {escape(str(run.path))}", highlight=False, soft_wrap=True)


def resume(*, run_name: str, runs_dir: str | None, epochs: int | None, detach: bool, gpus: str | None = None) -> None:
    from oaecmlr.cli.console import ConsoleReporter
    from oaecmlr.engine.launch import resume_run

    run = resume_run(run_name, runs_dir, None if detach else ConsoleReporter(err_console), epochs, detach, gpus)
    if detach:
        console.print(run.name, highlight=False)
