"""The dashboard on fixture run folders: live table, run screen, compare, actions, launch form.

Async scenarios run with `asyncio.run` inside plain tests (no pytest async plugin here); the app
polls every 0.05 s so live updates show up within a few pilot pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("textual")

from oaecmlr_tui import actions  # noqa: E402
from oaecmlr_tui.app import make_app  # noqa: E402
from oaecmlr_tui.compare_screen import CompareScreen  # noqa: E402
from oaecmlr_tui.confirm import ConfirmScreen  # noqa: E402
from oaecmlr_tui.launch_screen import LaunchScreen  # noqa: E402
from oaecmlr_tui.messages import RunsUpdated  # noqa: E402
from oaecmlr_tui.plot import Plot  # noqa: E402
from oaecmlr_tui.run_screen import RunScreen  # noqa: E402
from oaecmlr_tui.tailer import RunTracker, read_log_tail  # noqa: E402
from runfixtures import append_events, make_run, stand_in_process  # noqa: E402

from oaecmlr.store.events import read_events  # noqa: E402
from oaecmlr.store.runs import RunDir, summarize_run, write_meta  # noqa: E402
from oaecmlr.store.schema import Cluster, EpochEnd, EpochStart, Eval, Iter, to_record  # noqa: E402
from oaecmlr.store.summary import RunFold, RunSummary  # noqa: E402

T0 = 1_700_000_000.0


@pytest.fixture
def runs(tmp_path):
    """finished (best 30.0), running (best 40.0 so far) and failed (best 45.0) runs."""
    root = tmp_path / "runs"
    make_run(root, "alpha-finished", state="finished", start_time=T0)
    make_run(root, "beta-running", state="running", start_time=T0 + 100, base_map=0.3)
    make_run(root, "gamma-failed", state="failed", start_time=T0 + 200, base_map=0.25, sets={"oae.rho": 0.5})
    return root


def app_for(root, notes=None, **probes):
    app = make_app(root, poll_interval=0.05, gpu_probe=lambda run_gpus=(): ("GPU: probe stub",), **probes)
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
            await pilot.pause()  # let screens mounted last finish (a Header sets its title after a refresh)
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


def cell_or_none(app, run, column) -> str | None:
    """The cell, or None while the table is being rebuilt (rows or columns not there yet)."""
    try:
        return cell(app, run, column)
    except Exception:
        return None


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


def test_a_run_with_malformed_events_does_not_hide_the_others(runs):
    bad = ['{"event":"eval","epoch":"x","mAP":"bad"}', '{"event":"cluster","epoch":2,"clusters":"many"}', "[]"]
    with open(runs / "alpha-finished" / "events.jsonl", "a") as f:
        f.write("\n".join(bad) + "\n")
    app = app_for(runs)

    async def scenario(pilot):
        assert table(app).row_count == 3
        assert cell(app, "alpha-finished", "map") == "30.0"  # its good events still count

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


@pytest.mark.parametrize("keys", [(), ("enter",)], ids=["in the filter", "in the table"])
def test_escape_clears_the_filter(runs, keys):
    app = app_for(runs)

    async def scenario(pilot):
        await pilot.press("slash", *"runn", *keys)
        assert row_names(app) == ["beta-running"]
        await pilot.press("escape")
        assert row_names(app) == ["gamma-failed", "beta-running", "alpha-finished"]
        assert app.query_one("#filter").value == "" and app.focused is table(app)

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
        assert re.search(r"250 images/s  run ETA \S+  last event", str(screen.query_one("#speed").render()))

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
        assert "━ clusters" in clusters and "━ OAE assigned" in clusters and "outliers" not in clusters
        assert "44┤" in clusters  # scaled to the clusters (44 at epoch 4), not to ~60 outliers
        assert screen.query_one("#clusters").border_subtitle == "outliers 60 = 12% of 500 images"
        assert str(screen.query_one("#diagnostics").render()) == \
            "epoch 4 clusters: purity 80%  NMI 85%  OAE prec 70%  x-cam 5%  cams 1.1  x-cam imgs 8%"
        assert screen.log_lines[-1] == "line 29 of the log" and len(screen.log_lines) == 20
        await wait_for(pilot, lambda: screen.query_one("#log").lines, "the log widget")
        assert screen.query_one("#log").lines[-1].text.strip() == "line 29 of the log"
        assert "finished after epoch 4/4" in str(screen.query_one("#progress-text").render())
        assert "GPU: probe stub" in str(screen.query_one("#gpu").render())
        await wait_for(pilot, lambda: app.process, "the CPU/RAM line")
        assert str(screen.query_one("#proc").render()) == "CPU/RAM: run finished"
        assert str(screen.query_one("#speed").render()) == ""  # no ETA once finished
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
        == "epoch 2 clusters: purity 62%  NMI 90%  x-cam 0%"  # the last epoch only
    assert diagnostics_line(run(cluster(1, cross_camera=0.5, cameras_per_cluster=1.75, cross_camera_images=0.6))) \
        == "epoch 1 clusters: x-cam 50%  cams 1.8  x-cam imgs 60%"
    everything = cluster(12, purity=0.8, nmi=0.85, oae_precision=0.7, cross_camera=0.05, cameras_per_cluster=1.1,
                         cross_camera_images=0.08)
    assert len(diagnostics_line(run(everything))) <= 96  # one line of a 100-column screen, nothing cut


def test_the_watched_runs_gpus_reach_the_gpu_probe(tmp_path):
    """The probe hears the GPUs (with their UUIDs) that the watched run recorded, to list them first."""
    root = tmp_path / "runs"
    gpus = [{"device": "cuda:0", "name": "NVIDIA H100", "capability": "9.0", "uuid": "GPU-c"}]
    make_run(root, "on-gpu", start_time=T0, provenance={"gpu": "NVIDIA H100", "gpus": gpus})
    heard = []
    app = make_app(root, poll_interval=0.05, gpu_probe=lambda run_gpus=(): heard.append(run_gpus) or ("GPU: heard",))

    async def scenario(pilot):
        await pilot.press("enter")
        await wait_for(pilot, lambda: heard, "the GPU probe")
        assert heard[-1] == tuple(gpus)

    drive(app, scenario)


def test_gpu_lines_with_and_without_nvml(monkeypatch):
    import types

    from oaecmlr_tui import gpu

    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(gpu, "nvidia_driver", lambda: True)
    assert gpu.gpu_lines() == ("GPU: not available (pynvml is not installed: pip install nvidia-ml-py)",)
    monkeypatch.setattr(gpu, "nvidia_driver", lambda: False)  # no GPU here: nothing to install
    assert gpu.gpu_lines() == ("GPU: none (no NVIDIA driver on this machine)",)

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlDeviceGetCount=lambda: 2, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUUID=lambda h: ["GPU-0a", "GPU-1b"][h],
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=[87, 5][h]),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=[21.5 * 2**30, 2**30][h], total=80 * 2**30))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(gpu, "_state", {})
    assert gpu.gpu_lines() == ("NVML 0:  87% busy  memory 21.5/80.0 GiB", "NVML 1:   5% busy  memory 1.0/80.0 GiB")
    assert gpu.gpu_lines(({"device": "cuda:0", "uuid": "GPU-1b"},))[0] == "run cuda:0 (NVML 1):   5% busy  memory 1.0/80.0 GiB"
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
    make_run(tmp_path, "victim", state="running")
    dummy = stand_in_process(tmp_path / "victim")  # provably the run's own process: `stop` signals it
    try:
        notes = []
        app = app_for(tmp_path, notes)

        async def scenario(pilot):
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)  # asks first
            assert str(app.screen.query_one("#confirm-question").render()) == "stop victim? y/n"
            assert not (tmp_path / "victim" / "STOP").exists()
            await pilot.press("y")
            assert not isinstance(app.screen, ConfirmScreen)
            assert (tmp_path / "victim" / "STOP").exists()
            assert dummy.wait(timeout=5) == 0
            assert any("SIGTERM" in n[1] for n in notes)
            await wait_for(pilot, lambda: app.runs["victim"].status == "stopped", "the process to be gone")
            await pilot.press("x")  # not running any more: an error line at once, nothing asked, no crash
            assert notes[-1][0] == "error" and app.is_running
            assert not isinstance(app.screen, ConfirmScreen)

        drive(app, scenario)
    finally:
        dummy.kill()
        dummy.wait()


def test_resume_of_a_live_run_is_a_notification(runs):
    notes = []
    app = app_for(runs, notes)

    async def scenario(pilot):
        await pilot.press("down", "r")  # beta-running: its pid (this process) is alive
        # the refusal comes from the engine, whose first import (torch) takes seconds on a busy machine
        await wait_for(pilot, lambda: any(n[0] == "error" for n in notes), "the error", timeout=60)
        assert "still running" in notes[-1][1]

    drive(app, scenario)


def test_resume_of_a_live_run_is_refused_at_once_without_the_engine(runs, monkeypatch):
    notes, called = [], []
    monkeypatch.setattr(actions, "resume", lambda *args: called.append(args))  # the engine path: never taken
    app = app_for(runs, notes)

    async def scenario(pilot):
        await pilot.press("down", "r")  # beta-running: its pid (this process) is alive
        await pilot.pause()
        assert notes and notes[-1][0] == "error" and "beta-running is still running" in notes[-1][1]
        assert "stop it first with `oaecmlr stop beta-running`" in notes[-1][1]

    drive(app, scenario)
    assert called == []


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
        await pilot.pause()  # let the form finish mounting (its Header sets its title after a refresh)
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
        await pilot.pause()

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


def test_a_run_without_events_yet_shows_its_planned_epochs_not_a_question_mark(tmp_path):
    from oaecmlr_tui.runs_screen import row_cells

    make_run(tmp_path, "starting", state="running", sets={"run.epochs": 7})
    (tmp_path / "starting" / "events.jsonl").write_text("")
    tracker = RunTracker(tmp_path)
    tracker.poll(every_s=0)
    snapshot = tracker.feeds["starting"].snapshot
    assert snapshot.epochs == 7 and snapshot.events == 0
    assert str(row_cells(snapshot, False, ("name", "epoch"), 20)[1]) == "0/7"


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


# the whole run's ETA -----------------------------------------------------------------------------
def summary(status="running", **fields) -> RunSummary:
    return RunSummary(name="x", path="x", status=status, **fields)


def test_run_eta_is_the_time_per_epoch_so_far_times_the_epochs_left():
    from oaecmlr_tui.run_screen import eta_text, run_eta

    inside = iter_event(3, 5)  # epoch 3 half done after 2 finished epochs: 2.5 epochs in 100 s
    assert run_eta(summary(epochs=10, epoch=2, elapsed=100.0, last_iter=inside)) == pytest.approx(40 * 7.5)
    between = iter_event(2, 10)  # clustering or evaluating after epoch 2: 2 epochs in 100 s
    assert run_eta(summary(epochs=10, epoch=2, elapsed=100.0, last_iter=between)) == pytest.approx(50 * 8)
    assert eta_text(summary(epochs=10, epoch=2, elapsed=100.0, last_iter=between)) == "run ETA 6m40s"
    assert run_eta(summary(epochs=10, epoch=10, elapsed=100.0, last_iter=between)) == 0.0  # the last evaluation
    # nothing until one epoch is measurable; nothing for a run that is not running
    assert run_eta(summary(epochs=10, epoch=0, elapsed=100.0, last_iter=iter_event(1, 9))) is None
    assert eta_text(summary(epochs=10, epoch=0, elapsed=100.0)) == "run ETA -"
    assert run_eta(summary(epochs=None, epoch=2, elapsed=100.0)) is None
    for status in ("finished", "stopped", "failed", "stale"):
        assert run_eta(summary(status, epochs=10, epoch=2, elapsed=100.0)) is None
        assert eta_text(summary(status, epochs=10, epoch=2, elapsed=100.0)) == ""


def test_progress_of_a_run_stopped_at_once():
    from oaecmlr_tui.run_screen import progress_text

    from oaecmlr.store.schema import Stopped

    text, *_ = progress_text(summary("stopped", epochs=4, epoch=2, stopped=Stopped(epoch=3, iteration=None)))
    assert text == "stopped in epoch 3/4 at once (2 epochs finished)"


# CPU and RAM of the run's processes ----------------------------------------------------------------
def fake_psutil(processes: dict[int, dict]):
    """psutil with the processes of `processes`: pid -> {cpu: seconds, rss: bytes, status}."""
    class NoSuchProcess(Exception):
        pass

    class AccessDenied(Exception):
        pass

    class Process:
        def __init__(self, pid):
            if pid not in processes:
                raise NoSuchProcess(pid)
            self.info = processes[pid]

        def oneshot(self):
            return contextlib.nullcontext()

        def create_time(self):
            return 1000.0

        def status(self):
            return self.info.get("status", "running")

        def cpu_times(self):
            if self.info.get("denied"):
                raise AccessDenied()
            return types.SimpleNamespace(user=self.info["cpu"] * 0.75, system=self.info["cpu"] * 0.25)

        def memory_info(self):
            return types.SimpleNamespace(rss=self.info["rss"])

    return types.SimpleNamespace(Process=Process, NoSuchProcess=NoSuchProcess, AccessDenied=AccessDenied,
                                 STATUS_ZOMBIE="zombie")


def test_process_line_with_a_fake_psutil(monkeypatch):
    from oaecmlr_tui.procs import ProcessProbe, run_pids

    table = {10: {"cpu": 5.0, "rss": 1.5 * 2**30}, 11: {"cpu": 20.0, "rss": 2**30}, 12: {"cpu": 20.0, "rss": 2**30}}
    monkeypatch.setitem(sys.modules, "psutil", fake_psutil(table))
    clock = [100.0]
    probe = ProcessProbe(clock=lambda: clock[0], host="here")
    single = {"pid": 10, "host": "here", "state": "running"}
    assert probe.line(single, "running") == "run CPU -  RAM 1.50 GiB"  # CPU needs two samples
    clock[0] += 2.0
    table[10]["cpu"] += 1.0
    assert probe.line(single, "running") == "run CPU 50%  RAM 1.50 GiB"

    # several workers: the supervisor and every worker (rank 0 is `pid` too), summed
    workers = {"pid": 11, "supervisor": 10, "workers": [11, 12], "host": "here"}
    assert run_pids(workers) == (11, 10, 12)
    probe.line(workers, "running")
    clock[0] += 4.0
    for pid, seconds in ((10, 0.0), (11, 4.0), (12, 6.0)):
        table[pid]["cpu"] += seconds
    assert probe.line(workers, "running") == "run CPU 250%  RAM 3.50 GiB (3 processes)"
    del table[12]  # one worker gone: the others still count
    table[11]["status"] = "zombie"
    assert probe.line(workers, "running").endswith("RAM 1.50 GiB")

    assert probe.line({"pid": 99, "host": "here"}, "running") == "CPU/RAM: process gone"
    assert probe.line({"pid": 10, "host": "elsewhere"}, "running") == "CPU/RAM: the run is on elsewhere"
    assert probe.line({"host": "here"}, "starting") == "CPU/RAM: no pid in status.json"
    assert probe.line(single, "finished") == "CPU/RAM: run finished"
    table[10]["denied"] = True
    assert probe.line(single, "running") == "CPU/RAM: process gone"  # nothing readable is nothing shown

    monkeypatch.setitem(sys.modules, "psutil", None)  # not installed
    assert probe.line(single, "running") == "CPU/RAM: install psutil"


def test_process_line_with_the_real_psutil_on_this_process():
    psutil = pytest.importorskip("psutil")
    from oaecmlr_tui.procs import ProcessProbe

    probe = ProcessProbe()
    status = {"pid": os.getpid(), "host": socket.gethostname()}
    assert re.fullmatch(r"run CPU -  RAM \d+\.\d\d GiB", probe.line(status, "running"))
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # busy for 0.3 s of CPU
        pass
    line = probe.line(status, "running")
    match = re.fullmatch(r"run CPU (\d+)%  RAM (\d+\.\d\d) GiB", line)
    assert match, line
    assert int(match.group(1)) > 0
    rss = psutil.Process().memory_info().rss / 2**30
    assert float(match.group(2)) == pytest.approx(rss, abs=0.1)


def test_run_screen_shows_the_process_line_read_in_the_worker_thread(runs):
    calls = []

    def probe(status, state):
        calls.append((threading.current_thread() is threading.main_thread(), status.get("pid"), state))
        return "run CPU 97%  RAM 2.00 GiB"

    app = app_for(runs, process_probe=probe)

    async def scenario(pilot):
        table(app).move_cursor(row=table(app).get_row_index("beta-running"))
        await pilot.press("enter")
        screen = app.screen
        await wait_for(pilot, lambda: "RAM" in str(screen.query_one("#proc").render()), "the CPU/RAM line")
        assert str(screen.query_one("#proc").render()) == "run CPU 97%  RAM 2.00 GiB"
        assert "GPU: probe stub" in str(screen.query_one("#gpu").render())  # beside the GPU line

    drive(app, scenario)
    assert calls and all(not in_main for in_main, _, _ in calls)  # never in the UI thread
    assert calls[0][1:] == (os.getpid(), "running")


# stop asks first ---------------------------------------------------------------------------------
def test_a_message_that_comes_while_the_run_screen_closes_is_not_an_error(runs):
    """The app closing removes a screen's widgets while GPU and process messages, and the screen's
    own one-second timer, still redraw it (the suite failed with NoMatches '#run-title' there)."""
    from oaecmlr_tui.messages import GpuStatus

    app = app_for(runs, [])

    async def scenario(pilot):
        table(app).move_cursor(row=table(app).get_row_index("beta-running"))
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        await app.screen.query_one("#run-title").remove()  # as when the app closes
        app.on_gpu_status(GpuStatus(("GPU: later",)))  # what a message handled now would do
        assert app.gpu == ("GPU: later",)
        await pilot.pause(1.2)  # the screen's timer and the poll's own messages redraw it too

    drive(app, scenario)


def test_stop_on_the_run_screen_asks_and_no_keeps_the_run(runs):
    notes = []
    app = app_for(runs, notes)

    async def scenario(pilot):
        table(app).move_cursor(row=table(app).get_row_index("beta-running"))  # its pid is this test: never say y
        await pilot.press("enter")
        assert isinstance(app.screen, RunScreen)
        for answer in ("n", "escape"):
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            assert str(app.screen.query_one("#confirm-question").render()) == "stop beta-running? y/n"
            await pilot.press(answer)
            assert isinstance(app.screen, RunScreen)
        assert not (runs / "beta-running" / "STOP").exists() and not notes
        assert [(b.key, b.description) for b in ConfirmScreen.BINDINGS if b.show] == [("y", "Yes"), ("n", "No")]
        assert app.watched == "beta-running"  # back on the run screen, still watching it

    drive(app, scenario)


# notes and tags --------------------------------------------------------------------------------------
def test_tracker_reads_meta_only_when_it_changed(runs, monkeypatch):
    from oaecmlr.store.runs import RunMeta

    tracker = RunTracker(runs)
    tracker.poll()
    assert tracker.metas() == ()
    run = RunDir(runs / "beta-running")
    write_meta(run, {"note": "rho sweep, lr halved", "tags": ["sweep", "lr"]})
    assert tracker.poll()  # a new note is a change
    assert tracker.metas() == (("beta-running", RunMeta("rho sweep, lr halved", ("sweep", "lr"))),)
    reads = []
    import oaecmlr_tui.tailer as tailer

    monkeypatch.setattr(tailer, "read_meta", lambda r, warn=None: reads.append(r) or {})
    assert not tracker.poll() and reads == []  # unchanged mtime: not read again
    os.utime(run.meta, ns=(time.time_ns() + 10**9,) * 2)
    assert tracker.poll() and len(reads) == 1  # rewritten (here: read as empty)
    assert tracker.metas() == ()
    monkeypatch.undo()
    write_meta(run, {"note": "back", "tags": []})
    tracker.poll()
    run.meta.unlink()
    assert tracker.poll() and tracker.metas() == ()


def test_notes_and_tags_in_the_table_the_filter_and_the_run_screen(runs):
    write_meta(RunDir(runs / "beta-running"), {"note": "lower lr, cams normalised", "tags": ["ablation"]})
    write_meta(RunDir(runs / "alpha-finished"), {"note": "", "tags": ["baseline", "paper"]})
    app = app_for(runs)

    async def scenario(pilot):
        await wait_for(pilot, lambda: cell_or_none(app, "alpha-finished", "note") == "#baseline #paper", "the notes")
        assert "note" in table(app).columns and "start" in table(app).columns  # wide: everything fits
        assert cell(app, "beta-running", "note") == "#ablation lower lr, cams norm…"  # NOTE_WIDTH 30
        assert cell(app, "alpha-finished", "note") == "#baseline #paper"
        assert cell(app, "gamma-failed", "note") == ""

        await pilot.press("slash", *"paper")  # a tag
        assert row_names(app) == ["alpha-finished"]
        await pilot.press(*["backspace"] * 5, *"NORMAL")  # part of a note, any case
        assert row_names(app) == ["beta-running"]
        await pilot.press(*["backspace"] * 6, "enter")
        assert len(row_names(app)) == 3

        # a note written while the dashboard runs shows up
        write_meta(RunDir(runs / "gamma-failed"), {"note": "nan at lr 1e-3", "tags": []})
        await wait_for(pilot, lambda: cell_or_none(app, "gamma-failed", "note") == "nan at lr 1e-3", "the new note")

        table(app).move_cursor(row=table(app).get_row_index("beta-running"))
        await pilot.press("enter")
        assert "#ablation lower lr, cams normalised" in str(app.screen.query_one("#run-title").render())

    drive(app, scenario, size=(170, 30))


def test_the_note_column_goes_first_on_a_narrow_screen(runs):
    write_meta(RunDir(runs / "beta-running"), {"note": "a note", "tags": ["t"]})
    app = app_for(runs)

    async def scenario(pilot):
        await wait_for(pilot, lambda: app.meta, "the notes")
        columns = set(table(app).columns)
        assert "note" not in columns and "start" not in columns  # 100 columns: both dropped
        assert {"dataset", "clusters", "elapsed"} <= columns
        await pilot.press("slash", *"a note")  # the filter still sees the hidden note
        assert row_names(app) == ["beta-running"]
        await pilot.press(*["backspace"] * 6, *"#t")  # `#word`: tags only, as the column writes them
        assert row_names(app) == ["beta-running"]
        await pilot.press("backspace", *"r")  # `#r`: no tag has an r (beta-running's name has)
        assert row_names(app) == []

    drive(app, scenario, size=(100, 30))


def test_note_column_is_absent_without_notes_and_sized_to_the_longest(runs):
    app = app_for(runs)

    async def scenario(pilot):
        assert "note" not in table(app).columns  # no run has a note: no empty column
        write_meta(RunDir(runs / "beta-running"), {"note": "short", "tags": []})
        await wait_for(pilot, lambda: "note" in table(app).columns, "the note column")
        assert table(app).columns["note"].width == len("short")

    drive(app, scenario, size=(170, 30))


def test_elapsed_of_a_running_run_agrees_with_runs_and_the_title_does_not_wrap(runs, monkeypatch, capsys):
    from oaecmlr_tui.fmt import summary_line

    from oaecmlr.cli.listing import show_runs
    from oaecmlr.formatting import duration

    clock = T0 + 100 + 3600  # an hour after beta-running started: its last event is minutes older
    monkeypatch.setattr("oaecmlr.formatting.now", lambda: clock)
    show_runs(str(runs), "json")
    listed = {row["name"]: row["elapsed"] for row in json.loads(capsys.readouterr().out)}
    assert listed["beta-running"] == pytest.approx(3600, abs=1) and listed["alpha-finished"] < 100
    app = app_for(runs)

    async def scenario(pilot):
        assert cell(app, "beta-running", "elapsed") == duration(listed["beta-running"]) == "1h00m"
        assert cell(app, "alpha-finished", "elapsed") == duration(listed["alpha-finished"])
        title = summary_line(app.runs["beta-running"])  # what the run screen's title bar shows first
        assert title.no_wrap and title.plain.startswith("beta-running  ● running  elapsed 1h00m  synthetic")

    drive(app, scenario)
