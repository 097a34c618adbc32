"""The life of a run's processes: a lost console never ends training (issue 28), `stop` signals only
the run's own process (issue 26, 1), workers and a sweep's runs die with their parent and a re-run
sweep resumes (issue 26, 9), Ctrl-C is acknowledged at once and stops within an iteration with
exit code 130 (issue 25, 4).

Signals here go only to processes the tests start; pids that name other processes (-1, 0, ...)
are tried inside a pid namespace of their own."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest
from enginefixtures import cli, events_of, tiny_sets
from runfixtures import make_run, stand_in_process

from oaecmlr.cli.console import ConsoleReporter
from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.errors import RunError
from oaecmlr.store.processes import identity, valid_pid
from oaecmlr.store.runs import RunDir, live_state, request_stop
from oaecmlr.store.schema import Resume, Stopping

HOST = os.uname().nodename
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


def wait_for(predicate, timeout=900.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


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


# stop signals only the run's own process -----------------------------------------------------------------------
def test_stop_signals_the_process_that_is_provably_the_runs_own(tmp_path):
    folder = make_run(tmp_path, "own", state="running", upto_epoch=1)
    process = stand_in_process(folder)
    try:
        assert live_state(RunDir(folder).read_status(), None) == "running"
        message = request_stop(RunDir(folder))
        assert message.startswith(f"sent SIGTERM to pid {process.pid}")
        assert process.wait(timeout=10) == 0 and (folder / "STOP").exists()
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("recorded", ["nothing", "another process", "a copy of its identity"])
def test_stop_does_not_signal_a_live_pid_that_is_not_the_runs(tmp_path, recorded):
    """A recycled pid, or a status.json that names a bystander: the bystander is never signalled."""
    bystander = subprocess.Popen(["sleep", "60"])
    other = subprocess.Popen(["sleep", "61"])  # same command and clock tick would be the same identity: not a pid reuse
    try:
        folder = make_run(tmp_path, "r", state="running", pid=bystander.pid, upto_epoch=1)
        run = RunDir(folder)
        process = {"nothing": None, "another process": identity(other.pid),
                   "a copy of its identity": identity(bystander.pid)}[recorded]
        run.write_status("running", pid=bystander.pid, host=HOST, process=process)
        if recorded == "another process":  # the run's process died and the pid went to another
            assert live_state(run.read_status(), None) == "stale"
            with pytest.raises(RunError, match="not running"):
                request_stop(run)
        else:
            message = request_stop(run)
            assert "no signal sent" in message and "\n" not in message and run.stop_request.exists()
        time.sleep(0.3)
        assert bystander.poll() is None
    finally:
        for p in (bystander, other):
            p.kill()
            p.wait()


def test_a_background_resume_names_its_new_process_at_once(tmp_path):
    """Before its process writes, status.json must not name the run's last (dead) process: a sweep
    took that pid for its resumed run and reported it failed at once."""
    from oaecmlr.engine.launch import spawn_detached

    folder = make_run(tmp_path, "r", state="stopped", upto_epoch=1)
    pid = spawn_detached(RunDir(folder), resume=True)
    try:
        status = RunDir(folder).read_status()
        assert status["pid"] == pid and status["state"] == "starting"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_valid_pids():
    assert [valid_pid(v) for v in (1, 4242, 2**22)] == [1, 4242, 2**22]
    assert all(valid_pid(v) is None for v in (-1, 0, True, False, 10**23, 2**22 + 1, "12", 3.0, None, [1]))


def _namespace_works() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True,
                              timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


HOSTILE = textwrap.dedent("""
    # pid 1 of a pid namespace of its own: whatever `stop` signals, only this namespace can die.
    import json, os, socket, subprocess, sys, time
    runs = sys.argv[1]
    bystander = subprocess.Popen(["sleep", "60"])
    results = {}
    for pid in json.loads(sys.argv[2]):
        status = {"state": "running", "pid": pid, "host": socket.gethostname(), "updated": time.time()}
        with open(os.path.join(runs, "x", "status.json"), "w") as f:
            json.dump(status, f)
        done = subprocess.run([sys.executable, "-m", "oaecmlr.cli.app", "stop", "x", "--runs-dir", runs],
                              capture_output=True, text=True, timeout=60)
        time.sleep(0.2)
        results[repr(pid)] = [done.returncode, done.stdout + done.stderr, bystander.poll() is None]
        if bystander.poll() is not None:
            bystander = subprocess.Popen(["sleep", "60"])
    bystander.kill()
    print(json.dumps(results))
""")


@pytest.mark.skipif(not _namespace_works(), reason="needs `unshare --pid --fork --mount-proc` (root or user namespaces)")
def test_stop_refuses_a_status_pid_that_is_not_a_process_id_in_one_line(tmp_path):
    make_run(tmp_path, "x", state="running", upto_epoch=1)
    hostile = [-1, 0, True, 10**23, "1"]
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", HOSTILE, str(tmp_path),
                           json.dumps(hostile)], capture_output=True, text=True, timeout=300,
                          start_new_session=True)  # pid 0 is the caller's process group: the namespace's only
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for pid in hostile:
        code, output, bystander_alive = results[repr(pid)]
        assert bystander_alive, f"pid {pid!r}: {output}"
        assert code == 1 and output.count("\n") == 1 and output.startswith("error:"), f"pid {pid!r}: {output}"
        assert "SIGTERM" not in output and "Traceback" not in output


# the console ---------------------------------------------------------------------------------------------------
def test_the_console_acknowledges_a_stop_and_names_the_resume_command(tmp_path):
    from rich.console import Console

    console = Console(record=True, width=200)
    reporter = ConsoleReporter(console, runs_dir=str(tmp_path), run="r1")
    reporter(Resume(from_epoch=1, iteration=5, epochs=3))
    reporter(Stopping(signal="SIGINT"))
    text = console.export_text()
    assert "resumed in epoch 2/3 after iteration 5" in text  # not "after epoch 1, iteration 5 of 3"
    assert "stopping after this iteration; Ctrl-C again to stop now" in text


def test_a_lost_console_is_recorded_once_after_the_start_event(tmp_path, monkeypatch):
    """The warning never comes before `start` (the first event of the contract), nor twice."""
    from oaecmlr.engine import recorder as recorder_module
    from oaecmlr.store.schema import Start

    detached = []
    monkeypatch.setattr(recorder_module, "detach_console", detached.append)  # not this test process's own

    def closed_pipe(event):
        raise BrokenPipeError(32, "Broken pipe")

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    recorder = recorder_module.RunRecorder(run, closed_pipe)
    recorder.lose_console("SIGHUP")  # while the images load, before any event
    recorder.start(Start(schema=0, kind="usl", run="r", dataset="synthetic", epochs=1, iterations=1, arch="resnet18",
                        world_size=1, per_rank_batch=4, global_batch=4, lr=0.1, device="cpu", seed=0))
    recorder.show(Stopping(signal="SIGINT"))  # the listener is gone: no second loss
    recorder.close()
    kinds = [(e["event"], e.get("what")) for e in events_of(run.path)]
    assert kinds == [("start", None), ("warning", "console")] and detached == [run.log]


def test_the_kernels_repeated_parent_death_signal_is_one_stop(tmp_path, monkeypatch):
    """PR_SET_PDEATHSIG sends SIGTERM once per thread of the process: one graceful stop, not a
    stop at once; a SIGTERM after that, while the parent lives, would be the second."""
    from oaecmlr.engine import parent_death
    from oaecmlr.engine import recorder as recorder_module

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    recorder = recorder_module.RunRecorder(run)
    recorder.install_signal_handlers()
    try:
        monkeypatch.setattr(parent_death, "_watched", os.getppid() + 1)  # as if the parent had died
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert recorder.stop_reason() == f"SIGTERM: its parent process {os.getppid() + 1} died"
    finally:
        recorder.close()


RACE_CHILD = textwrap.dedent("""
    import json, os, signal, sys, time
    from oaecmlr.engine import parent_death
    seen = []
    signal.signal(signal.SIGTERM, lambda s, f: seen.append([os.getppid(), parent_death.parent_died()]))
    parent_death.die_with_parent(int(sys.argv[1]))
    open(sys.argv[2] + ".ready", "w").close()
    deadline = time.time() + 6
    while time.time() < deadline:
        time.sleep(0.05)
    open(sys.argv[2], "w").write(json.dumps(seen))
""")
RACE_PARENT = textwrap.dedent("""
    import ctypes, os, subprocess, sys, threading, time
    out = sys.argv[1]
    subprocess.Popen([sys.executable, "-c", sys.argv[2], str(os.getpid()), out])
    while not os.path.exists(out + ".ready"):
        time.sleep(0.05)
    threading.Thread(target=lambda: (time.sleep(1.5), os._exit(0))).start()
    ctypes.CDLL(None).pthread_exit(None)  # the main thread ends first, the process a little later
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_parent_is_dead_from_its_first_death_signal(tmp_path):
    """A parent dies thread by thread (SIGKILL of a sweep with a spinner thread): the kernel signals
    when the thread that started the child exits, and again when the last one does. Already the
    first signal must read as the parent's death, or the second would count as a second stop."""
    out = tmp_path / "seen.json"
    subprocess.run([sys.executable, "-c", RACE_PARENT, str(out), RACE_CHILD], timeout=120)
    assert wait_for(out.exists, 60)
    seen = json.loads(out.read_text())
    assert seen and seen[0][0] == seen[0][1]  # the first came while getppid() still named the parent
    assert all(died == seen[0][1] for _, died in seen)


def test_no_space_left_says_whether_a_checkpoint_exists(tmp_path):
    import errno

    from oaecmlr.engine.recorder import RunRecorder
    from oaecmlr.engine.train_process import record_failure

    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    recorder = RunRecorder(run)
    message = str(record_failure(recorder, OSError(errno.ENOSPC, "No space left on device")))
    run.last.write_bytes(b"a checkpoint")
    later = str(record_failure(recorder, OSError(errno.ENOSPC, "No space left on device")))
    recorder.close()
    assert message.endswith(f"there is no checkpoint yet: `oaecmlr resume r --runs-dir {tmp_path}` starts over "
                            "from epoch 0")
    assert later.endswith(f"`oaecmlr resume r --runs-dir {tmp_path}` continues from the last checkpoint")


# e2e: a lost console never ends training -------------------------------------------------------------------
def _warning(folder: Path) -> dict:
    warnings = [e for e in events_of(folder) if e["event"] == "warning" and e["what"] == "console"]
    assert len(warnings) == 1
    return warnings[0]


def _finished(folder: Path) -> None:
    events = events_of(folder)
    assert events[-1]["event"] == "end" and not any(e["event"] == "failure" for e in events)
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"


@pytest.mark.e2e
@pytest.mark.parametrize("gpus", ["cpu", "cpu,cpu"])
def test_a_run_whose_output_pipe_closes_after_the_first_line_finishes(tmp_path, gpus):
    with started(*COMMAND, "run", "demo", "--name", "p", "--gpus", gpus, "--runs-dir", str(tmp_path),
                 *sets("run.epochs=3"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
        assert process.stdout.readline()  # the first line (with two workers, maybe a worker's warning)
        process.stdout.close()  # the reader is gone: the next console line meets EPIPE
        assert process.wait(timeout=1800) == 0
    folder = tmp_path / "p"
    _finished(folder)
    assert [e["epoch"] for e in events_of(folder) if e["event"] == "epoch_end"] == [1, 2, 3]
    assert "the console was lost" in _warning(folder)["message"]
    assert "run folder:" in (folder / "log.txt").read_text()  # what the console would have shown


@pytest.mark.e2e
def test_a_foreground_run_whose_terminal_hangs_up_finishes(tmp_path):
    """A dropped SSH session: the run's controlling terminal hangs up (SIGHUP, then EIO on writes)."""
    master, slave = pty.openpty()

    def controlling_terminal():
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


@pytest.mark.e2e
def test_sighup_to_a_foreground_run_lets_it_finish(tmp_path):
    with started(*COMMAND, "run", "demo", "--name", "s", "--runs-dir", str(tmp_path), *sets("run.epochs=3"),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert wait_for(lambda: has_event(tmp_path / "s", "iter"))
        process.send_signal(signal.SIGHUP)
        _, err = process.communicate(timeout=1800)
        assert process.returncode == 0, err
    folder = tmp_path / "s"
    _finished(folder)
    assert "(SIGHUP)" in _warning(folder)["message"]
    assert "run folder:" not in err and "run folder:" in (folder / "log.txt").read_text()  # console output: log only


@pytest.mark.e2e
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
@pytest.mark.e2e
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


@pytest.mark.e2e
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
@pytest.mark.e2e
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


@pytest.mark.e2e
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

    with started(*command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as again:
        assert b"sweep: 1 setting(s)" in again.stdout.readline()
        again.send_signal(signal.SIGHUP)
        again.stdout.close()
        assert again.wait(timeout=1800) == 0
    _finished(folder)
    assert [e["event"] for e in events_of(folder)].count("resume") == 1
    log = (tmp_path / "sweep-demo.log").read_text()
    assert "the console was lost (SIGHUP)" in log and "sweep done: 1 finished, 0 skipped, 0 failed" in log
