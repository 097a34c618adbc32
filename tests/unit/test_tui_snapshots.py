"""SVG snapshots of the runs, run and compare screens at 100x30 on fixed fixture runs, the runs
screen wide enough for the note column, and the stop question.

Times are fixed (start times, UTC), the runs folder is relative and the GPU and CPU/RAM probes are
stubs, so the pictures do not depend on the clock or the machine. Update with
`pytest tests/unit/test_tui_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pytest_textual_snapshot")

from oaecmlr_tui.app import make_app  # noqa: E402
from runfixtures import make_run  # noqa: E402

from oaecmlr.store.runs import RunDir, write_meta  # noqa: E402

T0 = 1_700_000_000.0  # 2023-11-14 22:13 UTC
SIZE = (100, 30)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("oaecmlr.formatting.now", lambda: T0 + 1000)  # "last event .. ago" of the running run
    make_run("runs", "baseline-market", state="finished", start_time=T0, epochs=6)
    make_run("runs", "no-oae-market", state="running", start_time=T0 + 900, epochs=6, base_map=0.12, gain=0.04,
             sets={"oae.rho": 0.0})
    make_run("runs", "lam0-market", state="failed", start_time=T0 + 1800, epochs=6, upto_epoch=2,
             sets={"cmlr.lam": 0.0})
    write_meta(RunDir(tmp_path / "runs" / "no-oae-market"), {"note": "OAE off: the outliers stay out",
                                                              "tags": ["ablation"]})
    yield "runs"
    monkeypatch.undo()
    time.tzset()


def app_on(runs_dir):
    return make_app(runs_dir, poll_interval=0.05, gpu_probe=lambda run_gpus=(): ("GPU 0:  87% busy  memory 21.3/79.6 GiB",),
                    process_probe=lambda status, state: "run CPU 104%  RAM 2.31 GiB")


async def until(pilot, predicate):
    for _ in range(200):
        if predicate():
            await pilot.pause()
            return
        await pilot.pause(0.025)
    raise AssertionError("the dashboard did not get there")


def test_runs_screen(snap_compare, runs_dir):
    app = app_on(runs_dir)

    async def ready(pilot):
        await until(pilot, lambda: app.screen.table.row_count == 3)
        await pilot.press("m")

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_run_screen(snap_compare, runs_dir):
    app = app_on(runs_dir)

    async def ready(pilot):
        await until(pilot, lambda: app.screen.table.row_count == 3)
        await pilot.press("down", "enter")  # no-oae-market, the running one
        await until(pilot, lambda: app.gpu and app.process and app.screen.log_lines
                    and app.screen.query_one("#log").lines)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_runs_screen_wide_with_notes(snap_compare, runs_dir):
    app = app_on(runs_dir)

    async def ready(pilot):
        await until(pilot, lambda: app.screen.table.row_count == 3 and app.meta)

    assert snap_compare(app, terminal_size=(150, 12), run_before=ready)


def test_stop_asks_first(snap_compare, runs_dir):
    app = app_on(runs_dir)

    async def ready(pilot):
        await until(pilot, lambda: app.screen.table.row_count == 3)
        await pilot.press("down", "x")  # no-oae-market, the running one
        await until(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_compare_screen(snap_compare, runs_dir):
    app = app_on(runs_dir)

    async def ready(pilot):
        await until(pilot, lambda: app.screen.table.row_count == 3)
        await pilot.press("m", "down", "m", "down", "m", "c")
        await until(pilot, lambda: app.screen.query_one("#compare-diff").row_count > 0)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
