"""`oaecmlr sweep`: a grid of settings x seeds, one background run per device slot at a time, then
the comparison of the whole grid (mean ± std over seeds). Finished runs of the grid are skipped, so
an interrupted sweep is completed by running it again."""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from oaecmlr.cli.common import err_console, escape
from oaecmlr.config import Config, set_value
from oaecmlr.errors import ConfigError, OaecmlrError, RunError
from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.events import EventTail
from oaecmlr.store.runs import RunDir, check_name, request_stop, run_dir, summarize_run
from oaecmlr.store.schema import Eval, Start
from oaecmlr.tempfiles import pid_alive

# build_config(extra --set strings, seed, gpus) -> (Config, preset)
BuildConfig = Callable[[list[str], int | None, str | None], tuple[Config, str | None]]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """["oae.rho=0,1", "cmlr.lam=0,0.5"] -> {"oae.rho": ["0", "1"], "cmlr.lam": ["0", "0.5"]}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not choices:
            raise ConfigError(f"--grid expects key=v1,v2 (e.g. --grid oae.rho=0,1), got {item!r}")
        if key in grid:
            raise ConfigError(f"--grid names {key} twice; list all its values once: --grid {key}=v1,v2")
        for value in choices:  # unknown keys and bad values fail here, before anything runs
            set_value(Config(), key, value, "--grid")
        grid[key] = choices
    return grid


def parse_seeds(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds expects integers like 1,2,3, got {text!r}") from None
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"--seeds needs distinct integers, got {text!r}")
    return seeds


def run_name(prefix: str, point: dict[str, str], varying: list[str], seed: int) -> str:
    parts = [prefix, *(f"{k}={point[k]}" for k in varying), f"s{seed}"]
    return check_name(re.sub(r"[^A-Za-z0-9._=,+-]", "_", "-".join(parts)))


@dataclass
class Job:
    index: int
    name: str
    config: Config
    preset: str | None
    run: RunDir | None = None
    pid: int | None = None
    tail: EventTail | None = None
    epochs: int = 0
    outcome: str = ""  # finished, failed, skipped
    error: str = ""
    started: float = field(default_factory=time.time)


def plan(prefix: str, grid: dict[str, list[str]], seeds: list[int | None], build: BuildConfig,
         runs_dir: str | None) -> list[Job]:
    """Every grid point x seed as a job, configs checked before anything runs; finished runs are skipped."""
    varying = [k for k, values in grid.items() if len(values) > 1]
    jobs, conflicts = [], []
    for index, (values, seed) in enumerate(itertools.product(itertools.product(*grid.values()), seeds), start=1):
        point = dict(zip(grid, values))
        config, preset = build([f"{k}={v}" for k, v in point.items()], seed, None)
        job = Job(index, run_name(prefix, point, varying, config.run.seed), config, preset)
        existing = run_dir(job.name, runs_dir)
        if existing.exists():
            status = summarize_run(existing).status if existing.events.exists() else "empty"
            if status != "finished":
                conflicts.append(f"{job.name} ({status})")
            job.run, job.outcome = existing, "skipped"
        jobs.append(job)
    if len({j.name for j in jobs}) != len(jobs):
        raise ConfigError("two grid points give the same run name; use values that differ as text")
    if conflicts:
        raise RunError(f"these sweep runs exist but are not finished: {', '.join(conflicts)}; resume them "
                       "(oaecmlr resume NAME), delete their folders, or pass another --prefix")
    return jobs


def process_done(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
        return done == pid
    except ChildProcessError:  # already reaped (or not ours): ask the OS
        return not pid_alive(pid)


def _report(job: Job, total: int, text: str) -> None:
    err_console.print(f"[bold]\\[{job.index}/{total}][/] {job.name}: {text}", highlight=False, soft_wrap=True)


def _progress(job: Job, total: int) -> None:
    for e in job.tail.read_new():
        if isinstance(e, Start):
            job.epochs = e.epochs
        elif isinstance(e, Eval) and e.epoch > 0:
            _report(job, total, f"epoch {epoch_text(e.epoch, job.epochs)}  mAP {pct(e.mAP)}  R1 {pct(e.rank1)}")


def _finish(job: Job, total: int) -> None:
    _progress(job, total)
    summary = summarize_run(job.run)
    best = summary.best
    if summary.finished:
        job.outcome = "finished"
        _report(job, total, f"[green]finished[/] in {duration(time.time() - job.started)}, best mAP "
                            f"{pct(best.mAP if best else None)} R1 {pct(best.rank1 if best else None)}")
    else:
        job.outcome = "failed"
        job.error = summary.failure.error if summary.failure else \
            f"the process exited without finishing; see {job.run.log}"
        _report(job, total, f"[red]failed[/]: {escape(job.error)}")


def _start(job: Job, slot: str | None, runs_dir: str | None, total: int) -> None:
    from oaecmlr.engine.launch import start_run

    if slot is not None:
        job.config.run.gpus = slot
    job.started = time.time()
    try:
        job.run = start_run(job.config, job.name, runs_dir, preset=job.preset, detach=True)
    except OaecmlrError as exc:
        job.outcome, job.error = "failed", str(exc)
        _report(job, total, f"[red]could not start[/]: {escape(str(exc))}")
        return
    job.pid = job.run.read_status().get("pid")
    job.tail = EventTail(job.run.events)
    _report(job, total, f"started on {job.config.run.gpus} (pid {job.pid})")


def execute(jobs: list[Job], slots: list[str | None], runs_dir: str | None, poll_s: float = 0.5) -> None:
    """Run the pending jobs, at most one per slot at a time; a failed run does not stop the others."""
    total = len(jobs)
    pending = [j for j in jobs if j.outcome != "skipped"]
    for job in jobs:
        if job.outcome == "skipped":
            _report(job, total, "already finished, skipped")
    active: dict[int, Job] = {}  # slot index -> job
    previous = _sigterm_as_interrupt()
    try:
        with err_console.status("sweep running") as status:
            while pending or active:
                for s, slot in enumerate(slots):
                    while s not in active and pending:
                        job = pending.pop(0)
                        _start(job, slot, runs_dir, total)
                        if job.run is not None and not job.outcome:
                            active[s] = job
                for s, job in list(active.items()):
                    if process_done(job.pid):
                        _finish(job, total)
                        del active[s]
                    else:
                        _progress(job, total)
                done = sum(1 for j in jobs if j.outcome)
                status.update(f"sweep: {done}/{total} done, running {', '.join(j.name for j in active.values())}")
                if active:
                    time.sleep(poll_s)
    except KeyboardInterrupt:
        for job in active.values():
            try:
                err_console.print(f"stopping {job.name}: {escape(request_stop(job.run))}")
            except RunError:
                pass  # it ended meanwhile
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _sigterm_as_interrupt():
    """A SIGTERM to the sweep (a scheduler's kill, `kill PID`) stops its runs as Ctrl-C does, instead of
    leaving them training unattended. Returns the handler to restore (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def sweep_command(dataset: str, grid_items: list[str], seeds_text: str | None, gpus: str | None,
                  prefix: str | None, runs_dir: str | None, build: BuildConfig) -> bool:
    """Plan, run and compare a sweep; False when a run failed."""
    from oaecmlr.cli.compare_view import render
    from oaecmlr.engine.devices import parse_gpus
    from oaecmlr.store.compare import compare, run_record

    grid, seeds = parse_grid(grid_items), parse_seeds(seeds_text)
    slots: list[str | None] = [None]
    if gpus:
        parse_gpus(gpus)  # refuse unknown or missing devices before anything starts
        slots = [g.strip() for g in gpus.split(",") if g.strip()]
    jobs = plan(prefix or dataset, grid, seeds, build, runs_dir)
    points = len(jobs) // len(seeds)
    err_console.print(f"sweep: {points} setting(s) x {len(seeds)} seed(s) = {len(jobs)} runs, "
                      f"{len(slots)} at a time", highlight=False)
    execute(jobs, slots, runs_dir)
    failed = [j for j in jobs if j.outcome == "failed"]
    counts = {o: sum(j.outcome == o for j in jobs) for o in ("finished", "skipped", "failed")}
    err_console.print("sweep done: " + ", ".join(f"{n} {o}" for o, n in counts.items()), highlight=False)
    for job in failed:
        err_console.print(f"[red]failed:[/] {job.name}: {escape(job.error)}", highlight=False, soft_wrap=True)
    records = [run_record(j.run) for j in jobs if j.run is not None and j.run.events.exists()]
    if len(records) >= 2:
        render(compare(records), "table")
    return not failed
