"""A run survives its console and its signals: closed pipes, hang-ups, Ctrl-C, SIGKILL of its supervisor or sweep."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from enginefixtures import cli, events_of, tiny_sets, wait_for

from oaecmlr.engine.checkpoint import load_checkpoint

COMMAND = [sys.executable, "-m", "oaecmlr.cli.app"]


@contextlib.contextmanager
def started(*args, **options):
    """A process of the test's own, killed at the end if a failed assertion left it running."""
    process = subprocess.Popen(list(args), **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def has_event(folder: Path, kind: str, **fields) -> bool:
    try:
        return any(e["event"] == kind and all(e.get(k) == v for k, v in fields.items()) for e in events_of(folder))
    except FileNotFoundError:
        return False


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for its parent counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def sets(*extra: str) -> list[str]:
    return [*tiny_sets(), *(x for item in extra for x in ("--set", item))]


# e2e: a lost console never ends training -------------------------------------------------------------------
def _warning(folder: Path) -> dict:
    warnings = [e for e in events_of(folder) if e["event"] == "warning" and e["what"] == "console"]
    assert len(warnings) == 1
    return warnings[0]


def _finished(folder: Path) -> None:
    events = events_of(folder)
    assert events[-1]["event"] == "end" and not any(e["event"] == "failure" for e in events)
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"


def _ignore_sighup() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _as_from_a_terminal() -> None:
    """SIGHUP's default action, as a shell on a terminal gives its commands, whatever this suite
    inherited: run under nohup, it ignores SIGHUP, and so would every run it starts."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize("gpus, nohup", [("cpu", False), ("cpu,cpu", False), ("cpu,cpu", True)])
def test_a_run_whose_output_pipe_closes_after_the_first_line_finishes(tmp_path, gpus, nohup):
    """Under nohup (SIGHUP ignored, inherited by the workers) the supervisor still tells rank 0."""
    with started(*COMMAND, "run", "demo", "--name", "p", "--gpus", gpus, "--runs-dir", str(tmp_path),
                 *sets("run.epochs=3"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                 preexec_fn=_ignore_sighup if nohup else _as_from_a_terminal) as process:
        assert process.stdout.readline()  # the first line (with two workers, maybe a worker's warning)
        process.stdout.close()  # the reader is gone: the next console line meets EPIPE
        assert process.wait(timeout=1800) == 0
    folder = tmp_path / "p"
    _finished(folder)
    assert [e["epoch"] for e in events_of(folder) if e["event"] == "epoch_end"] == [1, 2, 3]
    assert "the console was lost" in _warning(folder)["message"]
    assert "run folder:" in (folder / "log.txt").read_text()  # what the console would have shown
    assert not (folder / "CONSOLE_LOST").exists()


def test_a_foreground_run_whose_terminal_hangs_up_finishes(tmp_path):
    """A dropped SSH session: the run's controlling terminal hangs up (SIGHUP, then EIO on writes)."""
    master, slave = pty.openpty()

    def controlling_terminal():
        _as_from_a_terminal()
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    with started(*COMMAND, "run", "demo", "--name", "h", "--runs-dir", str(tmp_path), *sets("run.epochs=3"),
                 stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_terminal) as process:
        os.close(slave)
        seen = b""
        deadline = time.time() + 900
        while b"epoch 0" not in seen and time.time() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        assert b"epoch 0" in seen
        os.close(master)  # hang up
        assert process.wait(timeout=1800) == 0
    folder = tmp_path / "h"
    _finished(folder)
    assert "(SIGHUP)" in _warning(folder)["message"]


@pytest.mark.parametrize("gpus", ["cpu", "cpu,cpu"])
def test_sighup_to_a_foreground_run_lets_it_finish(tmp_path, gpus):
    """With two workers the SIGHUP reaches the supervisor only, as `kill -HUP PID` would."""
    with started(*COMMAND, "run", "demo", "--name", "s", "--gpus", gpus, "--runs-dir", str(tmp_path),
                 *sets("run.epochs=3"),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal) as process:
        assert wait_for(lambda: has_event(tmp_path / "s", "iter"))
        process.send_signal(signal.SIGHUP)
        _, err = process.communicate(timeout=1800)
        assert process.returncode == 0, err
    folder = tmp_path / "s"
    _finished(folder)
    assert "(SIGHUP)" in _warning(folder)["message"]
    assert "run folder:" not in err and "run folder:" in (folder / "log.txt").read_text()  # console output: log only


def test_a_signal_that_would_end_the_process_silently_is_recorded_as_a_failure(tmp_path):
    done = cli("run", "demo", "--name", "u", "--runs-dir", str(tmp_path), "--detach", *sets("run.epochs=30"))
    assert done.returncode == 0, done.stderr
    pid = json.loads((tmp_path / "u" / "status.json").read_text())["pid"]
    try:
        assert wait_for(lambda: has_event(tmp_path / "u", "iter"))
        os.kill(pid, signal.SIGUSR1)
        assert wait_for(lambda: gone(pid), 300)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)
    last = events_of(tmp_path / "u")[-1]
    assert last["event"] == "failure" and last["error"].startswith("the process received SIGUSR1, which ends it")
    status = json.loads((tmp_path / "u" / "status.json").read_text())
    assert status["state"] == "failed" and "SIGUSR1" in status["error"]


# e2e: Ctrl-C -------------------------------------------------------------------------------------------------------
def test_ctrl_c_is_acknowledged_at_once_stops_within_an_iteration_and_exits_130(tmp_path):
    # One iteration event per epoch: before, a stop waited for it (the end of the epoch).
    folder = tmp_path / "c"
    with started(*COMMAND, "run", "demo", "--name", "c", "--runs-dir", str(tmp_path),
                 *sets("run.epochs=1", "run.iterations=20", "run.log_every=1000"), stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE,
                 text=True) as process:
        assert wait_for(lambda: has_event(folder, "cluster", epoch=1), step=0.02)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=1800)
        assert process.returncode == 130, err
    events = events_of(folder)
    stopped = events[-1]
    assert stopped["event"] == "stopped" and stopped["reason"] == "SIGINT"
    assert stopped["epoch"] == 1 and stopped["iteration"] < 20
    if stopped["iteration"] > 0:  # not in the moment between the clustering and the first iteration
        partial = events[-2]  # the loss of the iterations since the last iteration event
        assert partial["event"] == "iter" and partial["iteration"] == stopped["iteration"]
    assert load_checkpoint(folder / "last.pt")["epoch_labels"]["iteration"] == stopped["iteration"]
    lines = err.splitlines()
    ack = lines.index("stopping after this iteration; Ctrl-C again to stop now")
    where = f"epoch 1 iteration {stopped['iteration']}" if stopped["iteration"] else "epoch 1"
    assert lines[ack + 1] == (f"stopped at {where} (SIGINT), with a checkpoint; "
                              f"`oaecmlr resume c --runs-dir {tmp_path}` continues from there")

    resumed = cli("resume", "c", "--runs-dir", str(tmp_path), timeout=1800)
    assert resumed.returncode == 0, resumed.stderr
    events = events_of(folder)
    assert events[-1]["event"] == "end"
    iterations = [e["iteration"] for e in events if e["event"] == "iter" and e["epoch"] == 1]
    assert iterations == ([stopped["iteration"]] if stopped["iteration"] else []) + [20]


def test_a_second_ctrl_c_before_any_checkpoint_says_resume_starts_over(tmp_path):
    folder = tmp_path / "twice"
    with started(*COMMAND, "run", "demo", "--name", "twice", "--runs-dir", str(tmp_path),
                 *sets("run.epochs=30", "data.synthetic_ids=300", "cluster.k1=20"),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert wait_for(lambda: has_event(folder, "epoch_start", epoch=1))  # clustering, before any checkpoint
        process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 130, err
    assert not (folder / "last.pt").exists()
    last = events_of(folder)[-1]
    assert last["event"] == "stopped" and last["iteration"] is None
    assert last["reason"] == (f"stopped at once by a second SIGINT; there is no checkpoint yet: "
                              f"`oaecmlr resume twice --runs-dir {tmp_path}` starts over from epoch 0")
    assert "continues from the last checkpoint" not in err


# e2e: workers and a sweep's runs die with their parent ---------------------------------------------------------
def test_sigkill_of_the_supervisor_of_two_workers_leaves_no_orphan(tmp_path):
    folder = tmp_path / "w"
    with started(*COMMAND, "run", "demo", "--name", "w", "--gpus", "cpu,cpu", "--runs-dir", str(tmp_path),
                 *sets("run.epochs=30", "run.iterations=20"), stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL) as process:
        assert wait_for(lambda: has_event(folder, "iter", epoch=1))
        workers = json.loads((folder / "status.json").read_text())["workers"]
        process.kill()
        process.wait()
    assert wait_for(lambda: all(gone(pid) for pid in workers), 600)
    last = events_of(folder)[-1]
    assert last["event"] == "stopped" and last["reason"] == f"SIGTERM: its parent process {process.pid} died"
    assert json.loads((folder / "status.json").read_text())["state"] == "stopped"


def test_sigkill_of_a_sweep_stops_its_run_and_the_sweep_run_again_resumes_it(tmp_path):
    """The re-run also loses its console (SIGHUP, then a closed pipe) and still completes the sweep."""
    command = [*COMMAND, "sweep", "demo", "--seeds", "1", "--runs-dir", str(tmp_path), *sets("run.iterations=20")]
    folder = tmp_path / "demo-s1"
    with started(*command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as sweep:
        assert wait_for(lambda: has_event(folder, "iter", epoch=1))
        run_pid = json.loads((folder / "status.json").read_text())["pid"]
        sweep.kill()
        sweep.wait()
    assert wait_for(lambda: gone(run_pid), 600)
    last = events_of(folder)[-1]
    assert last["event"] == "stopped" and last["reason"] == f"SIGTERM: its parent process {sweep.pid} died"

    with started(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_as_from_a_terminal) as again:
        assert b"sweep: 1 setting(s)" in again.stdout.readline()
        again.send_signal(signal.SIGHUP)
        again.stdout.close()
        assert again.wait(timeout=1800) == 0
    _finished(folder)
    assert [e["event"] for e in events_of(folder)].count("resume") == 1
    log = (tmp_path / "sweep-demo.log").read_text()
    assert "the console was lost (SIGHUP)" in log and "sweep done: 1 finished, 0 skipped, 0 failed" in log
