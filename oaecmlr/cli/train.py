"""`oaecmlr run`, `pretrain` and `resume`: the typed options resolved into a Config (notes on what
a file overrode), then the engine, which is imported only here."""

from __future__ import annotations

import os
import signal
from typing import Any

import typer

from oaecmlr.cli.common import console, err_console, escape
from oaecmlr.config import Resolved, resolve_config
from oaecmlr.store.runs import RunDir


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
        if resolved.promise:
            err_console.print(f"{escape(str(resolved.preset))}: {escape(resolved.promise)}", highlight=False, soft_wrap=True)
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

    reporter = None if detach else ConsoleReporter(err_console, runs_dir=runs_dir)
    run = start_run(resolved.config, name, runs_dir, preset=resolved.preset, listener=reporter, detach=detach)
    if detach:
        console.print(run.name, highlight=False)
        return
    if not other_torchrun_worker():
        err_console.print(f"run folder: {escape(str(run.path))}", highlight=False, soft_wrap=True)
    raise typer.Exit(exit_code(run))


def resume(*, run_name: str, runs_dir: str | None, epochs: int | None, detach: bool, gpus: str | None = None) -> None:
    from oaecmlr.cli.console import ConsoleReporter
    from oaecmlr.engine.launch import resume_run

    reporter = None if detach else ConsoleReporter(err_console, runs_dir=runs_dir, run=run_name)
    run = resume_run(run_name, runs_dir, reporter, epochs, detach, gpus)
    if detach:
        console.print(run.name, highlight=False)
        return
    raise typer.Exit(exit_code(run))


def exit_code(run: RunDir) -> int:
    """0 for a run that finished; after a stop, the shell's 128 + the signal (130 for Ctrl-C, 143
    for SIGTERM or `oaecmlr stop`), so that `oaecmlr run A && oaecmlr run B` does not go on."""
    status = run.read_status()
    if status.get("state") != "stopped":
        return 0
    return 128 + (signal.SIGINT if status.get("stop_signal") == "SIGINT" else signal.SIGTERM)
