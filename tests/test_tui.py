"""The dashboard on fixture run folders: live table, run screen, compare, actions, launch form.

Async scenarios run with `asyncio.run` inside plain tests (no pytest async plugin here); the app
polls every 0.05 s so live updates show up within a few pilot pauses.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from oaecmlr_tui import actions  # noqa: E402
from oaecmlr_tui.app import make_app  # noqa: E402
from oaecmlr_tui.compare_screen import CompareScreen  # noqa: E402
from oaecmlr_tui.launch_screen import LaunchScreen  # noqa: E402
from oaecmlr_tui.messages import RunsUpdated  # noqa: E402
from oaecmlr_tui.plot import Plot  # noqa: E402
from oaecmlr_tui.run_screen import RunScreen  # noqa: E402
from oaecmlr_tui.tailer import RunTracker, read_log_tail  # noqa: E402
from runfixtures import append_events, make_run  # noqa: E402

from oaecmlr.store.events import read_events  # noqa: E402
from oaecmlr.store.runs import RunDir, summarize_run  # noqa: E402
from oaecmlr.store.schema import Cluster, EpochEnd, EpochStart, Eval, Iter, to_record  # noqa: E402
from oaecmlr.store.summary import RunFold  # noqa: E402

T0 = 1_700_000_000.0


@pytest.fixture
def runs(tmp_path):
    """finished (best 30.0), running (best 40.0 so far) and failed (best 45.0) runs."""
    root = tmp_path / "runs"
    make_run(root, "alpha-finished", state="finished", start_time=T0)
    make_run(root, "beta-running", state="running", start_time=T0 + 100, base_map=0.3)
    make_run(root, "gamma-failed", state="failed", start_time=T0 + 200, base_map=0.25, sets={"oae.rho": 0.5})
    return root


def app_for(root, notes=None):
    app = make_app(root, poll_interval=0.05, gpu_probe=lambda: ("GPU: probe stub",))
    if notes is not None:
        def notify(message, *, title="", severity="information", **_):
            notes.append((severity, f"{title} {message}".strip()))
        app.notify = notify
    return app


def drive(app, scenario, size=(100, 30)):
    async def main():
        async with app.run_test(size=size) as pilot:
            await wait_for(pilot, lambda: app.runs, "the first poll")
            await scenario(pilot)
    asyncio.run(main())


async def wait_for(pilot, predicate, what="the condition", timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def table(app):
    return app.screen_stack[0].table


def cell(app, run, column) -> str:
    return table(app).get_cell(run, column).plain


def row_names(app) -> list[str]:
    t = table(app)
    return [t.get_cell_at((row, 1)).plain for row in range(t.row_count)]


def plot_text(screen, selector) -> str:
    return screen.query_one(selector, Plot).render().plain


def iter_event(epoch, iteration, total=10, loss=1.0):
    return Iter(epoch=epoch, iteration=iteration, total_iterations=total, loss=loss, lr=3.5e-4, images_per_s=250.0)


def eval_event(epoch, m):
    return Eval(epoch=epoch, mAP=m, rank1=m + 0.05, rank5=m, rank10=m, mINP=m / 2)


# the runs table --------------------------------------------------------------------------------
def test_table_lists_runs_with_status_and_best_map(runs):
    app = app_for(runs)

    async def scenario(pilot):
        assert table(app).row_count == 3
        assert cell(app, "alpha-finished", "status") == "✓ finished"
        assert cell(app, "beta-running", "status") == "● running"
        assert cell(app, "gamma-failed", "status") == "✗ failed"
        assert [cell(app, name, "map") for name in ("alpha-finished", "beta-running", "gamma-failed")] == \
               ["30.0", "40.0", "45.0"]
        assert cell(app, "alpha-finished", "epoch") == "4/4"
        assert cell(app, "beta-running", "epoch") == "3/4"
        assert cell(app, "alpha-finished", "elapsed") == "56s"
        assert "green" in str(table(app).get_cell("beta-running", "name").style)  # running rows stand out
        assert "green" not in str(table(app).get_cell("alpha-finished", "name").style)
        assert "red" in str(table(app).get_cell("gamma-failed", "status").style)

    drive(app, scenario)


def test_filter_narrows_rows_and_sorting_changes_order(runs):
    app = app_for(runs)

    async def scenario(pilot):
        assert row_names(app) == ["gamma-failed", "beta-running", "alpha-finished"]  # newest first
        await pilot.press("s")  # sort by name
        assert row_names(app) == ["alpha-finished", "beta-running", "gamma-failed"]
        await pilot.press("S")  # reverse
        assert row_names(app) == ["gamma-failed", "beta-running", "alpha-finished"]
        app.screen.sort_by("map")
        assert row_names(app) == ["gamma-failed", "beta-running", "alpha-finished"]
        assert str(table(app).columns["map"].label) == "mAP ▼"
        await pilot.click("#runs", offset=(5, 0))  # the header of the name column: sort by name
        assert row_names(app) == ["alpha-finished", "beta-running", "gamma-failed"]
        await pilot.click("#runs", offset=(5, 0))  # again: reversed
        assert row_names(app) == ["gamma-failed", "beta-running", "alpha-finished"]
        await pilot.press("slash", *"runn")
        assert row_names(app) == ["beta-running"]
        await pilot.press("enter")  # back to the table
        assert app.focused is table(app)

    drive(app, scenario)


def test_stale_run_is_marked(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    make_run(tmp_path, "lost", state="running", pid=dead.pid)
    app = app_for(tmp_path)

    async def scenario(pilot):
        assert cell(app, "lost", "status") == "⚠ stale"
        assert "1 stale" in str(app.screen.query_one("#runs-info").render())

    drive(app, scenario)


# live updates ----------------------------------------------------------------------------------
def test_table_and_run_screen_follow_a_running_run_without_keypresses(runs):
    notes = []
    app = app_for(runs, notes)
    live = runs / "beta-running"

    async def scenario(pilot):
        append_events(live, [iter_event(4, i) for i in range(6, 11)] + [eval_event(4, 0.9)])
        await wait_for(pilot, lambda: cell(app, "beta-running", "map") == "90.0", "the table to update")

        table(app).move_cursor(row=table(app).get_row_index("beta-running"))
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: "iteration 10/10" in str(screen.query_one("#progress-text").render()))
        append_events(live, [EpochEnd(epoch=4, seconds=1.0), EpochStart(epoch=5, lr=1e-4), iter_event(5, 3)])
        await wait_for(pilot, lambda: "epoch 5/4  iteration 3/10" in str(screen.query_one("#progress-text").render()),
                       "the progress line to follow")
        assert "250 images/s  last event" in str(screen.query_one("#speed").render())

        # a partial last line waits for its newline
        line = json.dumps({**to_record(eval_event(5, 0.95)), "time": time.time()})
        with open(live / "events.jsonl", "a") as f:
            f.write(line[:25])
        await pilot.pause(0.4)
        assert app.is_running and app.runs["beta-running"].best.mAP == pytest.approx(0.9)
        with open(live / "events.jsonl", "a") as f:
            f.write(line[25:] + "\n")
        await wait_for(pilot, lambda: app.runs["beta-running"].best.mAP == pytest.approx(0.95), "the completed line")
        assert plot_text(screen, "#metrics").splitlines()[-1].split()[-1] == "5"  # the x axis reaches epoch 5

        # corrupt lines are skipped with one notification; later events still arrive
        with open(live / "events.jsonl", "a") as f:
            f.write("{this is not json\n[1, 2]\n")
        append_events(live, [iter_event(5, 4)])
        await wait_for(pilot, lambda: app.runs["beta-running"].last_iter.iteration == 4, "events after corrupt lines")
        corrupt = [n for n in notes if "corrupt" in n[1]]
        assert len(corrupt) == 1 and corrupt[0][0] == "warning"

        # the log tail follows log.txt
        with open(live / "log.txt", "a") as f:
            f.write("a brand new log line\n")
        await wait_for(pilot, lambda: screen.log_lines[-1] == "a brand new log line", "the log tail")

        # a new run folder is picked up
        make_run(runs, "delta-new", state="running", start_time=T0 + 300)
        await wait_for(pilot, lambda: "delta-new" in app.runs, "the new run")
        await pilot.press("escape")
        await wait_for(pilot, lambda: table(app).row_count == 4, "the new row")

    drive(app, scenario)


def test_updates_are_coalesced_into_whole_state_messages(runs):
    seen = []
    app = app_for(runs)

    async def main():
        async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
            await wait_for(pilot, lambda: app.runs)
            for i in range(6, 11):
                append_events(runs / "beta-running", [iter_event(4, i)])
            await wait_for(pilot, lambda: app.runs["beta-running"].last_iter.iteration == 10)

    asyncio.run(main())
    updates = [m for m in seen if isinstance(m, RunsUpdated)]
    assert 1 <= len(updates) <= 12  # per tick, not per event
    assert {r.name for r in updates[0].runs} == {"alpha-finished", "beta-running", "gamma-failed"}
    assert updates[0].can_replace(updates[-1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        updates[0].runs = ()


# the run screen ----------------------------------------------------------------------------------
def test_run_screen_shows_plots_progress_log_and_gpu_line(runs):
    app = app_for(runs)

    async def scenario(pilot):
        table(app).move_cursor(row=table(app).get_row_index("alpha-finished"))
        await pilot.press("enter")
        screen = app.screen
        await wait_for(pilot, lambda: screen.log_lines, "the log tail")
        metrics = plot_text(screen, "#metrics")
        assert "━ mAP" in metrics and "━ R1" in metrics and "epoch" in metrics
        assert "40┤" in metrics and "10┤" in metrics  # R1 max 40 %, mAP min 10 %
        loss = plot_text(screen, "#loss")
        assert "━ loss" in loss and "iteration" in loss and "└┬" in loss
        clusters = plot_text(screen, "#clusters")
        assert all(name in clusters for name in ("━ clusters", "━ outliers", "━ OAE assigned"))
        assert screen.query_one("#clusters").border_subtitle == \
            "purity 80% NMI 85% OAE prec 70% x-cam 5% cams 1.1 x-cam imgs 8%"
        assert screen.log_lines[-1] == "line 29 of the log" and len(screen.log_lines) == 20
        await wait_for(pilot, lambda: screen.query_one("#log").lines, "the log widget")
        assert screen.query_one("#log").lines[-1].text.strip() == "line 29 of the log"
        assert "finished after epoch 4/4" in str(screen.query_one("#progress-text").render())
        assert "GPU: probe stub" in str(screen.query_one("#gpu").render())
        assert "alpha-finished" in str(screen.query_one("#run-title").render())
        await pilot.press("escape")
        assert app.watched is None

    drive(app, scenario, size=(100, 30))


def test_diagnostics_line_skips_what_the_dataset_cannot_give():
    from oaecmlr_tui.run_screen import diagnostics_line

    def run(*clusters):
        return RunFold().add(clusters).summary("x", "x", "running")

    def cluster(epoch, **diagnostics):
        return Cluster(epoch=epoch, clusters=10, outliers_before=5, outliers_after=5, oae_assigned=0, **diagnostics)

    assert diagnostics_line(run()) == ""
    assert diagnostics_line(run(cluster(1))) == ""  # no ground truth (manifest without ids)
    assert diagnostics_line(run(cluster(1, purity=0.5), cluster(2, purity=0.625, nmi=0.9, cross_camera=0.0))) \
        == "purity 62% NMI 90% x-cam 0%"  # the last epoch only
    assert diagnostics_line(run(cluster(1, cross_camera=0.5, cameras_per_cluster=1.75, cross_camera_images=0.6))) \
        == "x-cam 50% cams 1.8 x-cam imgs 60%"


def test_gpu_lines_with_and_without_nvml(monkeypatch):
    import types

    from oaecmlr_tui import gpu

    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert gpu.gpu_lines() == ("GPU: not available (pynvml is not installed: pip install nvidia-ml-py)",)

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=[87, 5][h]),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=[21.5 * 2**30, 2**30][h], total=80 * 2**30))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(gpu, "_state", {})
    assert gpu.gpu_lines() == ("GPU 0:  87% busy  memory 21.5/80.0 GiB", "GPU 1:   5% busy  memory 1.0/80.0 GiB")
    fake.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(RuntimeError("driver gone"))
    assert gpu.gpu_lines() == ("GPU: not available (RuntimeError: driver gone)",)


# compare -------------------------------------------------------------------------------------------
def test_marking_two_runs_opens_the_comparison(runs):
    notes = []
    app = app_for(runs, notes)

    async def scenario(pilot):
        await pilot.press("c")
        assert any("mark two" in n[1] for n in notes)
        await pilot.press("m", "down", "m")
        assert app.marked == {"gamma-failed", "beta-running"}
        assert cell(app, "gamma-failed", "mark") == "✓"
        await pilot.press("c")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        diff = screen.query_one("#compare-diff")
        await wait_for(pilot, lambda: diff.row_count, "the comparison")
        assert [diff.get_cell_at((row, 0)) for row in range(diff.row_count)] == ["oae.rho"]
        assert [diff.get_cell_at((0, col)) for col in (1, 2)] == ["0.5", "1.0"]
        assert "━ gamma-failed" in plot_text(screen, "#compare-map")
        assert "━ beta-running" in plot_text(screen, "#compare-r1")
        metrics = screen.query_one("#compare-metrics")
        assert metrics.row_count == 2 and metrics.get_cell_at((0, 3)) == "45.0/55.0 @4"
        assert metrics.get_cell_at((1, 4)) == "-5.0"  # beta-running's best mAP 40.0 against 45.0
        assert "not finished" in str(screen.query_one("#compare-warnings").render())

    drive(app, scenario)


# actions -------------------------------------------------------------------------------------------
def test_stop_writes_the_stop_file_and_sigterms_the_process(tmp_path):
    dummy = subprocess.Popen(["sleep", "30"])
    try:
        make_run(tmp_path, "victim", state="running", pid=dummy.pid)
        notes = []
        app = app_for(tmp_path, notes)

        async def scenario(pilot):
            await pilot.press("x")
            assert (tmp_path / "victim" / "STOP").exists()
            assert dummy.wait(timeout=5) == -signal.SIGTERM
            assert any("SIGTERM" in n[1] for n in notes)
            await pilot.press("x")  # not running any more: an error line, no crash
            assert notes[-1][0] == "error" and app.is_running

        drive(app, scenario)
    finally:
        dummy.kill()
        dummy.wait()


def test_resume_of_a_live_run_is_a_notification(runs):
    notes = []
    app = app_for(runs, notes)

    async def scenario(pilot):
        await pilot.press("down", "r")  # beta-running: its pid (this process) is alive
        await wait_for(pilot, lambda: any(n[0] == "error" for n in notes), "the error")
        assert "still running" in notes[-1][1]

    drive(app, scenario)


def test_launch_form_with_unknown_preset_shows_an_error(runs):
    notes = []
    app = app_for(runs, notes)

    async def scenario(pilot):
        app.open_launch(actions.LaunchRequest(preset="no-such-preset", name="x1"))
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any(n[0] == "error" for n in notes), "the error notification")
        assert "no-such-preset" in notes[-1][1]
        assert app.is_running and isinstance(app.screen, LaunchScreen)
        assert not (runs / "x1").exists()

    drive(app, scenario)


def test_launch_form_starts_a_detached_run_and_opens_it(runs, monkeypatch):
    import oaecmlr.engine.launch as launch

    calls = []

    def fake_start_run(config, name=None, runs_dir=None, preset=None, listener=None, detach=False):
        calls.append((config, name, preset, detach))
        make_run(runs_dir, name, state="running", start_time=T0 + 400)
        return RunDir(Path(runs_dir) / name)

    monkeypatch.setattr(launch, "start_run", fake_start_run)
    app = app_for(runs)

    async def scenario(pilot):
        await pilot.press("n")
        screen = app.screen
        assert isinstance(screen, LaunchScreen)
        screen.query_one("#name").value = "fresh"
        screen.query_one("#overrides").text = "run.epochs=3, run.gpus=cpu\noae.rho=0"
        await pilot.click("#start")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
        assert app.screen.run_name == "fresh"
        config, name, preset, detach = calls[0]
        assert (name, preset, detach) == ("fresh", "demo", True)
        assert config.run.epochs == 3 and config.oae.rho == 0.0 and config.data.dataset == "synthetic"
        await wait_for(pilot, lambda: "fresh" in app.runs)

    drive(app, scenario)


def test_clone_prefills_the_form_from_the_run(runs):
    app = app_for(runs)

    async def scenario(pilot):
        await pilot.press("e")  # gamma-failed: defaults + synthetic + oae.rho=0.5
        screen = app.screen
        assert isinstance(screen, LaunchScreen)
        request = screen.current_request()
        assert request.preset == "synthetic"
        assert request.overrides == ("oae.rho=0.5",)
        assert request.name == "gamma-failed-clone" and request.gpus == "cpu"

    drive(app, scenario)


def test_clone_picks_the_closest_preset(tmp_path):
    from oaecmlr.config import load_config

    demo = load_config("demo", sets=["cmlr.lam=0.3"]).flat()
    make_run(tmp_path, "from-demo", sets=demo)
    request = actions.clone_request(RunDir(tmp_path / "from-demo"))
    assert request.preset == "demo" and request.overrides == ("cmlr.lam=0.3",)
    resolved = actions.build_config(request)
    assert resolved.preset == "demo" and resolved.config.cmlr.lam == 0.3
    assert resolved.config.run.epochs == demo["run.epochs"]


def test_parse_overrides_keeps_commas_inside_values():
    assert actions.parse_overrides("run.gpus=0,1, oae.rho=0\n\n cmlr.lam=0.5 ") == \
        ("run.gpus=0,1", "oae.rho=0", "cmlr.lam=0.5")


# reading -------------------------------------------------------------------------------------------
def test_tracker_reads_only_new_bytes_and_folds_like_a_full_read(runs):
    tracker = RunTracker(runs)
    reports = []
    assert tracker.poll(report=lambda: reports.append(len(tracker.snapshots())), every_s=0)
    assert reports == [1, 2, 3]  # a long first read shows runs as they are read
    assert not tracker.poll()  # nothing new, nothing changed
    feed = tracker.feeds["beta-running"]
    offset = feed.tail.offset
    append_events(runs / "beta-running", [iter_event(4, 6)])
    assert tracker.poll()
    assert feed.tail.offset > offset and feed.snapshot.last_iter.iteration == 6
    assert feed.snapshot == summarize_run(RunDir(runs / "beta-running"))  # incremental == one full read

    # a file that shrinks (a resume dropping an unfinished epoch) is folded again from the start
    events = read_events(runs / "beta-running" / "events.jsonl")
    (runs / "beta-running" / "events.jsonl").write_text("".join(json.dumps(to_record(e)) + "\n" for e in events[:5]))
    assert tracker.poll()
    assert feed.snapshot.events == 5 and feed.tail.reset_count == 1


def test_log_tail_reads_the_end_only(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert read_log_tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert read_log_tail(tmp_path / "missing.txt") == []


def _imports(modules: str, forbidden: tuple[str, ...]) -> subprocess.CompletedProcess:
    code = f"import sys, {modules}; bad = [m for m in {forbidden!r} if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_core_and_cli_do_not_import_textual():
    core = "oaecmlr, oaecmlr.store.runs, oaecmlr.store.events, oaecmlr.store.compare, oaecmlr.config, " \
           "oaecmlr.engine.launch"
    result = _imports(core, ("textual", "typer", "oaecmlr_tui"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _imports(core + ", oaecmlr.cli.app", ("textual", "oaecmlr_tui"))  # `oaecmlr tui` imports it lazily
    assert result.returncode == 0, result.stdout + result.stderr
