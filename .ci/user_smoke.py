"""The CLI as a user meets it, in the environment README command 1 installs and nothing else
(no dev extras: a dev dependency once hid a missing runtime import that crashed every usage error).

Every bad command must end with a message and a non-zero exit, never a traceback or an escape
code; a tiny training run, `runs`, `show` and `compare` must work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

ESCAPE = re.compile(r"\x1b\[")
TINY = ["--epochs", "1", "--set", "run.iterations=2", "--set", "data.synthetic_ids=24", "--set",
        "data.synthetic_test_ids=10", "--set", "data.synthetic_cams=3", "--set", "data.synthetic_images=3",
        "--set", "data.height=32", "--set", "data.width=16", "--set", "data.num_instances=4",
        "--set", "cluster.k1=6", "--set", "cluster.k2=2", "--set", "cluster.min_samples=2", "--set", "data.pad=2"]


def oaecmlr(*args: str, expect: int | None, env: dict) -> str:
    done = subprocess.run(["oaecmlr", *args], capture_output=True, text=True, env=env, timeout=600)
    output = done.stdout + done.stderr
    problems = []
    if "Traceback" in output:
        problems.append("printed a traceback")
    if ESCAPE.search(output):
        problems.append("printed terminal escape codes")
    if expect == 0 and done.returncode != 0 or expect is not None and expect != 0 and done.returncode == 0:
        problems.append(f"exited {done.returncode}, expected {'0' if expect == 0 else 'non-zero'}")
    status = "FAIL" if problems else "ok"
    print(f"{status}: oaecmlr {' '.join(args)} -> exit {done.returncode}" + (f" ({'; '.join(problems)})" if problems else ""))
    if problems:
        print(output)
        raise SystemExit(1)
    return output


def main() -> None:
    with tempfile.TemporaryDirectory() as runs:
        env = {**os.environ, "OAECMLR_RUNS": runs, "OAECMLR_CACHE": os.path.join(runs, ".cache"), "COLUMNS": "100"}
        oaecmlr("--help", expect=0, env=env)
        oaecmlr("--version", expect=0, env=env)
        for bad in (["run", "demo", "--seeed", "3"], ["run"], ["runz"], ["run", "demo", "--epochs", "two"],
                    ["runs", "--format", "html"], ["eval", "x", "--num", "0"], ["show", "no-such-run"],
                    ["run", "dmeo"], ["run", "demo", "--set", "cluster.epz=1"]):
            oaecmlr(*bad, expect=1, env=env)
        oaecmlr("run", "demo", *TINY, "--name", "smoke-a", expect=0, env=env)
        oaecmlr("run", "demo", *TINY, "--seed", "2", "--name", "smoke-b", expect=0, env=env)
        oaecmlr("runs", expect=0, env=env)
        oaecmlr("show", "smoke-a", expect=0, env=env)
        oaecmlr("compare", "smoke-a", "smoke-b", expect=0, env=env)
    print("user-environment smoke test passed")


if __name__ == "__main__":
    sys.exit(main())
