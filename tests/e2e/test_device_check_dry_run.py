"""`benchmarks/device_check.sh --dry-run`: every step's command line is checked by running its code's imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import device_check

ROOT = Path(__file__).resolve().parents[2]


def test_the_dry_run_prints_every_step_and_their_code_imports():
    # the script runs `python3` from PATH, as on the device machine: put this interpreter's first
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PATH": path})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = [step.name for step in device_check().steps()]
    for name in names:
        assert f"[{name}] cap " in done.stdout
    assert done.stdout.count("  dry run: ") == len(names) and "FAILED" not in done.stdout
    assert done.stdout.rstrip().endswith(f"dry run: {len(names)} steps, caps 465 s of 470 s, 0 failed")
