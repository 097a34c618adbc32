"""`benchmarks/device_check.sh`, the GPU checks for a session lent a GPU machine, kept from rotting
while none is lent: its dry run on this CPU prints every step and checks each one's code."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from helpers import device_check

ROOT = Path(__file__).resolve().parents[2]


def test_the_steps_are_complete_and_fit_in_470_seconds():
    module = device_check()
    plan = module.steps()
    assert sum(step.cap_s for step in plan) <= module.TOTAL_CAP_S == 470
    commands = {step.name: " ".join(step.command) for step in plan}
    assert "oaecmlr run demo --gpus 0 --epochs 2" in commands["e2e-run"]
    assert "resume device-demo --epochs 3" in commands["e2e-resume"]
    assert "--no-amp --iterations 40" in commands["train-fp32"] and "--sync-count 5" in commands["train-fp32"]
    assert "--ddp --iterations 40" in commands["train-bf16"] and "--no-amp" not in commands["train-bf16"]
    assert "--msmt" in commands["msmt"]  # one evaluate() at MSMT17 size, peak memory reserved
    assert "--device cuda --arch resnet50 --size 256x128" in commands["batchnorm"]
    assert "gpu_lines" in commands["nvml"] and "bench_pseudo_labels.py --device cuda" in commands["pseudo-labels"]


def test_a_step_stopped_by_its_cap_keeps_what_it_printed(monkeypatch):
    module = device_check()
    step = module.Step("slow", 2, (sys.executable, "-c", "print('measured 1.0'); print('{\"x\": 1}');"
                                   "import time; time.sleep(30)"), "a step that outlives its cap")
    log, results = io.StringIO(), io.StringIO()
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # as device_check.sh sets it
    code, seconds = module.run_step(step, 2, log, results)
    assert code is None and seconds < 15
    assert "measured 1.0" in log.getvalue()
    assert results.getvalue() == '{"step": "slow", "x": 1}\n'


def test_the_run_keeps_to_its_total_and_says_what_each_step_did(monkeypatch, tmp_path, capsys):
    module = device_check()
    sleeper = (sys.executable, "-c", "print('started'); import time; time.sleep(30)")
    monkeypatch.setattr(module, "steps", lambda: [module.Step("slow", 3, sleeper, "outlives its cap"),
                                                  module.Step("late", 2, (sys.executable, "-c", "print(1)"), "too late")])
    monkeypatch.setattr(module, "TOTAL_CAP_S", 5)
    monkeypatch.setenv("OUT", str(tmp_path))
    assert module.main([]) == 0
    summary = capsys.readouterr().out.split("=== summary\n")[1].splitlines()
    assert summary[0].startswith("slow: stopped by its 3 s cap after 3.")
    assert summary[1] == "late: skipped (the 5 s are spent)"
    assert "started" in (tmp_path / "device_check.log").read_text()


def test_the_dry_run_catches_a_step_whose_code_has_rotted():
    module = device_check()
    rotted = module.Step("rotted", 10, (sys.executable, "benchmarks/bench_batchnorm.py", "--no-such-option"), "rotted")
    with pytest.raises(SystemExit):
        module.dry_check(rotted)
    wrong = module.Step("wrong", 10, (sys.executable, "-m", "oaecmlr", "run", "demo", "--no-such-option"), "wrong")
    with pytest.raises(Exception, match="no-such-option"):
        module.dry_check(wrong)
