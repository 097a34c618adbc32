"""The camera-aware pipeline in real (tiny) runs: CA-Jaccard, per-camera normalisation and camera
proxies together with OAE and CMLR; the diagnostics in the events; proxies in checkpoints; a stop
and resume that gives the uninterrupted numbers; two workers."""

from __future__ import annotations

import pytest
import torch
from enginefixtures import cli, events_of, tiny_config, tiny_sets

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.store.schema import Iter

CAMERA = ["cluster.camera_jaccard=true", "cluster.k1_intra=3", "cluster.k1_inter=5", "cluster.k2_intra=1",
          "cluster.k2_inter=2", "cluster.camera_norm=mean", "memory.camera_proxies=true", "memory.camera_negatives=5"]


def numbers(events):
    return [(e["event"], e.get("epoch"), e.get("mAP"), e.get("loss"), e.get("clusters")) for e in events
            if e["event"] in ("eval", "iter", "cluster")]


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    return root, start_run(tiny_config(*CAMERA), "cam", str(root), preset="demo")


def test_all_three_with_oae_and_cmlr_train_and_report_camera_diagnostics(camera_run):
    _, run = camera_run
    events = events_of(run.path)
    assert events[-1]["event"] == "end"
    clusters = [e for e in events if e["event"] == "cluster"]
    for c in clusters:
        assert 1 <= c["cameras_per_cluster"] <= 3 and 0 <= c["cross_camera_images"] <= 1
        assert 0 <= c["cross_camera"] <= 1 and c["knn_backend"] == "torch (camera-aware)"
    state = load_checkpoint(run.last)
    proxies = state["camera_proxies"]
    assert proxies["bank.centroids"].shape[0] == proxies["proxy_cluster"].shape[0] >= clusters[-1]["clusters"]
    assert torch.allclose(proxies["bank.centroids"].norm(dim=1), torch.ones(1))


def test_stop_and_resume_with_camera_proxies_gives_the_uninterrupted_numbers(camera_run, tmp_path):
    _, reference = camera_run

    def stop_in_epoch_two(event):
        if isinstance(event, Iter) and event.epoch == 2 and event.iteration == 1:
            (tmp_path / "stopped" / "STOP").write_text("now")

    run = start_run(tiny_config(*CAMERA), "stopped", str(tmp_path), preset="demo", listener=stop_in_epoch_two)
    assert events_of(run.path)[-1]["event"] == "stopped"
    resume_run("stopped", str(tmp_path))
    assert numbers(events_of(run.path)) == numbers(events_of(reference.path))


def test_two_workers_train_with_camera_proxies(tmp_path):
    sets = [*tiny_sets(), *(x for item in CAMERA for x in ("--set", item))]
    result = cli("run", "demo", "--name", "two", "--gpus", "cpu,cpu", "--runs-dir", str(tmp_path), *sets)
    assert result.returncode == 0, result.stderr
    events = events_of(tmp_path / "two")
    assert events[0]["world_size"] == 2 and events[-1]["event"] == "end"
    assert "camera_proxies" in load_checkpoint(tmp_path / "two" / "last.pt")
