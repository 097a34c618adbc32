"""The real Market-1501 subset (six cameras) loads as a subset with a note, the junk images dropped and
the distractors kept (skipped when it is absent)."""

from __future__ import annotations

import json
import warnings

import pytest
from realpaths import REAL_MARKET
from typer.testing import CliRunner

from oaecmlr.cli.app import app
from oaecmlr.data.datasets import load_dataset
from oaecmlr.data.records import DatasetNote

pytestmark = pytest.mark.skipif(not (REAL_MARKET / "bounding_box_train").is_dir(),
                                reason=f"real data absent: {REAL_MARKET}")


def test_real_market_subset_loads_as_a_six_camera_subset_of_market_1501():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset("market1501", REAL_MARKET)
    assert [w.category for w in caught] == [DatasetNote]  # a note, not a broken release
    assert "is a subset of Market-1501 with all 6 cameras" in str(caught[0].message)
    assert {split: tuple(v.values()) for split, v in splits.stats().items()} == {
        "train": (9399, 730, 6), "query": (2851, 712, 6), "gallery": (7009, 735, 6)}
    on_disk = sorted(p.name for p in (REAL_MARKET / "bounding_box_test").glob("*.jpg"))
    junk = [name for name in on_disk if name.startswith("-1")]
    distractors = [name for name in on_disk if name.startswith("0000")]
    assert len(junk) > 0 and len(on_disk) == len(splits.gallery) + len(junk)  # junk (-1) dropped, as usual
    assert sum(r.pid == 0 for r in splits.gallery) == len(distractors) > 0  # distractors stay in the gallery
    assert not {r.pid for r in splits.train} & {r.pid for r in splits.query}  # the test ids are not trained on


def test_data_check_reports_the_market_subset_with_a_note_and_no_warning():
    result = CliRunner().invoke(app, ["data", "check", "market", "--data-root", str(REAL_MARKET), "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dataset"] == "market1501" and data["warnings"] == []
    assert len(data["notes"]) == 1 and "scores are not comparable with published Market-1501" in data["notes"][0]
    assert data["splits"]["train"]["standard_images"] == 12936
