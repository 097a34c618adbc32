"""Real-data tier: real CUHK03 images and real ImageNet MobileNetV2 weights from ../shared.
Unsupervised training must lift mAP clearly above the epoch-0 evaluation. Skipped when ../shared
is absent (set OAECMLR_SHARED to point elsewhere)."""

from __future__ import annotations

import json

import pytest
from enginefixtures import cli, events_of
from realpaths import MOBILENET_WEIGHTS, REAL_CUHK03

pytestmark = [
    pytest.mark.skipif(not (REAL_CUHK03 / "bounding_box_train").is_dir() or not MOBILENET_WEIGHTS.is_file(),
                       reason=f"real data not found at {REAL_CUHK03} / {MOBILENET_WEIGHTS} (set OAECMLR_SHARED)"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    result = cli("run", "cuhk03", "--data-root", str(REAL_CUHK03), "--arch", "mobilenet_v2",
                 "--pretrained", str(MOBILENET_WEIGHTS), "--runs-dir", str(root), "--name", "cuhk",
                 "--set", "run.epochs=4", "--set", "run.eval_every=2",
                 "--set", f"data.cache_dir={root / 'cache'}", timeout=1500)
    assert result.returncode == 0, result.stderr
    return root


def test_unsupervised_training_lifts_map_on_real_images(trained):
    events = events_of(trained / "cuhk")
    evaluations = {e["epoch"]: e for e in events if e["event"] == "eval"}
    start = events[0]
    assert start["data"]["train"] == {"images": 7239, "ids": 743, "cams": 2}
    assert evaluations[0]["num_query"] == 451 and evaluations[0]["num_gallery"] == 487
    best = max(e["mAP"] for epoch, e in evaluations.items() if epoch > 0)
    assert best >= evaluations[0]["mAP"] + 0.05, evaluations  # at least 5 points above the start
    clusters = [e for e in events if e["event"] == "cluster"]
    assert clusters[-1]["clusters"] > clusters[0]["clusters"]  # the features learned to group
    assert clusters[-1]["purity"] > 0.5


def test_eval_reproduces_the_logged_numbers_on_real_data(trained):
    result = cli("eval", "cuhk", "--runs-dir", str(trained), "--checkpoint", "last", "--format", "json", timeout=600)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    logged = [e for e in events_of(trained / "cuhk") if e["event"] == "eval"][-1]
    assert shown["mAP"] == pytest.approx(logged["mAP"], abs=1e-6)
