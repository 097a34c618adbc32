"""The readings of OAE and CMLR in real (tiny) runs (docs/method.md sections 3 and 4): every knob's
"off" gives today's numbers bit for bit, each reading trains and logs its diagnostics, the matched
reading's carried labels survive a stop and resume, warm-up epochs train without soft labels, and
OAE and CMLR see the features that were clustered."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from enginefixtures import events_of, tiny_config

from oaecmlr.engine.checkpoint import load_checkpoint
from oaecmlr.engine.launch import resume_run, start_run
from oaecmlr.store.schema import Iter

DIAGNOSTICS = ("oae_pairwise_precision", "oae_precision", "oae_ceiling", "oae_same_camera", "oae_assigned_share",
               "cmlr_mass_clean", "cmlr_mass_mislabelled", "cmlr_auroc", "cmlr_kl", "cmlr_mislabelled")


def numbers(events):
    """What training computed, without times and diagnostics."""
    return [(e["event"], e.get("epoch"), e.get("mAP"), e.get("loss"), e.get("clusters"), e.get("outliers_after"))
            for e in events if e["event"] in ("eval", "iter", "cluster")]


@pytest.fixture(scope="module")
def today(tmp_path_factory):
    root = tmp_path_factory.mktemp("today")
    return events_of(start_run(tiny_config(), "today", str(root), preset="demo").path)


@pytest.mark.parametrize("off", [
    ["oae.rule=nearest", "cmlr.mode=self", "oae.camera_shift=0", "cmlr.warmup=0"],  # the defaults, spelled out
    ["oae.support=3", "oae.support_k=4", "cmlr.radius=0.5", "cmlr.candidates=2"],  # knobs of readings not chosen
])
def test_off_values_give_todays_numbers(today, tmp_path, off):
    run = start_run(tiny_config(*off), "off", str(tmp_path), preset="demo")
    assert numbers(events_of(run.path)) == numbers(today)


@pytest.mark.parametrize("sets", [
    ["oae.rule=support", "oae.support=1"],
    ["oae.camera_shift=0.2"],
    ["cmlr.mode=propagated", "cmlr.radius=0.5"],
    ["cmlr.mode=matched"],
])
def test_each_reading_trains_changes_something_and_logs_diagnostics(today, tmp_path, sets):
    run = start_run(tiny_config(*sets), "reading", str(tmp_path), preset="demo")
    events = events_of(run.path)
    assert events[-1]["event"] == "end"
    assert numbers(events) != numbers(today)
    for cluster in (e for e in events if e["event"] == "cluster"):
        assert set(DIAGNOSTICS) <= cluster.keys()
        assert cluster["cmlr_kl"] >= 0 and 0 <= cluster["cmlr_mislabelled"] <= 1
        assert cluster["oae_ceiling"] is not None  # the tiny set always leaves outliers


def test_matched_reading_stops_and_resumes_to_the_uninterrupted_numbers(tmp_path):
    sets = ["cmlr.mode=matched", "run.epochs=3"]
    reference = start_run(tiny_config(*sets), "whole", str(tmp_path), preset="demo")
    assert "cmlr_previous" in load_checkpoint(reference.last)

    def stop_in_epoch_three(event):
        if isinstance(event, Iter) and event.epoch == 3 and event.iteration == 1:
            (tmp_path / "stopped" / "STOP").write_text("now")

    run = start_run(tiny_config(*sets), "stopped", str(tmp_path), preset="demo", listener=stop_in_epoch_three)
    assert events_of(run.path)[-1]["event"] == "stopped"
    resume_run("stopped", str(tmp_path))
    assert numbers(events_of(run.path)) == numbers(events_of(reference.path))


def test_warmup_epochs_train_on_hard_labels_only(tmp_path):
    """With cmlr.warmup = 1 the first epoch trains exactly as with CMLR off; the second does not."""
    plain = events_of(start_run(tiny_config("cmlr.lam=0"), "plain", str(tmp_path), preset="demo").path)
    warm = events_of(start_run(tiny_config("cmlr.warmup=1"), "warm", str(tmp_path), preset="demo").path)

    def losses(events, epoch):
        return [e["loss"] for e in events if e["event"] == "iter" and e["epoch"] == epoch]

    assert losses(warm, 1) == losses(plain, 1)
    assert losses(warm, 2) != losses(plain, 2)


def test_oae_and_cmlr_see_the_clustered_features(monkeypatch, tmp_path):
    """Under per-camera centring, OAE's constraint B and CMLR get the camera-centred features DBSCAN
    saw; the memory keeps the raw ones."""
    import oaecmlr.engine.usl as usl
    from oaecmlr.core.camera_norm import camera_normalise

    seen = {}
    real_oae, real_cmlr, real_pseudo = usl.oae, usl.cmlr, usl.pseudo_labels

    def spy(name, real):
        def call(features, *args, **kwargs):
            seen.setdefault(name, features.clone())
            return real(features, *args, **kwargs)
        return call

    monkeypatch.setattr(usl, "oae", spy("oae", real_oae))
    monkeypatch.setattr(usl, "cmlr", spy("cmlr", real_cmlr))
    monkeypatch.setattr(usl, "pseudo_labels", spy("clustered", real_pseudo))
    start_run(tiny_config("cluster.camera_norm=mean", epochs=1), "centred", str(tmp_path), preset="demo")
    assert torch.equal(seen["oae"], seen["clustered"]) and torch.equal(seen["cmlr"], seen["clustered"])
    raw_like = camera_normalise(seen["clustered"], np.zeros(seen["clustered"].shape[0], dtype=int), "none")
    assert raw_like is seen["clustered"]  # "none" hands the features through untouched (bit-identity)
