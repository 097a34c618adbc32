"""`oaecmlr sweep` with the training call patched: grid x seeds, names, slots, skipping finished runs,
resuming unfinished ones, going on after a failed run, recording a run killed without a word."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest
from runfixtures import dead_pid, make_run, stand_in_process
from typer.testing import CliRunner

import oaecmlr.engine.launch
from oaecmlr.cli.app import app
from oaecmlr.cli.sweep import Job, execute, parse_grid, parse_seeds, run_name
from oaecmlr.config import Config, to_toml
from oaecmlr.errors import ConfigError, DatasetError, RunError
from oaecmlr.store.runs import RunDir, check_name

runner = CliRunner()


@pytest.fixture
def fake_start(monkeypatch):
    """start_run replaced by a fixture run written at once; `fail` maps names to how they fail."""
    calls, fail = [], {}

    def start_run(config, name, runs_dir, preset=None, listener=None, detach=False, with_parent=False):
        calls.append({"name": name, "gpus": config.run.gpus, "seed": config.run.seed, "rho": config.oae.rho,
                      "lam": config.cmlr.lam, "epochs": config.run.epochs, "detach": detach, "preset": preset,
                      "with_parent": with_parent})
        if fail.get(name) == "start":
            raise DatasetError("no market1501 data at /nowhere")
        path = make_run(runs_dir, name, state="failed" if fail.get(name) == "train" else "finished", pid=dead_pid(),
                        base_map=0.1 + 0.01 * config.run.seed + 0.05 * config.oae.rho)
        (path / "config.toml").write_text(to_toml(config))
        return RunDir(path)

    def resume_run(name, runs_dir, listener=None, epochs=None, detach=False, gpus=None, with_parent=False):
        calls.append({"name": name, "resumed": True, "gpus": gpus, "detach": detach, "with_parent": with_parent})
        path = make_run(runs_dir, name, state="finished", pid=dead_pid())
        return RunDir(path)

    monkeypatch.setattr(oaecmlr.engine.launch, "start_run", start_run)
    monkeypatch.setattr(oaecmlr.engine.launch, "resume_run", resume_run)
    return calls, fail


def sweep(tmp_path, *args):
    return runner.invoke(app, ["sweep", "demo", "--runs-dir", str(tmp_path), *args], env={"COLUMNS": "200"})


def test_parse_grid_and_seeds():
    assert parse_grid(["oae.rho=0,1", "cmlr.lam=0, 0.5"]) == {"oae.rho": ["0", "1"], "cmlr.lam": ["0", "0.5"]}
    assert parse_seeds("1,2,3") == [1, 2, 3] and parse_seeds(None) == [None]
    for bad in (["oae.rho"], ["oae.rho="], ["oae.rho=0", "oae.rho=1"], ["oae.nope=1"], ["oae.rho=x"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)
    with pytest.raises(ConfigError):
        parse_seeds("1,1")


def test_run_names_hold_the_differing_keys_and_the_seed():
    name = run_name("demo", {"oae.rho": "0", "cmlr.lam": "0.5", "oae.k": "5"}, ["oae.rho", "cmlr.lam"], 1)
    assert name == "demo-oae.rho=0-cmlr.lam=0.5-s1" and check_name(name)
    assert run_name("demo", {"model.init": "a/b c"}, ["model.init"], 2) == "demo-model.init=a_b_c-s2"


def test_grid_times_seeds_one_after_another(tmp_path, fake_start):
    calls, _ = fake_start
    result = sweep(tmp_path, "--grid", "oae.rho=0,1", "--grid", "cmlr.lam=0.5", "--seeds", "1,2", "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert [c["name"] for c in calls] == ["demo-oae.rho=0-s1", "demo-oae.rho=0-s2", "demo-oae.rho=1-s1",
                                          "demo-oae.rho=1-s2"]
    assert {(c["rho"], c["lam"], c["seed"], c["epochs"], c["detach"], c["gpus"], c["with_parent"]) for c in calls} == {
        (r, 0.5, s, 3, True, "cpu", True) for r in (0.0, 1.0) for s in (1, 2)}
    assert "[4/4] demo-oae.rho=1-s2: finished" in result.stderr
    assert "mean ± std over seeds" in result.stdout


def test_device_slots_are_given_to_the_runs(tmp_path, fake_start):
    calls, _ = fake_start
    assert sweep(tmp_path, "--grid", "oae.rho=0,1", "--gpus", "cpu,cpu").exit_code == 0
    assert [c["gpus"] for c in calls] == ["cpu", "cpu"]


def test_a_failed_run_does_not_stop_the_others(tmp_path, fake_start):
    calls, fail = fake_start
    fail.update({"demo-oae.rho=0-s0": "start", "demo-oae.rho=1-s0": "train"})
    result = sweep(tmp_path, "--grid", "oae.rho=0,1,2")
    assert result.exit_code == 1
    assert len(calls) == 3
    assert "could not start: no market1501 data" in result.stderr
    assert "demo-oae.rho=1-s0: failed: loss became nan" in result.stderr
    assert "1 finished, 0 skipped, 2 failed" in result.stderr


def test_finished_runs_are_skipped_and_unfinished_ones_resumed(tmp_path, fake_start):
    calls, _ = fake_start
    assert sweep(tmp_path, "--grid", "oae.rho=0,1").exit_code == 0
    calls.clear()
    result = sweep(tmp_path, "--grid", "oae.rho=0,1,2")
    assert result.exit_code == 0 and [c["name"] for c in calls] == ["demo-oae.rho=2-s0"]
    assert "already finished, skipped" in result.stderr
    calls.clear()
    make_run(tmp_path, "demo-oae.rho=3-s0", state="stopped", upto_epoch=1)  # a sweep stopped, or killed, earlier
    make_run(tmp_path, "demo-oae.rho=4-s0", state="running", pid=dead_pid(), upto_epoch=1)  # stale
    result = sweep(tmp_path, "--grid", "oae.rho=0,3,4", "--gpus", "cpu")
    assert result.exit_code == 0, result.output
    assert calls == [{"name": n, "resumed": True, "gpus": "cpu", "detach": True, "with_parent": True}
                     for n in ("demo-oae.rho=3-s0", "demo-oae.rho=4-s0")]
    assert "demo-oae.rho=3-s0: resumed on cpu" in result.stderr
    assert "2 finished, 1 skipped, 0 failed" in result.stderr


def test_a_run_that_is_still_running_is_refused(tmp_path, fake_start):
    make_run(tmp_path, "demo-oae.rho=3-s0", state="running", upto_epoch=1)  # this process: alive
    result = sweep(tmp_path, "--grid", "oae.rho=0,3")
    assert isinstance(result.exception, RunError) and "running (another sweep?): demo-oae.rho=3-s0" in \
        str(result.exception)


def test_a_run_killed_without_a_word_is_recorded_as_failed(tmp_path, monkeypatch):
    """SIGKILL (the OOM killer, say) leaves the run no chance to write; the sweep, its parent, saw it."""
    victims = []

    def start_run(config, name, runs_dir, preset=None, listener=None, detach=False, with_parent=False):
        victims.append(subprocess.Popen(["sleep", "60"]))
        threading.Timer(0.3, victims[-1].kill).start()
        return RunDir(make_run(runs_dir, name, state="running", pid=victims[-1].pid, upto_epoch=1))

    monkeypatch.setattr(oaecmlr.engine.launch, "start_run", start_run)
    jobs = [Job(1, "demo-s1", Config(), None)]
    execute(jobs, [None], str(tmp_path), poll_s=0.05)
    assert jobs[0].outcome == "failed" and jobs[0].error.startswith("the run's process was killed by SIGKILL")
    assert json.loads((tmp_path / "demo-s1" / "status.json").read_text())["state"] == "failed"
    assert RunDir(tmp_path / "demo-s1").events.read_text().splitlines()[-1].startswith('{"event": "failure"')


def test_a_sigterm_to_the_sweep_stops_its_runs_as_ctrl_c_does(tmp_path, monkeypatch):
    """A scheduler's kill must not leave the sweep's runs training unattended; the sweep waits for
    them to stop (leaving, it would have them stop at once: they die with it)."""
    runs = []

    def start_run(config, name, runs_dir, preset=None, listener=None, detach=False, with_parent=False):
        path = make_run(runs_dir, name, state="running", upto_epoch=1)
        runs.append(stand_in_process(path))
        if len(runs) == 2:  # both running: now the scheduler's kill
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return RunDir(path)

    monkeypatch.setattr(oaecmlr.engine.launch, "start_run", start_run)
    jobs = [Job(i, f"demo-s{i}", Config(), None) for i in (1, 2)]

    def unhandled(signum, frame):  # what a sweep without its own handler would meet (default: die)
        raise RuntimeError("the SIGTERM passed the sweep by")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(jobs, ["cpu", "cpu"], str(tmp_path), poll_s=0.05)
        assert all(r.poll() is not None for r in runs)  # waited for
        assert [RunDir(tmp_path / j.name).read_status().get("state") for j in jobs] == ["stopped", "stopped"]
        assert all(RunDir(tmp_path / j.name).stop_request.exists() for j in jobs)
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, before)
        for r in runs:
            r.kill()
            r.wait()
