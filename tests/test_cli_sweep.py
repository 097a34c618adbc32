"""`oaecmlr sweep` with the training call patched: grid x seeds, names, slots, skipping finished runs,
refusing unfinished ones, and going on after a failed run."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest
from runfixtures import dead_pid, make_run
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

    def start_run(config, name, runs_dir, preset=None, listener=None, detach=False):
        calls.append({"name": name, "gpus": config.run.gpus, "seed": config.run.seed, "rho": config.oae.rho,
                      "lam": config.cmlr.lam, "epochs": config.run.epochs, "detach": detach, "preset": preset})
        if fail.get(name) == "start":
            raise DatasetError("no market1501 data at /nowhere")
        path = make_run(runs_dir, name, state="failed" if fail.get(name) == "train" else "finished", pid=dead_pid(),
                        base_map=0.1 + 0.01 * config.run.seed + 0.05 * config.oae.rho)
        (path / "config.toml").write_text(to_toml(config))
        return RunDir(path)

    monkeypatch.setattr(oaecmlr.engine.launch, "start_run", start_run)
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
    assert {(c["rho"], c["lam"], c["seed"], c["epochs"], c["detach"], c["gpus"]) for c in calls} == {
        (r, 0.5, s, 3, True, "cpu") for r in (0.0, 1.0) for s in (1, 2)}
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


def test_finished_runs_are_skipped_and_unfinished_ones_refused(tmp_path, fake_start):
    calls, _ = fake_start
    assert sweep(tmp_path, "--grid", "oae.rho=0,1").exit_code == 0
    calls.clear()
    result = sweep(tmp_path, "--grid", "oae.rho=0,1,2")
    assert result.exit_code == 0 and [c["name"] for c in calls] == ["demo-oae.rho=2-s0"]
    assert "already finished, skipped" in result.stderr
    make_run(tmp_path, "demo-oae.rho=3-s0", state="stopped", upto_epoch=1)
    result = sweep(tmp_path, "--grid", "oae.rho=0,3")
    assert isinstance(result.exception, RunError) and "demo-oae.rho=3-s0 (stopped)" in str(result.exception)


def test_a_sigterm_to_the_sweep_stops_its_runs_as_ctrl_c_does(tmp_path, monkeypatch):
    """A scheduler's kill must not leave the sweep's runs training unattended."""
    sleepers = []

    def start_run(config, name, runs_dir, preset=None, listener=None, detach=False):
        sleepers.append(subprocess.Popen(["sleep", "60"]))
        path = make_run(runs_dir, name, state="running", pid=sleepers[-1].pid, upto_epoch=1)
        return RunDir(path)

    monkeypatch.setattr(oaecmlr.engine.launch, "start_run", start_run)
    jobs = [Job(i, f"demo-s{i}", Config(), None) for i in (1, 2)]

    def unhandled(signum, frame):  # what a sweep without its own handler would meet (default: die)
        raise RuntimeError("the SIGTERM passed the sweep by")

    before = signal.signal(signal.SIGTERM, unhandled)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            execute(jobs, ["cpu", "cpu"], str(tmp_path), poll_s=0.05)
        assert [s.wait(timeout=10) for s in sleepers] == [-signal.SIGTERM, -signal.SIGTERM]
        assert all(RunDir(tmp_path / j.name).stop_request.exists() for j in jobs)
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, before)
        for s in sleepers:
            s.kill()
