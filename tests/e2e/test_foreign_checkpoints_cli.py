"""Checkpoints on tiny runs: Cluster Contrast files via eval, --init and export; another arch refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ccfixtures import Payload, save_cc, trained_looking
from enginefixtures import cli, tiny_config, tiny_sets
from typer.testing import CliRunner

from oaecmlr.cli.app import app
from oaecmlr.cli.evaluate import FileOptions, evaluate_run
from oaecmlr.cli.export import export_features
from oaecmlr.core.evaluation import evaluate_rank
from oaecmlr.engine.checkpoint import (
    load_checkpoint,
)
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import CheckpointError, CliError, RunFailed

runner = CliRunner()

# ---------- end to end: a tiny run, its Cluster Contrast twin, eval and export ----------
FILE_DATA = ["--dataset", "synthetic", "--height", "32", "--width", "16"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from oaecmlr.engine.launch import start_run

    root = tmp_path_factory.mktemp("runs")
    run = start_run(tiny_config(), "tiny", str(root), preset="demo")
    cc = save_cc(load_checkpoint(run.best)["model"], root / "model_best.pth.tar")
    return root, run, cc


def test_eval_of_a_cluster_contrast_file_scores_its_weights(tiny):
    root, run, cc = tiny
    options = FileOptions(dataset="synthetic", arch="resnet18", height=32, width=16)
    ours = evaluate_run(str(run.best), None, options=FileOptions(height=32, width=16))  # arch, dataset: the file's
    theirs = evaluate_run(str(cc), None, options=options)
    assert ours["format"] == "oaecmlr" and ours["arch"] == "resnet18" and ours["dataset"] == "synthetic"
    assert theirs["format"] == "cluster-contrast" and theirs["epoch"] == 50 and theirs["best_mAP"] == 0.5
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP", "num_query", "num_gallery"):
        assert theirs[key] == ours[key], key
    result = cli("eval", str(cc), "--arch", "resnet18", *FILE_DATA, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mAP"] == theirs["mAP"]
    result = cli("eval", str(cc), *FILE_DATA)  # the arch is not stored: resnet50 is assumed, and refused
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "pass --arch resnet18" in result.stderr and "Traceback" not in result.stderr


def test_init_from_a_cluster_contrast_file(tiny, tmp_path):
    from oaecmlr.engine.launch import start_run

    _, run, cc = tiny
    source = load_checkpoint(run.best)["model"]
    config = tiny_config("run.epochs=1", "run.eval_every=1", "optim.lr=1e-12")
    config.model.init = str(cc)
    started = start_run(config, "from-cc", str(tmp_path), preset="demo")
    model = load_checkpoint(started.last)["model"]
    for key, value in source.items():
        if value.is_floating_point() and "running_" not in key:  # BatchNorm statistics move in training
            assert torch.allclose(model[key], value, atol=1e-6), key
    wrong = tiny_config("run.epochs=1", "model.arch=mobilenet_v2")
    wrong.model.init = str(cc)
    with pytest.raises(CheckpointError, match="pass --arch resnet18"):
        start_run(wrong, "wrong", str(tmp_path), preset="demo")
    assert not (tmp_path / "wrong").exists()


def test_a_malicious_file_is_refused_by_eval(tmp_path):
    marker = tmp_path / "pwned"
    path = save_cc(trained_looking().state_dict(), tmp_path / "model_best.pth.tar", extra=Payload(marker))
    result = cli("eval", str(path), *FILE_DATA, "--arch", "resnet18")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "holds Python objects that are not loaded (posix.system)" in result.stderr
    assert "weights_only" not in result.stderr and "\x1b" not in result.stderr
    assert not marker.exists()


def test_eval_options_belong_to_files(tiny):
    root, _, _ = tiny
    with pytest.raises(CliError, match="--dataset, --arch: only for a checkpoint file"):
        evaluate_run("tiny", str(root), options=FileOptions(dataset="synthetic", arch="resnet18"))
    with pytest.raises(CliError, match="--checkpoint picks a run's best.pt or last.pt"):
        evaluate_run(str(root / "tiny" / "best.pt"), None, checkpoint="last")


def test_export_writes_what_eval_scores(tiny, tmp_path):
    root, run, cc = tiny
    result = runner.invoke(app, ["export", "tiny", "--runs-dir", str(root)])
    assert result.exit_code == 0, result.output
    folder = run.path / "features-best"
    meta = json.loads((folder / "meta.json").read_text())
    q, g = np.load(folder / "query_features.npy"), np.load(folder / "gallery_features.npy")
    labels = {name: np.load(folder / f"{name}.npy") for name in ("query_pids", "query_camids", "gallery_pids",
                                                                 "gallery_camids")}
    assert q.dtype == g.dtype == np.float32 and q.ndim == g.ndim == 2 and q.shape[1] == g.shape[1] == 512
    assert all(a.dtype == np.int64 for a in labels.values())
    assert labels["query_pids"].shape == labels["query_camids"].shape == (q.shape[0],)
    assert labels["gallery_pids"].shape == labels["gallery_camids"].shape == (g.shape[0],)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    assert (folder / "query_paths.txt").read_text() == "" == (folder / "gallery_paths.txt").read_text()  # synthetic
    assert meta["run"] == "tiny" and meta["checkpoint"] == "best" and meta["arch"] == "resnet18"
    assert meta["epoch"] == load_checkpoint(run.best)["epoch"] and meta["dataset"] == "synthetic"
    assert meta["shapes"]["query_features"] == list(q.shape) and meta["shapes"]["gallery_pids"] == [g.shape[0]]
    scored = evaluate_run("tiny", str(root))
    mine = evaluate_rank(torch.from_numpy(2 - 2 * q @ g.T), labels["query_pids"], labels["gallery_pids"],
                         labels["query_camids"], labels["gallery_camids"])
    assert mine["mAP"] == pytest.approx(scored["mAP"], abs=1e-6)
    assert (q.shape[0], g.shape[0]) == (scored["num_query"], scored["num_gallery"])
    # a folder that is not empty is refused unless --force
    refused = runner.invoke(app, ["export", "tiny", "--runs-dir", str(root)])
    assert isinstance(refused.exception, CliError) and "--force" in str(refused.exception)
    with pytest.raises(CliError, match="not empty"):
        export_features("tiny", str(root), str(folder))
    meta = export_features("tiny", str(root), str(folder), checkpoint="last", force=True)
    assert meta["checkpoint"] == "last" and np.load(folder / "query_features.npy").shape == q.shape
    # a checkpoint file exports like eval reads it
    meta = export_features(str(cc), None, str(tmp_path / "cc"), options=FileOptions(
        dataset="synthetic", arch="resnet18", height=32, width=16))
    assert meta["format"] == "cluster-contrast" and meta["run"] is None and meta["epoch"] == 50
    assert np.load(tmp_path / "cc" / "query_features.npy").dtype == np.float32


# ---------- a checkpoint of another architecture: --init and resume refuse it ----------
def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    run = start_run(tiny_config("run.epochs=1"), "r18", str(tmp_path), preset="demo")
    config = tiny_config("run.epochs=1", "model.arch=mobilenet_v2")
    config.model.init = str(run.path)
    with pytest.raises(CheckpointError, match="resnet18"):
        start_run(config, "mob", str(tmp_path), preset="demo")
    result = cli("run", "demo", "--init", "r18", "--arch", "mobilenet_v2", "--runs-dir", str(tmp_path), *tiny_sets())
    assert result.returncode == 1 and "resnet18" in result.stderr and "Traceback" not in result.stderr
    # resuming after the config was edited to another architecture is refused too
    text = run.config.read_text().replace('arch = "resnet18"', 'arch = "mobilenet_v2"')
    run.config.write_text(text)
    with pytest.raises(RunFailed, match="resnet18"):
        resume_run("r18", str(tmp_path), epochs=2)
