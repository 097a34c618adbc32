"""The life of a run's processes: a lost console never ends training (issue 28), `stop` signals only
the run's own process (issue 26, 1), workers and a sweep's runs die with their parent and a re-run
sweep resumes (issue 26, 9), Ctrl-C is acknowledged at once and stops within an iteration with
exit code 130 (issue 25, 4).

Signals here go only to processes the tests start; pids that name other processes (-1, 0, ...)
are tried inside a pid namespace of their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from enginefixtures import events_of, wait_for
from runfixtures import make_run, stand_in_process

from oaecmlr.cli.console import ConsoleReporter
from oaecmlr.errors import RunError
from oaecmlr.store.processes import identity, valid_pid
from oaecmlr.store.runs import RunDir, live_state, request_stop
from oaecmlr.store.schema import Resume, Stopping

HOST = os.uname().nodename










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


def test_rank_0_records_the_console_its_supervisor_lost_once_at_a_safe_point(tmp_path, monkeypatch):
    """`--gpus cpu,cpu`: the supervisor owns the console and leaves CONSOLE_LOST; rank 0 (no console
    of its own) writes one warning naming the supervisor's reason, and removes the file at close."""
    from oaecmlr.engine import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "detach_console", lambda path: None)
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    recorder = recorder_module.RunRecorder(run)
    assert recorder.stop_reason() is None
    run.note_console_lost("Broken pipe")
    assert recorder.stop_reason() is None and recorder.stop_reason() is None  # a note, not a stop
    recorder.close()
    warnings = [e for e in events_of(run.path) if e["event"] == "warning"]
    assert len(warnings) == 1 and "(Broken pipe)" in warnings[0]["message"]
    assert not run.console_lost.exists()


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
