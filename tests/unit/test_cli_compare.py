"""`oaecmlr compare` on fixture runs: every output format, warnings, mean ± std and the plot."""

from __future__ import annotations

import csv
import io
import json

import pytest
from runfixtures import make_run
from typer.testing import CliRunner

from oaecmlr.cli.app import app

runner = CliRunner()


@pytest.fixture
def runs(tmp_path):
    make_run(tmp_path, "base", sets={"oae.rho": 0.0, "run.seed": 1}, base_map=0.10)
    make_run(tmp_path, "oae", sets={"oae.rho": 1.0, "run.seed": 1}, base_map=0.12)
    make_run(tmp_path, "market", dataset="market1501", sets={"data.height": 128})
    for seed in (1, 2, 3):
        make_run(tmp_path, f"s{seed}", sets={"run.seed": seed, "cmlr.lam": 0.3}, base_map=0.1 + 0.01 * seed)
    return tmp_path


def compare(runs, *args):
    result = runner.invoke(app, ["compare", *args, "--runs-dir", str(runs)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result


def test_table_shows_metrics_deltas_clusters_and_config_diff(runs):
    out = compare(runs, "base", "oae").stdout
    assert "best and final metrics" in out and "Δ vs base" in out and "clusters / outliers" in out
    assert "oae.rho" in out and "data.dataset" not in out  # only differing keys
    assert "Δ +2.0 / +2.0" in out  # oae is 2 points above base at every evaluation
    assert "warning" not in out


def test_md_prints_markdown_tables(runs):
    out = compare(runs, "base", "oae", "--format", "md").stdout
    lines = out.splitlines()
    header = lines.index("| run | status | mAP | R1 | R5 | R10 | mINP | best epoch | final mAP | time to best | epochs |")
    assert lines[header + 1].startswith("|---|") and lines[header + 2].startswith("| base | finished | 30.0 |")
    titles = [line[4:] for line in lines if line.startswith("### ")]
    assert len(titles) == 5 and "OAE and CMLR at the last clustering, against ground truth" in titles
    assert all(line.count("|") == lines[header].count("|") for line in lines[header:header + 4])


def test_csv_is_the_metric_table_in_fractions(runs):
    rows = list(csv.DictReader(io.StringIO(compare(runs, "base", "oae", "-f", "csv").stdout)))
    assert [r["run"] for r in rows] == ["base", "oae"]
    assert float(rows[1]["best_mAP"]) == pytest.approx(0.32) and rows[1]["best_epoch"] == "4"
    assert float(rows[0]["time_to_best_s"]) > 0


def test_latex_is_a_tabular(runs):
    out = compare(runs, "s1", "s2", "s3", "-f", "latex").stdout
    assert "\\begin{tabular}{l" in out and out.rstrip().endswith("\\end{tabular}")
    assert "s1 & finished & 31.0" in out and "$\\pm$" in out  # mean ± std row of the seeds


def test_json_holds_the_whole_comparison(runs):
    data = json.loads(compare(runs, "base", "oae", "-f", "json").stdout)
    assert set(data) >= {"runs", "deltas", "clusters", "config_diff", "warnings", "seed_groups"}
    assert data["config_diff"]["oae.rho"] == {"base": 0.0, "oae": 1.0}
    assert data["deltas"][-1]["runs"]["oae"]["delta_mAP"] == pytest.approx(0.02)


def test_different_datasets_are_warned_about_in_every_format(runs):
    result = compare(runs, "base", "market")
    assert "not directly comparable" in result.stdout and "dataset differs" in result.stdout
    assert "input height differs" in result.stdout
    assert "dataset differs" in json.loads(compare(runs, "base", "market", "-f", "json").stdout)["warnings"][0]
    assert "> **warning:** dataset differs" in compare(runs, "base", "market", "-f", "md").stdout
    csv_result = compare(runs, "base", "market", "-f", "csv")
    assert "dataset differs" in csv_result.stderr and "warning" not in csv_result.stdout


def test_mean_and_std_over_three_seeds(runs):
    out = compare(runs, "s1", "s2", "s3").stdout
    assert "mean ± std over seeds" in out and "32.0±1.0" in out  # best mAP 31, 32, 33
    groups = json.loads(compare(runs, "s1", "s2", "s3", "-f", "json").stdout)["seed_groups"]
    assert groups[0]["seeds"] == [1, 2, 3] and groups[0]["best_mAP"]["std"] == pytest.approx(0.01)
    rows = list(csv.reader(io.StringIO(compare(runs, "s1", "s2", "s3", "-f", "csv").stdout)))
    assert rows[-2][0].startswith("mean of") and float(rows[-1][3]) == pytest.approx(0.01)


def test_plot_writes_a_png(runs, tmp_path):
    target = tmp_path / "plots" / "curves.png"
    result = compare(runs, "base", "oae", "s1", "--plot", str(target))
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "plot written" in result.stderr


def test_plot_without_matplotlib_says_how_to_install(runs, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = runner.invoke(app, ["compare", "base", "oae", "--plot", "x.png", "--runs-dir", str(runs)])
    assert result.exit_code != 0 and "pip install 'oaecmlr[plot]'" in str(result.exception)


def test_plot_lines_are_run_names_and_their_settings_a_table(runs):
    from oaecmlr.cli.plot import layout_of
    from oaecmlr.store.compare import run_record
    from oaecmlr.store.runs import find_run

    records = [run_record(find_run(name, runs)) for name in ("base", "market", "s1", "s2")]
    layout = layout_of(records)
    assert [label for label, _ in layout.groups] == ["base", "market", "s1, s2 (seeds 1,2)"]
    header, rows = layout.table
    assert header == ["run", "lam", "dataset", "height", "rho"]
    assert rows == [["base", "0.5", "synthetic", "256", "0.0"], ["market", "0.5", "market1501", "128", "1.0"],
                    ["s1, s2 (seeds 1,2)", "0.3", "synthetic", "256", "1.0"]]
    assert layout.title == "resnet50"  # the arch all share; not the first run's dataset for all
    same = layout_of([run_record(find_run(name, runs)) for name in ("s1", "s2")])
    assert same.title == "synthetic · resnet50" and same.table[1] == []


def test_compare_help_names_every_plot_format():
    text = " ".join(runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "PNG, PDF or SVG" in text


def test_a_run_compared_with_itself_gives_zero_deltas_and_a_plot(runs, tmp_path):
    """Issue 25's walk-through: `oaecmlr compare a a --plot c.pdf` works, as any two runs do."""
    result = compare(runs, "base", "base", "--plot", str(tmp_path / "c.pdf"))
    assert result.exit_code == 0 and "Δ +0.0 / +0.0" in result.stdout
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
