"""`oaecmlr sweep`: a grid of settings x seeds, one background run per device slot at a time, then
the comparison of the whole grid (mean ± std over seeds). Finished runs of the grid are skipped and
unfinished ones resumed, so an interrupted sweep, even one killed with SIGKILL (its runs die with it),
is completed by running it again."""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from oaecmlr.cli.common import err_console, escape
from oaecmlr.config import Config, set_value
from oaecmlr.errors import ConfigError, OaecmlrError, RunError
from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.events import EventTail
from oaecmlr.store.processes import detach_console, exit_text
from oaecmlr.store.runs import (
    RunDir,
    check_name,
    live_state,
    record_death,
    request_stop,
    run_dir,
    runs_root,
    summarize_run,
)
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
    resume: bool = False  # an earlier sweep left it unfinished: resume it
    outcome: str = ""  # finished, failed, skipped
    error: str = ""
    started: float = field(default_factory=time.time)


def plan(prefix: str, grid: dict[str, list[str]], seeds: list[int | None], build: BuildConfig,
         runs_dir: str | None) -> list[Job]:
    """Every grid point x seed as a job, configs checked before anything runs; finished runs are
    skipped, and runs an earlier sweep left unfinished (stopped, failed, stale) are resumed."""
    varying = [k for k, values in grid.items() if len(values) > 1]
    jobs, running = [], []
    for index, (values, seed) in enumerate(itertools.product(itertools.product(*grid.values()), seeds), start=1):
        point = dict(zip(grid, values))
        config, preset = build([f"{k}={v}" for k, v in point.items()], seed, None)
        job = Job(index, run_name(prefix, point, varying, config.run.seed), config, preset)
        existing = run_dir(job.name, runs_dir)
        if existing.exists():
            status = summarize_run(existing).status if existing.events.exists() else "empty"
            if status == "finished":
                job.run, job.outcome = existing, "skipped"
            elif status == "running":
                running.append(job.name)
            else:
                job.run, job.resume = existing, True
        jobs.append(job)
    if len({j.name for j in jobs}) != len(jobs):
        raise ConfigError("two grid points give the same run name; use values that differ as text")
    if running:
        raise RunError(f"these sweep runs are running (another sweep?): {', '.join(running)}; wait for them, stop "
                       "them (oaecmlr stop NAME), or pass another --prefix")
    return jobs


def reap(pid: int | None) -> tuple[bool, int | None]:
    """(whether process `pid` has ended, its exit code as Popen gives it: -N when signal N killed
    it; None when it is not our child)."""
    if pid is None:
        return True, None
    try:
        done, status = os.waitpid(pid, os.WNOHANG)  # our child: reap it
    except ChildProcessError:  # already reaped (or not ours): ask the OS
        return not pid_alive(pid), None
    return (True, os.waitstatus_to_exitcode(status)) if done == pid else (False, None)


class SweepConsole:
    """What the sweep prints, on stderr until the console is lost (SIGHUP, a closed pipe, a hung-up
    terminal), then in `log` only: the sweep and its runs go on."""

    def __init__(self, log: Path):
        self.log = log
        self.lost = False

    def say(self, text: str) -> None:
        try:
            err_console.print(text, highlight=False, soft_wrap=True)
        except OSError as exc:
            self.lose(exc.strerror or type(exc).__name__)
            err_console.print(text, highlight=False, soft_wrap=True)

    def lose(self, why: str) -> None:
        """Called from a signal handler too: only redirects, and notes the time with one os.write."""
        if not self.lost:
            self.lost = True
            try:
                detach_console(self.log)
            except OSError:  # no runs folder yet
                detach_console(Path(os.devnull))
            os.write(2, f"{time.strftime('%Y-%m-%d %H:%M:%S')} the console was lost ({why}); the sweep goes on\n"
                     .encode())


def _report(out: SweepConsole, job: Job, total: int, text: str) -> None:
    out.say(f"[bold]\\[{job.index}/{total}][/] {job.name}: {text}")


def _progress(out: SweepConsole, job: Job, total: int) -> None:
    for e in job.tail.read_new():
        if isinstance(e, Start):
            job.epochs = e.epochs
        elif isinstance(e, Eval) and e.epoch > 0:
            _report(out, job, total, f"epoch {epoch_text(e.epoch, job.epochs)}  mAP {pct(e.mAP)}  R1 {pct(e.rank1)}")


def _finish(out: SweepConsole, job: Job, total: int, code: int | None) -> None:
    _progress(out, job, total)
    if code and live_state(job.run.read_status(), None) == "stale":  # it ended without a word: say how
        record_death(job.run, f"the run's process {exit_text(code)}; see {job.run.path / 'stdout.txt'}")
    summary = summarize_run(job.run)
    best = summary.best
    if summary.finished:
        job.outcome = "finished"
        _report(out, job, total, f"[green]finished[/] in {duration(time.time() - job.started)}, best mAP "
                                 f"{pct(best.mAP if best else None)} R1 {pct(best.rank1 if best else None)}")
    else:
        job.outcome = "failed"
        job.error = summary.failure.error if summary.failure else \
            f"the process exited without finishing; see {job.run.log}"
        _report(out, job, total, f"[red]failed[/]: {escape(job.error)}")


def _start(out: SweepConsole, job: Job, slot: str | None, runs_dir: str | None, total: int) -> None:
    """Start the job's run (resume it, when an earlier sweep left it unfinished) in the background,
    tied to this process: when the sweep dies, even by SIGKILL, the run stops with a checkpoint."""
    from oaecmlr.engine.launch import resume_run, start_run

    if slot is not None:
        job.config.run.gpus = slot
    job.started = time.time()
    try:
        if job.resume:
            job.run = resume_run(job.name, runs_dir, detach=True, gpus=slot, with_parent=True)
        else:
            job.run = start_run(job.config, job.name, runs_dir, preset=job.preset, detach=True, with_parent=True)
    except OaecmlrError as exc:
        job.outcome, job.error = "failed", str(exc)
        _report(out, job, total, f"[red]could not {'resume' if job.resume else 'start'}[/]: {escape(str(exc))}")
        return
    job.pid = job.run.read_status().get("pid")
    job.tail = EventTail(job.run.events)
    if job.resume:
        job.tail.read_new()  # report only what this sweep trains
    _report(out, job, total, f"{'resumed' if job.resume else 'started'} on {job.config.run.gpus} (pid {job.pid})")


def execute(jobs: list[Job], slots: list[str | None], runs_dir: str | None, poll_s: float = 0.5,
            out: SweepConsole | None = None) -> None:
    """Run the pending jobs, at most one per slot at a time; a failed run does not stop the others.
    Ctrl-C or SIGTERM stops the running ones gracefully and waits for them (a second one does not)."""
    out = out or SweepConsole(runs_root(runs_dir) / "sweep.log")
    total = len(jobs)
    pending = [j for j in jobs if j.outcome != "skipped"]
    for job in jobs:
        if job.outcome == "skipped":
            _report(out, job, total, "already finished, skipped")
    active: dict[int, Job] = {}  # slot index -> job
    previous = _install_handlers(out)
    try:
        with err_console.status("sweep running") as status:
            while pending or active:
                for s, slot in enumerate(slots):
                    while s not in active and pending:
                        job = pending.pop(0)
                        _start(out, job, slot, runs_dir, total)
                        if job.run is not None and not job.outcome:
                            active[s] = job
                for s, job in list(active.items()):
                    done, code = reap(job.pid)
                    if done:
                        _finish(out, job, total, code)
                        del active[s]
                    else:
                        _progress(out, job, total)
                done = sum(1 for j in jobs if j.outcome)
                status.update(f"sweep: {done}/{total} done, running {', '.join(j.name for j in active.values())}")
                if active:
                    time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop_and_wait(out, list(active.values()), poll_s)
        raise
    finally:
        _restore(previous)


def _stop_and_wait(out: SweepConsole, jobs: list[Job], poll_s: float) -> None:
    """Ask each running job to stop, then wait until their processes end: leaving earlier would
    have them stop at once (they die with the sweep) and lose the iterations since their last epoch."""
    for job in jobs:
        try:
            out.say(f"stopping {job.name}: {escape(request_stop(job.run))}")
        except RunError:
            pass  # it ended meanwhile
    try:
        if any(not reap(job.pid)[0] for job in jobs):
            out.say(f"waiting for {len(jobs)} run(s) to stop at their next safe point; Ctrl-C again to stop them now")
        while any(not reap(job.pid)[0] for job in jobs):
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass


def _install_handlers(out: SweepConsole) -> dict[int, object]:
    """A SIGTERM to the sweep (a scheduler's kill, `kill PID`) stops its runs as Ctrl-C does, instead of
    leaving them training unattended; a SIGHUP (a closed terminal) only loses the console. Returns
    the handlers to restore (none off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, interrupt)}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda signum, frame: out.lose("SIGHUP"))
    return previous


def _restore(previous: dict[int, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def sweep_command(dataset: str, grid_items: list[str], seeds_text: str | None, gpus: str | None,
                  prefix: str | None, runs_dir: str | None, build: BuildConfig) -> bool:
    """Plan, run and compare a sweep; False when a run failed."""
    from oaecmlr.cli.compare_view import render
    from oaecmlr.engine.devices import parse_gpus
    from oaecmlr.store.compare import compare, run_record

    out = SweepConsole(runs_root(runs_dir) / f"sweep-{prefix or dataset}.log")
    previous = _install_handlers(out)
    try:
        grid, seeds = parse_grid(grid_items), parse_seeds(seeds_text)
        slots: list[str | None] = [None]
        if gpus:
            parse_gpus(gpus)  # refuse unknown or missing devices before anything starts
            slots = [g.strip() for g in gpus.split(",") if g.strip()]
        jobs = plan(prefix or dataset, grid, seeds, build, runs_dir)
        points = len(jobs) // len(seeds)
        out.say(f"sweep: {points} setting(s) x {len(seeds)} seed(s) = {len(jobs)} runs, {len(slots)} at a time")
        execute(jobs, slots, runs_dir, out=out)
        failed = [j for j in jobs if j.outcome == "failed"]
        counts = {o: sum(j.outcome == o for j in jobs) for o in ("finished", "skipped", "failed")}
        out.say("sweep done: " + ", ".join(f"{n} {o}" for o, n in counts.items()))
        for job in failed:
            out.say(f"[red]failed:[/] {job.name}: {escape(job.error)}")
        records = [run_record(j.run) for j in jobs if j.run is not None and j.run.events.exists()]
        if len(records) >= 2:
            render(compare(records), "table")
        return not failed
    finally:
        _restore(previous)
