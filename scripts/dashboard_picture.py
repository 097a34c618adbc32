"""Draw the README's picture of the dashboard: the run screen of the real app on fixture runs (events
written by the real `EventWriter`, no training), saved as SVG.

    python scripts/dashboard_picture.py docs/images/dashboard.svg

The runs are those of `tests/runfixtures.py`; their log is what the engine would write for their
events (`log_line`). The clock, the GPU line and the run's CPU/RAM line are fixed, as in
`tests/unit/test_tui_snapshots.py`, so the picture depends on neither the machine nor the day.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runfixtures import make_run  # noqa: E402

import oaecmlr.formatting  # noqa: E402
from oaecmlr.engine.recorder import log_line  # noqa: E402
from oaecmlr.store.runs import RunDir, write_meta  # noqa: E402
from oaecmlr.store.schema import parse_event  # noqa: E402

T0 = 1_700_000_000.0
SIZE = (124, 36)
WATCHED = "demo-oae-cmlr"


def write_log(folder: Path) -> None:
    """log.txt as the engine writes it: `TIME INFO event key=value ...`, one line per event."""
    lines = []
    for raw in (folder / "events.jsonl").read_text().splitlines():
        record = json.loads(raw)
        stamp = datetime.fromtimestamp(record["time"], timezone.utc).strftime("%Y-%m-%d %H:%M:%S,000")
        lines.append(f"{stamp} INFO {log_line(parse_event(record))}\n")
    (folder / "log.txt").write_text("".join(lines))


def fixture_runs(root: Path) -> None:
    demo = {"epochs": 10, "iterations": 20}
    make_run(root, "demo-baseline", state="finished", start_time=T0, base_map=0.08, gain=0.05,
             sets={"oae.rho": 0.0, "cmlr.lam": 0.0}, **demo)
    make_run(root, WATCHED, state="running", start_time=T0 + 900, base_map=0.08, gain=0.06, upto_epoch=9, **demo)
    make_run(root, "demo-camera-norm", state="stopped", start_time=T0 + 1800, base_map=0.08, gain=0.055,
             upto_epoch=4, sets={"cluster.camera_norm": "mean"}, **demo)
    for name in ("demo-baseline", WATCHED, "demo-camera-norm"):
        write_log(root / name)
    write_meta(RunDir(root / WATCHED), {"note": "OAE and CMLR on", "tags": ["method"]})
    updated = json.loads((root / WATCHED / "status.json").read_text())["updated"]
    oaecmlr.formatting.now = lambda: updated + 2  # "last event 2s ago" on the running run


async def draw(out: Path) -> None:
    from oaecmlr_tui.app import make_app

    app = make_app("runs", poll_interval=0.05, gpu_probe=lambda: ("GPU 0:  41% busy  memory 1.9/79.6 GiB",),
                   process_probe=lambda status, state: "run CPU 104%  RAM 2.31 GiB")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(400):
            if app.screen.table.row_count == 3:
                break
            await pilot.pause(0.025)
        row = [run.name for run in app.screen.visible()].index(WATCHED)
        await pilot.press(*["down"] * row, "enter")
        for _ in range(400):
            screen = app.screen
            if app.gpu and app.process and getattr(screen, "log_lines", None) and screen.query_one("#log").lines:
                break
            await pilot.pause(0.025)
        await pilot.pause(0.2)
        out.write_text(app.export_screenshot(title="oaecmlr tui"))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images/dashboard.svg").resolve()
    os.environ["TZ"] = "UTC"
    time.tzset()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        fixture_runs(Path("runs"))
        asyncio.run(draw(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
