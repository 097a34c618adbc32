"""The dashboard app: `make_app(runs_dir)` for tests, `run_dashboard(runs_dir)` for `oaecmlr tui`.

A thread worker polls the runs folder (`RunTracker`: new bytes only) once per tick and posts
messages; the app keeps the latest state and asks the screens on its stack to redraw. The same
worker reads the watched run's log tail and, every GPU_EVERY_S, the GPUs (the run's first, matched
to NVML by UUID) and the CPU and memory of the run's processes. Closing the dashboard never touches the runs: they are separate processes that
only write files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import App
from textual.worker import get_current_worker

from oaecmlr.formatting import printable
from oaecmlr.store.runs import RunDir, RunMeta, check_resumable, runs_root
from oaecmlr.store.summary import RunSummary

from . import actions
from .gpu import gpu_lines
from .messages import ActionResult, CorruptEvents, GpuStatus, LogTail, ProcessStatus, RunsUpdated
from .procs import ProcessProbe
from .runs_screen import RunsScreen
from .tailer import RunTracker, read_log_tail

ProcessProbeFn = Callable[[dict, str], str]  # (status.json, live state) -> the CPU/RAM line

GPU_EVERY_S = 2.0


class Dashboard(App):
    CSS_PATH = "app.tcss"
    TITLE = "oaecmlr"
    MODES = {"runs": RunsScreen}  # a mode, not get_default_screen: only then is the screen's .tcss loaded
    DEFAULT_MODE = "runs"

    def __init__(self, runs_dir: str | None = None, poll_interval: float = 0.5,
                 gpu_probe: Callable[[tuple[dict, ...]], tuple[str, ...]] = gpu_lines, process_probe: ProcessProbeFn | None = None):
        super().__init__()
        self.runs_dir = runs_dir
        self.root = runs_root(runs_dir)
        self.sub_title = str(self.root)
        self.poll_interval = poll_interval
        self.gpu_probe = gpu_probe
        self.process_probe = process_probe or ProcessProbe()
        self.runs: dict[str, RunSummary] = {}
        self.meta: dict[str, RunMeta] = {}  # note and tags of the runs that have any
        self.folder_problem: str | None = None  # why the runs folder cannot be read
        self.marked: set[str] = set()
        self.logs: dict[str, tuple[str, ...]] = {}
        self.gpu: tuple[str, ...] = ()
        self.process: dict[str, str] = {}  # run -> its CPU/RAM line (the watched run only)
        self.watched: str | None = None  # the run whose log and GPUs the worker reads
        self._wake = threading.Event()
        self._warned: set[str] = set()

    def on_mount(self) -> None:
        self.tail_runs()

    # the worker ---------------------------------------------------------------------------------
    def set_watched(self, name: str | None) -> None:
        self.watched = name
        self._wake.set()

    @work(thread=True, exclusive=True, group="tail")
    def tail_runs(self) -> None:
        worker = get_current_worker()
        tracker = RunTracker(self.runs_dir)
        log_key, gpu_at = None, 0.0
        while not worker.is_cancelled:
            try:
                def report() -> None:
                    self.post_message(RunsUpdated(tracker.snapshots(), tracker.metas(), tracker.problem))

                if tracker.poll(report=report, cancelled=lambda: worker.is_cancelled):
                    report()
                for run, message in tracker.take_warnings():
                    self.post_message(CorruptEvents(run, message))
                watched = self.watched
                if watched:
                    log = RunDir(self.root / watched).log
                    try:
                        stat = log.stat()
                        key = (watched, stat.st_size, stat.st_mtime_ns)
                    except OSError:
                        key = (watched, None, None)
                    if key != log_key:
                        log_key = key
                        self.post_message(LogTail(watched, tuple(read_log_tail(log))))
                    if time.monotonic() - gpu_at >= GPU_EVERY_S:
                        gpu_at = time.monotonic()
                        feed = tracker.feeds.get(watched)
                        run_gpus = feed.snapshot.gpus if feed is not None and feed.snapshot is not None else ()
                        self.post_message(GpuStatus(self.gpu_probe(run_gpus)))
                        if feed is not None and feed.snapshot is not None:
                            line = self.process_probe(feed.status(), feed.snapshot.status)
                            self.post_message(ProcessStatus(watched, line))
                else:
                    log_key, gpu_at = None, 0.0  # the next watched run gets its lines at once
            except Exception as exc:  # a strange file must not end the watching
                self.post_message(ActionResult(printable(f"reading the runs failed: {type(exc).__name__}: {exc}"),
                                               error=True))
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    # messages from the worker -------------------------------------------------------------------
    def on_runs_updated(self, message: RunsUpdated) -> None:
        self.runs = {run.name: run for run in message.runs}
        self.meta = dict(message.meta)
        self.folder_problem = message.problem
        self.marked &= set(self.runs)
        self.redraw()

    def on_log_tail(self, message: LogTail) -> None:
        self.logs[message.run] = message.lines
        self.redraw()

    def on_gpu_status(self, message: GpuStatus) -> None:
        self.gpu = message.lines
        self.redraw()

    def on_process_status(self, message: ProcessStatus) -> None:
        self.process = {message.run: message.line}
        self.redraw()

    def on_corrupt_events(self, message: CorruptEvents) -> None:
        if message.run not in self._warned:  # once per run, however many lines
            self._warned.add(message.run)
            self.notify(message.message, title=f"{message.run}: corrupt data skipped", severity="warning")

    def on_action_result(self, message: ActionResult) -> None:
        self.notify(message.text, severity="error" if message.error else "information", timeout=8 if message.error else 4)
        if message.opened_run:
            from .launch_screen import LaunchScreen

            if isinstance(self.screen, LaunchScreen):
                self.pop_screen()
            self.open_run(message.opened_run)

    def redraw(self) -> None:
        for screen in self.screen_stack:
            if hasattr(screen, "data_changed"):
                screen.data_changed()

    # actions on runs (shared by the screens) ----------------------------------------------------
    def open_run(self, name: str) -> None:
        from .run_screen import RunScreen

        self.push_screen(RunScreen(name))

    def open_compare(self, names: list[str]) -> None:
        from .compare_screen import CompareScreen

        self.push_screen(CompareScreen(names))

    def open_launch(self, request: actions.LaunchRequest | None = None, title: str = "New run") -> None:
        from .launch_screen import LaunchScreen

        self.push_screen(LaunchScreen(request, title))

    def confirm_stop(self, name: str) -> None:
        """`x`: ask "stop RUN? y/n" first, then `stop_run`. A run the dashboard does not see running
        is not asked about: `stop_run` says at once why it cannot be stopped."""
        run = self.runs.get(name)
        if run is None or run.status not in ("running", "starting"):
            self.stop_run(name)
            return
        from .confirm import ConfirmScreen

        def answered(yes: bool | None) -> None:
            if yes:
                self.stop_run(name)

        self.push_screen(ConfirmScreen(f"stop {name}? y/n"), answered)

    def stop_run(self, name: str) -> None:
        try:
            self.notify(printable(actions.stop(RunDir(self.root / name))), title=f"stopping {name}")
        except actions.KNOWN_ERRORS as exc:
            self.notify(printable(str(exc)), severity="error")
        self._wake.set()

    def clone_run(self, name: str) -> None:
        try:
            request = actions.clone_request(RunDir(self.root / name))
        except actions.KNOWN_ERRORS as exc:
            self.notify(printable(f"cannot clone {name}: {exc}"), severity="error")
            return
        self.open_launch(request, title=f"Clone of {name}")

    def resume_run(self, name: str) -> None:
        """`r`: what the run folder alone can refuse (a running run, a finished one) is said at once;
        the engine, seconds to import, checks the rest in a worker."""
        try:
            check_resumable(RunDir(self.root / name))
        except actions.KNOWN_ERRORS as exc:
            self.notify(printable(str(exc)), severity="error")
            return
        self._resume_in_background(name)

    @work(thread=True, group="actions")
    def _resume_in_background(self, name: str) -> None:
        try:
            run = actions.resume(RunDir(self.root / name), self.runs_dir)
        except Exception as exc:  # known errors read well as they are; others get their type
            self.post_message(ActionResult(_error_text(exc), error=True))
        else:
            self.post_message(ActionResult(f"resuming {run.name} in the background"))
        self._wake.set()

    @work(thread=True, group="actions")
    def launch_run(self, request: actions.LaunchRequest) -> None:
        try:
            run, notes = actions.launch(request, self.runs_dir)
        except Exception as exc:
            self.post_message(ActionResult(_error_text(exc), error=True))
        else:
            for note in notes:
                self.post_message(ActionResult(printable(f"note: {note}")))
            self.post_message(ActionResult(f"started {run.name} in the background", opened_run=run.name))
        self._wake.set()


def _error_text(exc: Exception) -> str:
    return printable(str(exc) if isinstance(exc, actions.KNOWN_ERRORS) else f"{type(exc).__name__}: {exc}")


def make_app(runs_dir: str | Path | None = None, *, poll_interval: float = 0.5,
             gpu_probe: Callable[[tuple[dict, ...]], tuple[str, ...]] = gpu_lines, process_probe: ProcessProbeFn | None = None) -> Dashboard:
    """The dashboard on a runs folder (default: $OAECMLR_RUNS or ./runs); the probes are replaced in tests."""
    return Dashboard(None if runs_dir is None else str(runs_dir), poll_interval, gpu_probe, process_probe)


def run_dashboard(runs_dir: str | None) -> None:
    """`oaecmlr tui`: watch, launch and compare the runs of a folder until the user quits."""
    make_app(runs_dir).run()
