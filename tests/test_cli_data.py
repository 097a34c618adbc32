"""`oaecmlr data check` on small Market-layout folders written in the test, and on the real CUHK03."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from oaecmlr.cli.app import app, main

runner = CliRunner()
REAL_CUHK03 = Path(__file__).resolve().parents[2] / "shared/data/cuhk03-market"
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


@pytest.fixture
def market(tmp_path):
    """6 train ids x 2 cams, 3 test ids: queries on camera 1, gallery on camera 2."""
    root = tmp_path / "cuhk03-market"
    layout = {"train": [(p, c) for p in range(1, 7) for c in (1, 2)],
              "query": [(p, 1) for p in range(101, 104)], "gallery": [(p, 2) for p in range(101, 104)]}
    for split, items in layout.items():
        folder = root / FOLDERS[split]
        folder.mkdir(parents=True)
        for i, (pid, cam) in enumerate(items):
            Image.new("RGB", (16, 32), (pid * 20 % 255, 80, 120)).save(folder / f"{pid:04d}_c{cam}s1_{i:06d}_00.jpg")
    return root


def check(*args):
    return runner.invoke(app, ["data", "check", *map(str, args)], env={"COLUMNS": "160"})


def test_counts_and_deviations_from_the_standard_release(market):
    result = check("cuhk03", "--data-root", market, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dataset"] == "cuhk03" and data["root"] == str(market)
    assert data["splits"]["train"] == {"images": 12, "ids": 6, "cams": 2, "standard_images": 7239, "standard_ids": 743}
    assert data["splits"]["query"]["images"] == 3 and data["splits"]["gallery"]["cams"] == 1
    assert len(data["warnings"]) == 3 and "standard release has 7,239 / 743" in data["warnings"][0]
    table = check("cuhk03", "--data-root", market).stdout
    assert "12 (standard 7,239)" in table and "warning:" in table


def test_identity_problems_are_warned_about(market):
    # a query of train id 1: it has no gallery match, and a train id is reused for testing
    Image.new("RGB", (16, 32)).save(market / "query" / "0001_c1s1_000099_00.jpg")
    data = json.loads(check("cuhk03", "--data-root", market, "-f", "json").stdout)
    assert any("no gallery image" in w for w in data["warnings"])
    assert any("both train and query/gallery" in w for w in data["warnings"])


def test_decode_finds_corrupt_images(market):
    assert "all 18 images decode" in check("cuhk03", "--data-root", market, "--decode").stdout
    broken = market / "bounding_box_test" / "0102_c2s1_000001_00.jpg"
    broken.write_bytes(b"not a jpeg at all")
    result = check("cuhk03", "--data-root", market, "--decode")
    assert result.exit_code == 1 and "1 of 18 images cannot be decoded" in result.stderr
    assert broken.name in result.stderr
    data = json.loads(check("cuhk03", "--data-root", market, "--decode", "-f", "json").stdout)
    assert data["decode"]["images"] == 18 and len(data["decode"]["corrupt"]) == 1


def test_a_broken_layout_is_one_line(market, monkeypatch, capsys):
    (market / "query").rename(market / "queries")
    monkeypatch.setattr(sys, "argv", ["oaecmlr", "data", "check", "cuhk03", "--data-root", str(market)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert "is not a cuhk03 folder" in err and "bounding_box_train, DIR/query" in err


def test_synthetic_needs_no_files():
    result = check("synthetic", "--decode")
    assert result.exit_code == 0 and "no image files to decode" in result.stdout


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_CUHK03.is_dir(), reason=f"real data absent: {REAL_CUHK03}")
def test_real_cuhk03_matches_the_standard_counts():
    data = json.loads(check("cuhk03", "--data-root", REAL_CUHK03, "-f", "json").stdout)
    assert data["warnings"] == []
    assert {s: (v["images"], v["ids"]) for s, v in data["splits"].items()} == {
        "train": (7239, 743), "query": (451, 100), "gallery": (487, 100)}
