"""`oaecmlr data check` on the real CUHK03 subset (skipped when it is absent)."""

from __future__ import annotations

import json
import sys

import pytest
from realpaths import REAL_CUHK03, REAL_MARKET
from typer.testing import CliRunner

from oaecmlr.cli.app import app, main

runner = CliRunner()


def check(*args):
    return runner.invoke(app, ["data", "check", *map(str, args)], env={"COLUMNS": "160"})


@pytest.mark.skipif(not REAL_CUHK03.is_dir(), reason=f"real data absent: {REAL_CUHK03}")
def test_real_cuhk03_is_reported_as_a_subset():
    data = json.loads(check("cuhk03", "--data-root", REAL_CUHK03, "-f", "json").stdout)
    assert data["warnings"] == [] and data["variant"] == "labeled"
    assert len(data["notes"]) == 1 and "is a subset of CUHK03-NP labeled" in data["notes"][0]
    assert {s: (v["images"], v["ids"]) for s, v in data["splits"].items()} == {
        "train": (7239, 743), "query": (451, 100), "gallery": (487, 100)}
    assert data["splits"]["train"]["standard_images"] == 7368
    table = check("cuhk03", "--data-root", REAL_CUHK03).stdout
    assert "note: cuhk03:" in table and "warning:" not in table


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_MARKET.is_dir() or not REAL_CUHK03.is_dir(), reason="real data absent: ../shared/data")
@pytest.mark.parametrize("folder, right, release, wrong", [
    (REAL_MARKET, "market1501", "Market-1501", ["dukemtmcreid", "msmt17", "cuhk03"]),
    (REAL_CUHK03, "cuhk03", "CUHK03", ["market1501", "dukemtmcreid", "msmt17"]),
])
def test_real_folders_are_recognised_and_others_refused(folder, right, release, wrong, monkeypatch, capsys):
    for name in wrong:
        monkeypatch.setattr(sys, "argv", ["oaecmlr", "data", "check", name, "--data-root", str(folder)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert exit_info.value.code == 1 and out == ""
        assert err.startswith(f"error: {folder} looks like {release} (") and err.count("\n") == 1
    result = check(right, "--data-root", folder)
    assert result.exit_code == 0 and "note:" in result.stdout and "warning:" not in result.stdout  # a subset
