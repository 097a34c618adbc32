"""Real-data tier: real CUHK03 images and real ImageNet MobileNetV2 weights from ../shared.
Unsupervised training must lift mAP clearly above the epoch-0 evaluation. Skipped when ../shared
is absent (set OAECMLR_SHARED to point elsewhere)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from enginefixtures import cli, events_of

SHARED = Path(os.environ.get("OAECMLR_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
DATA = SHARED / "data" / "cuhk03-market"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"

pytestmark = [
    pytest.mark.skipif(not (DATA / "bounding_box_train").is_dir() or not WEIGHTS.is_file(),
                       reason=f"real data not found at {DATA} / {WEIGHTS} (set OAECMLR_SHARED)"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    result = cli("run", "cuhk03", "--data-root", str(DATA), "--arch", "mobilenet_v2", "--pretrained", str(WEIGHTS),
                 "--runs-dir", str(root), "--name", "cuhk", "--set", "run.epochs=4", "--set", "run.eval_every=2",
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
