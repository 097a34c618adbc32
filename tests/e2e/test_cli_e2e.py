"""The CLI on tiny real runs (synthetic demo preset): run --detach, eval and visrank, sweep, compare."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oaecmlr.cli.app import app
from oaecmlr.store.events import read_events as read_typed
from oaecmlr.store.schema import to_record

runner = CliRunner()
TINY = ["run.iterations=2", "data.synthetic_ids=20", "data.synthetic_test_ids=10", "data.height=32",
        "data.width=16", "cluster.k1=5", "cluster.min_samples=2"]


def read_events(path) -> list[dict]:
    return [to_record(e) for e in read_typed(path)]


def tiny_sets(epochs: int = 1, *extra: str) -> list[str]:
    return [arg for item in [f"run.epochs={epochs}", *TINY, *extra] for arg in ("--set", item)]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def wait_for_end(run: Path, timeout: float = 180) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        events = read_events(run / "events.jsonl")
        if events and events[-1]["event"] in ("end", "failure"):
            return events
        time.sleep(0.5)
    raise AssertionError(f"no end event in {run} after {timeout}s: {(run / 'stdout.txt').read_text()[-2000:]}")


def test_run_detach_returns_at_once_and_trains_in_the_background(tmp_path):
    start = time.time()
    done = subprocess.run([sys.executable, "-m", "oaecmlr.cli.app", "run", "demo", "--detach", "--name", "bg",
                           "--runs-dir", str(tmp_path), *tiny_sets()], capture_output=True, text=True, timeout=120)
    returned = time.time() - start
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bg"
    run = tmp_path / "bg"
    events_at_return = read_events(run / "events.jsonl") if (run / "events.jsonl").exists() else []
    assert "end" not in [e["event"] for e in events_at_return], f"waited for training ({returned:.0f}s)"
    events = wait_for_end(run)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "cluster" in kinds and "epoch_end" in kinds
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs, evaluated after each, so best.pt and last.pt may differ."""
    root = tmp_path_factory.mktemp("runs")
    invoke("run", "demo", "--name", "tiny", "--runs-dir", root, *tiny_sets(2, "run.eval_every=1"))
    return root, read_events(root / "tiny" / "events.jsonl")


def eval_json(root, *args):
    return json.loads(invoke("eval", "tiny", "--runs-dir", root, "--format", "json", *args).stdout)


def test_eval_reproduces_the_runs_own_evaluations(trained):
    root, events = trained
    evals = {e["epoch"]: e for e in events if e["event"] == "eval"}
    best_epoch = max((e for e in evals.values() if e["epoch"] > 0), key=lambda e: e["mAP"])["epoch"]
    before = (root / "tiny" / "events.jsonl").read_bytes()
    for checkpoint, epoch in (("best", best_epoch), ("last", 2)):
        result = eval_json(root, "--checkpoint", checkpoint)
        assert result["epoch"] == epoch and result["rerank"] is False
        for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
            assert result[key] == pytest.approx(evals[epoch][key], abs=1e-6), (checkpoint, key)
    assert (root / "tiny" / "events.jsonl").read_bytes() == before  # eval writes nothing into the run


def test_eval_rerank_is_labelled(trained):
    root, _ = trained
    result = eval_json(root, "--rerank")
    assert result["rerank"] is True and 0 <= result["mAP"] <= 1
    table = invoke("eval", "tiny", "--runs-dir", root, "--rerank").stdout
    assert "re-ranked" in table and "not re-ranked" not in table
    assert "not re-ranked" in invoke("eval", "tiny", "--runs-dir", root).stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_on_a_gpu_that_is_not_there_says_so_in_one_line(trained):
    """`--device` is checked as `--gpus` is (issue 24), not handed to CUDA to fail with a traceback."""
    root, _ = trained
    done = subprocess.run([sys.executable, "-m", "oaecmlr", "eval", "tiny", "--runs-dir", str(root), "--device", "3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --device 3 needs CUDA, but no CUDA device is visible here (torch.cuda.is_available() is False); "
        "use --device cpu"]


def test_visrank_writes_framed_ranking_images(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "ranks"
    result = eval_json(root, "--visrank", out, "--num", 5)
    files = sorted(out.glob("*.png"))
    assert [Path(p) for p in result["visrank"]] == files and len(files) == 5
    colours = set()
    for file in files:
        image = Image.open(file).convert("RGB")
        assert image.height >= 160 and image.width >= 11 * 80  # query + top-10, each at least 160 x 80
        colours |= {image.getpixel((x, 30)) for x in range(image.width)}
    assert (220, 0, 0) in colours or (0, 170, 0) in colours  # false (red) or true (green) match frames


def test_sweep_runs_the_grid_and_compares_it(tmp_path):
    start = time.time()
    result = runner.invoke(app, ["sweep", "demo", "--grid", "oae.rho=0,1", "--seeds", "1", "--gpus", "cpu,cpu",
                                 "--runs-dir", str(tmp_path), *tiny_sets()], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    names = ["demo-oae.rho=0-s1", "demo-oae.rho=1-s1"]
    for name in names:
        assert read_events(tmp_path / name / "events.jsonl")[-1]["event"] == "end"
        assert f"{name}: finished" in result.stderr
    assert "config diff" in result.stdout and "oae.rho" in result.stdout
    assert time.time() - start < 180
    rerun = runner.invoke(app, ["sweep", "demo", "--grid", "oae.rho=0,1", "--seeds", "1", "--runs-dir", str(tmp_path),
                                *tiny_sets()])
    assert rerun.exit_code == 0 and rerun.stderr.count("already finished, skipped") == 2
