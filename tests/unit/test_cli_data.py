"""`oaecmlr data check` on small Market-layout and CUHK03-NP folders written in the test, and on the real CUHK03."""

from __future__ import annotations

import json
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from oaecmlr.cli.app import app, main
from oaecmlr.cli.datacheck import check_dataset, data_check_command

runner = CliRunner()
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


def test_a_cuhk03_subset_gets_a_note_and_the_variants_counts(market):
    result = check("cuhk03", "--data-root", market, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dataset"] == "cuhk03" and data["variant"] == "labeled" and data["root"] == str(market)
    assert data["splits"]["train"] == {"images": 12, "ids": 6, "cams": 2, "standard_images": 7368, "standard_ids": 767}
    assert data["splits"]["query"]["images"] == 3 and data["splits"]["gallery"]["cams"] == 1
    assert data["warnings"] == []
    assert len(data["notes"]) == 1 and "is a subset of CUHK03-NP labeled: train 12 images / 6 ids" in data["notes"][0]
    table = check("cuhk03", "--data-root", market).stdout
    assert "cuhk03 (CUHK03-NP labeled) at" in table and "12 (standard 7,368)" in table
    assert "standard CUHK03-NP labeled: train 7,368 images / 767 ids, query 1,400 / 700, gallery 5,328 / 700" in table
    assert "note: cuhk03:" in table and "warning:" not in table and "ok: the dataset parses" in table


def test_other_datasets_still_warn_about_their_counts(market):
    result = check("market", "--data-root", market, "--format", "json")
    data = json.loads(result.stdout)
    assert data["variant"] is None and data["notes"] == []
    assert len(data["warnings"]) == 3 and "standard release has 12,936 / 751" in data["warnings"][0]
    table = check("market", "--data-root", market).stdout
    assert "12 (standard 12,936)" in table and "warning:" in table and "note:" not in table


@pytest.fixture
def cuhk03_np(tmp_path):
    """labeled/ (4 train ids) and detected/ (3 train ids), CUHK03-NP names: 0001_c1_1.png."""
    root = tmp_path / "cuhk03-np"
    for variant, train_ids in (("labeled", 4), ("detected", 3)):
        layout = {"train": [(p, c) for p in range(1, train_ids + 1) for c in (1, 2)],
                  "query": [(1001, 1), (1002, 1)], "gallery": [(1001, 2), (1002, 2)]}
        for split, items in layout.items():
            folder = root / variant / FOLDERS[split]
            folder.mkdir(parents=True)
            for pid, cam in items:
                Image.new("RGB", (8, 16), (pid % 255, 80, 120)).save(folder / f"{pid:04d}_c{cam}_{cam}.png")
    return root


def test_cuhk03_np_root_shows_the_variant(cuhk03_np, capsys):
    data = json.loads(check("cuhk03", "--data-root", cuhk03_np, "-f", "json").stdout)
    assert data["variant"] == "labeled" and data["root"] == str(cuhk03_np / "labeled")
    assert data["splits"]["train"]["images"] == 8 and data["splits"]["gallery"]["standard_images"] == 5328
    detected = check_dataset("cuhk03", str(cuhk03_np), decode=True, cuhk03="detected")
    assert detected["variant"] == "detected" and detected["root"] == str(cuhk03_np / "detected")
    assert detected["splits"]["train"] == {"images": 6, "ids": 3, "cams": 2, "standard_images": 7365,
                                           "standard_ids": 767}
    assert detected["splits"]["gallery"]["standard_images"] == 5332 and detected["decode"]["corrupt"] == []
    assert "subset of CUHK03-NP detected" in detected["notes"][0]
    assert data_check_command("cuhk03", str(cuhk03_np), False, "table", cuhk03="detected")
    assert "cuhk03 (CUHK03-NP detected) at" in capsys.readouterr().out


def test_the_variant_and_outside_paths_are_options(cuhk03_np, monkeypatch, capsys):
    data = json.loads(check("cuhk03", "--data-root", cuhk03_np, "--cuhk03", "detected", "-f", "json").stdout)
    assert data["variant"] == "detected" and data["splits"]["train"]["ids"] == 3
    assert "--allow-outside" in check("--help").output
    monkeypatch.setattr(sys, "argv", ["oaecmlr", "data", "check", "cuhk03", "--data-root", str(cuhk03_np),
                                      "--cuhk03", "detectd"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and err.count("\n") == 1
    assert "data.cuhk03 must be one of labeled, detected, got 'detectd'" in err


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
