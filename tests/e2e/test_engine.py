"""End-to-end training on the synthetic set (tiny sizes): events, checkpoints, show, stop/resume,
failures. These are real runs through the engine, not mocks."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from enginefixtures import cli, events_of, tiny_config

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.errors import RunFailed
from oaecmlr.store.events import SCHEMA_VERSION
from oaecmlr.store.schema import Iter, Loading


def evaluations(events):
    return [(e["epoch"], e["mAP"], e["rank1"]) for e in events if e["event"] == "eval"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = start_run(tiny_config(), "tiny", str(root), preset="demo")
    return root, run


def test_run_writes_the_event_contract(finished_run):
    _, run = finished_run
    events = events_of(run.path)
    assert events[0]["event"] == "start" and events[0]["schema"] == SCHEMA_VERSION
    kinds = [e["event"] for e in events]
    assert kinds[1] == "eval" and events[1]["epoch"] == 0  # epoch 0: before any training
    assert kinds[-1] == "end"
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == [1, 2]
    assert [e[0] for e in evaluations(events)] == [0, 1, 2]
    for e in events:
        if e["event"] == "eval":
            assert 0 <= e["mAP"] <= 1 and 0 <= e["rank1"] <= 1
    clusters = [e for e in events if e["event"] == "cluster"]
    assert len(clusters) == 2
    for c in clusters:
        assert c["outliers_before"] - c["outliers_after"] == c["oae_assigned"]
        assert set(c["timings"]) >= {"extract", "knn", "jaccard", "dbscan", "oae", "cmlr"}
        assert 0 <= c["purity"] <= 1 and 0 <= c["nmi"] <= 1 and 0 <= c["cross_camera"] <= 1
        assert sum(c["size_histogram"].values()) == c["clusters"]
    iters = [e for e in events if e["event"] == "iter"]
    assert len(iters) == 6 and all(e["images_per_s"] > 0 and e["loss"] > 0 for e in iters)


def test_run_folder_holds_config_checkpoints_status_and_log(finished_run):
    _, run = finished_run
    assert "[oae]" in run.config.read_text()
    assert run.read_status()["state"] == "finished"
    log = run.log.read_text().splitlines()
    events = [e["event"] for e in events_of(run.path)]
    assert [line.split(" INFO ")[1].split()[0] for line in log if " INFO " in line][1:] == events  # after "loading data"
    assert any(" INFO eval epoch=0 mAP=" in line for line in log)
    assert not any("size_histogram" in line or "timings" in line for line in log)
    last = load_checkpoint(run.last)
    assert last["epoch"] == 2 and last["arch"] == "resnet18" and "memory" in last
    best = load_checkpoint(run.best)
    assert best["metrics"]["mAP"] == max(m for ep, m, _ in evaluations(events_of(run.path)) if ep > 0)


def test_show_json_reports_evaluations_and_best(finished_run):
    root, run = finished_run
    result = cli("show", run.name, "--runs-dir", str(root), "--format", "json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [e["epoch"] for e in shown["evaluations"]] == [0, 1, 2]
    assert shown["best"]["mAP"] == max(e["mAP"] for e in shown["evaluations"] if e["epoch"] > 0)
    assert shown["status"] == "finished" and shown["config"]["oae"]["rho"] == 2.0
    assert len(shown["clusters"]) == 2


def test_same_seed_same_numbers(finished_run, tmp_path):
    _, run = finished_run
    again = start_run(tiny_config(), "again", str(tmp_path), preset="demo")
    assert evaluations(events_of(again.path)) == evaluations(events_of(run.path))


@pytest.mark.parametrize("written_before_the_rename", [False, True])
def test_graceful_stop_mid_epoch_then_resume_matches_uninterrupted(finished_run, tmp_path, written_before_the_rename):
    """Also from a checkpoint written before the key `epoch_labels` was named so (it was `phase`)."""
    _, reference = finished_run

    def stop_in_epoch_two(event):
        if isinstance(event, Iter) and event.epoch == 2 and event.iteration == 1:
            (tmp_path / "stopped" / "STOP").write_text("now")

    run = start_run(tiny_config(), "stopped", str(tmp_path), preset="demo", listener=stop_in_epoch_two)
    events = events_of(run.path)
    # The STOP file appears while iteration 1's event is written, after that iteration's stop check:
    # the run stops after the next one, mid-epoch (3 iterations an epoch).
    assert events[-1]["event"] == "stopped" and events[-1]["epoch"] == 2 and events[-1]["iteration"] == 2
    assert run.read_status()["state"] == "stopped"
    assert load_checkpoint(run.last)["epoch_labels"]["iteration"] == 2
    if written_before_the_rename:
        state = load_checkpoint(run.last)
        state["phase"] = state.pop("epoch_labels")
        torch.save(state, run.last)

    resume_run("stopped", str(tmp_path))
    events = events_of(run.path)
    assert events[-1]["event"] == "end"
    assert Counter(e["epoch"] for e in events if e["event"] == "epoch_end") == {1: 1, 2: 1}
    iterations = [(e["epoch"], e["iteration"]) for e in events if e["event"] == "iter"]
    assert len(iterations) == len(set(iterations)) == 6
    assert evaluations(events) == evaluations(events_of(reference.path))


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from oaecmlr.core.memory import ClusterMemory

    original = ClusterMemory.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        calls["n"] += 1
        loss = original(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] > 3 else loss  # epoch 2 of 3 iterations each

    monkeypatch.setattr(ClusterMemory, "forward", poisoned)
    with pytest.raises(RunFailed, match="nan"):
        start_run(tiny_config(), "nan", str(tmp_path), preset="demo")
    run_path = tmp_path / "nan"
    events = events_of(run_path)
    assert events[-1]["event"] == "failure" and "nan" in events[-1]["error"]
    assert load_checkpoint(run_path / "last.pt")["epoch"] == 1
    assert json.loads((run_path / "status.json").read_text())["state"] == "failed"
    assert torch.isfinite(next(iter(load_checkpoint(run_path / "last.pt")["model"].values())).float()).all()


def test_pretrain_then_init_starts_from_the_supervised_model(tmp_path):
    from enginefixtures import TINY

    from oaecmlr.config import load_config

    supervised = load_config("demo", sets=TINY, supervised=True)
    assert supervised.run.kind == "supervised"
    source = start_run(supervised, "source", str(tmp_path), preset="demo")
    events = events_of(source.path)
    assert events[0]["kind"] == "supervised" and not any(e["event"] == "cluster" for e in events)
    best = load_checkpoint(source.best)
    target = tiny_config()
    target.model.init = "source"
    uda = start_run(target, "uda", str(tmp_path), preset="demo")
    start_eval = next(e for e in events_of(uda.path) if e["event"] == "eval")
    assert start_eval["epoch"] == 0 and start_eval["mAP"] == pytest.approx(best["metrics"]["mAP"], abs=1e-6)


def test_start_is_the_first_event_even_when_images_are_decoded(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    for folder, names in (("bounding_box_train", [f"{p:04d}_c{c}s1_00000{k}_00.jpg" for p in range(1, 9) for c in (1, 2)
                                                  for k in range(2)]),
                          ("query", ["0101_c1s1_000001_00.jpg", "0102_c1s1_000001_00.jpg"]),
                          ("bounding_box_test", ["0101_c2s1_000001_00.jpg", "0102_c2s1_000001_00.jpg"])):
        (data / folder).mkdir(parents=True)
        for i, name in enumerate(names):
            Image.new("RGB", (16, 32), (i * 7 % 255, 40, 90)).save(data / folder / name)
    seen = []
    config = tiny_config("run.epochs=1", "data.dataset=cuhk03", f"data.root={data}", f"data.cache_dir={tmp_path / 'c'}")
    run = start_run(config, "decoded", str(tmp_path), listener=seen.append)
    assert any(isinstance(e, Loading) for e in seen)  # shown on the console
    events = events_of(run.path)
    assert events[0]["event"] == "start" and not any(e["event"] == "loading" for e in events)


def test_images_per_second_count_training_only(tmp_path, monkeypatch):
    """A clock that jumps 1000 s in every clustering and evaluation: the first interval of each
    epoch must not include them (it measured from the previous epoch's last log before)."""
    import time as real_time

    from oaecmlr.engine import loop as loop_module
    from oaecmlr.engine.usl import UnsupervisedLoop

    class Clock:
        offset = 0.0

        def perf_counter(self):
            return real_time.perf_counter() + self.offset

        def __getattr__(self, name):
            return getattr(real_time, name)

    clock = Clock()
    monkeypatch.setattr(loop_module, "time", clock)
    for method in ("epoch_labels", "evaluate"):
        slow = getattr(UnsupervisedLoop, method)

        def jumping(self, epoch, slow=slow):
            result = slow(self, epoch)
            clock.offset += 1000.0
            return result

        monkeypatch.setattr(UnsupervisedLoop, method, jumping)
    run = start_run(tiny_config("run.log_every=3"), "speed", str(tmp_path), preset="demo")
    iters = [e for e in events_of(run.path) if e["event"] == "iter"]
    assert [(e["epoch"], e["iteration"]) for e in iters] == [(1, 3), (2, 3)]
    assert all(e["images_per_s"] > 48 / 100.0 for e in iters)  # 3 x 16 images in far less than 100 s
