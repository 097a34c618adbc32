"""CLI commands over fixture run folders (no training): runs, show, stop, doctor, tui, --help, and
the one-line error policy of main()."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from runfixtures import dead_pid, make_run
from typer.testing import CliRunner

from oaecmlr.cli.app import app

runner = CliRunner()


@pytest.fixture
def runs(tmp_path):
    make_run(tmp_path, "done", sets={"run.epochs": 4})
    make_run(tmp_path, "live", state="running", upto_epoch=2)  # this process's pid: alive
    make_run(tmp_path, "crashed", state="running", upto_epoch=1, pid=dead_pid())
    make_run(tmp_path, "broken", state="failed", upto_epoch=2)
    make_run(tmp_path, "halted", state="stopped", upto_epoch=3)
    return tmp_path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_runs_json_lists_every_run_with_its_status(runs):
    result = invoke("runs", "--runs-dir", runs, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {n: r["status"] for n, r in rows.items()} == {
        "done": "finished", "live": "running", "crashed": "stale", "broken": "failed", "halted": "stopped"}
    done = rows["done"]
    assert (done["epoch"], done["epochs"], done["dataset"], done["clusters"]) == (4, 4, "synthetic", 44)
    assert done["best_mAP"] == pytest.approx(0.3) and done["best_rank1"] == pytest.approx(0.4)
    assert isinstance(done["started"], float) and done["elapsed"] > 0
    assert rows["live"]["elapsed"] >= 3000  # running: measured up to now (fixture started an hour ago)


def test_runs_table_shows_statuses(runs):
    result = invoke("runs", "--runs-dir", runs)
    assert result.exit_code == 0
    for word in ("done", "finished", "running", "stale", "failed", "stopped", "4/4", "30.0"):
        assert word in result.stdout


def test_runs_in_an_empty_folder(tmp_path):
    assert json.loads(invoke("runs", "--runs-dir", tmp_path, "-f", "json").stdout) == []
    assert "no runs" in invoke("runs", "--runs-dir", tmp_path).output


def test_show_json_fields(runs):
    result = invoke("show", "done", "--runs-dir", runs, "--format", "json")
    data = json.loads(result.stdout)
    assert [e["epoch"] for e in data["evaluations"]] == [0, 2, 4]
    assert all(0 <= e["mAP"] <= 1 for e in data["evaluations"])
    assert data["best"]["mAP"] == pytest.approx(0.3) and data["config"]["run"]["epochs"] == 4


def test_stop_a_running_run_writes_the_stop_file(tmp_path, monkeypatch):
    # a live pid on another host: no signal is sent, only the STOP file is written
    path = make_run(tmp_path, "remote", state="running", upto_epoch=1)
    status = json.loads((path / "status.json").read_text())
    status.update(host="elsewhere", updated=__import__("time").time())
    (path / "status.json").write_text(json.dumps(status))
    result = invoke("stop", "remote", "--runs-dir", tmp_path)
    assert result.exit_code == 0 and "STOP" in result.stdout
    assert (path / "STOP").exists()


def main_cli(*args, cwd=None):
    """`python -m oaecmlr.cli.app ARGS` in a fresh interpreter: main()'s error handling included."""
    return subprocess.run([sys.executable, "-m", "oaecmlr.cli.app", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def assert_one_line_error(done, *words):
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for word in words:
        assert word in lines[0]


def test_known_errors_are_one_line(runs):
    assert_one_line_error(main_cli("stop", "done", "--runs-dir", runs), "not running", "finished")
    assert_one_line_error(main_cli("show", "missing", "--runs-dir", runs), "no run 'missing'")
    assert_one_line_error(main_cli("compare", "done", "missing", "--runs-dir", runs), "missing")
    assert_one_line_error(main_cli("eval", "nowhere", "--runs-dir", runs), "nowhere")
    assert_one_line_error(main_cli("eval", "done", "--runs-dir", runs), "has no checkpoint yet")  # neither file
    assert_one_line_error(main_cli("compare", "done", "--runs-dir", runs), "two runs")
    assert_one_line_error(main_cli("sweep", "demo", "--grid", "oae.nope=1", "--runs-dir", runs), "oae.nope")


def test_main_in_process(runs, monkeypatch, capsys):
    from oaecmlr.cli.app import main

    monkeypatch.setattr(sys, "argv", ["oaecmlr", "stop", "halted", "--runs-dir", str(runs)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not running (it is stopped)" in err


COMMANDS = [["run"], ["pretrain"], ["resume"], ["show"], ["doctor"], ["runs"], ["compare"], ["stop"], ["eval"],
            ["sweep"], ["data", "check"], ["tui"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_examples(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Example" in result.stdout


def test_doctor_reports_ok_and_missing_with_fixes(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    result = runner.invoke(app, ["doctor", "--runs-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output  # only required checks fail the command
    lines = {line.strip("│ ").split()[0]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "ok" in lines["torch"] and "ok" in lines["python"]
    assert "missing" in lines["matplotlib"] and "pip install 'oaecmlr[plot]'" in lines["matplotlib"]


def test_doctor_fails_when_the_runs_folder_is_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["doctor", "--runs-dir", str(blocker / "runs")], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "runs folder" in result.stdout and "OAECMLR_RUNS" in result.stdout


def test_tui_without_textual_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    from oaecmlr.cli.app import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "textual" else real(name, *a))
    monkeypatch.setattr(sys, "argv", ["oaecmlr", "tui"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert "the dashboard needs textual: pip install 'oaecmlr[tui]'" in capsys.readouterr().err


def test_tui_starts_the_dashboard_on_the_runs_folder(monkeypatch, tmp_path):
    import oaecmlr_tui.app

    calls = []
    monkeypatch.setattr(oaecmlr_tui.app, "run_dashboard", calls.append)
    assert invoke("tui", "--runs-dir", tmp_path).exit_code == 0
    assert calls == [str(tmp_path)]


def test_the_cli_imports_no_optional_extras():
    code = ("import sys, oaecmlr.cli.app\n"
            "print(sorted(m for m in ('matplotlib', 'textual', 'oaecmlr_tui', 'torchvision') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_runs_shows_note_and_tags_as_the_dashboard_does(runs, monkeypatch):
    """One rule (the store's RunMeta.text) builds `#tag note` for `runs` and for the dashboard."""
    from oaecmlr.cli.common import console
    from oaecmlr.store.runs import RunMeta, find_run, read_meta

    monkeypatch.setattr(console, "_width", 200)
    assert invoke("note", "done", "  lr halved  ", "--tag", "sweep", "--runs-dir", runs).exit_code == 0
    shown = RunMeta.from_dict(read_meta(find_run("done", runs))).text()
    assert shown == "#sweep lr halved"
    line = next(line for line in invoke("runs", "--runs-dir", runs).stdout.splitlines() if line.startswith("done"))
    assert line.rstrip().endswith("  " + shown)


def test_runs_at_80_columns_keeps_names_whole_and_drops_other_columns(tmp_path):
    names = ["demo-20261206-003706", "demo-20261206-003707", "market-20261206-101500-oae-cmlr-seed1"]
    for name in names:
        make_run(tmp_path, name, sets={"optim.lr": 0.00035 if name.startswith("demo") else 0.0007})
    out = runner.invoke(app, ["runs", "--runs-dir", str(tmp_path)], env={"COLUMNS": "80"}).stdout
    lines = out.splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines)
    rule = next(i for i, line in enumerate(lines) if line.startswith("───"))
    assert [line.split()[0] for line in lines[rule + 1:]] == names  # whole, copyable
    header = lines[rule - 1]
    assert header.split()[:5] == ["name", "status", "epoch", "mAP", "R1"] and "note" not in header


def test_a_run_without_events_yet_shows_its_planned_epochs(tmp_path):
    make_run(tmp_path, "starting", state="running", sets={"run.epochs": 7})
    (tmp_path / "starting" / "events.jsonl").write_text("")
    assert json.loads(invoke("runs", "--runs-dir", tmp_path, "-f", "json").stdout)[0]["epochs"] == 7
    assert " 0/7 " in invoke("runs", "--runs-dir", tmp_path).stdout
    assert json.loads(invoke("show", "starting", "--runs-dir", tmp_path, "-f", "json").stdout)["epochs"] == 7
    assert "epoch 0/7" in invoke("show", "starting", "--runs-dir", tmp_path).stdout


@pytest.mark.parametrize("command", [["run"], ["data", "check"]])
def test_help_shows_no_path_of_this_machine(command):
    text = invoke(*command, "--help").stdout
    assert "--data-root ~/data/cuhk03-np" in text and "shared/" not in text


@pytest.mark.parametrize("where, message", [
    ("mAP>abc", "--where 'mAP>abc': mAP is a number (a fraction, e.g. 'mAP>0.2'), not 'abc'"),
    ("optim.lr>abc", "--where 'optim.lr>abc': optim.lr is a number and 'abc' is not; compare it with a number"),
])
def test_where_with_a_word_for_a_number_is_one_clear_line(runs, monkeypatch, capsys, where, message):
    from oaecmlr.cli.app import main

    monkeypatch.setattr(sys, "argv", ["oaecmlr", "runs", "--runs-dir", str(runs), "--where", where])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1 and capsys.readouterr().err == f"error: {message}\n"


def test_show_at_80_columns_cuts_no_column_header(runs):
    out = runner.invoke(app, ["show", "done", "--runs-dir", str(runs)], env={"COLUMNS": "80"}).stdout
    assert "…" not in out and all(len(line.rstrip()) <= 80 for line in out.splitlines())
    words = set(out.split())
    for header in ("epoch", "clusters", "x-cam", "outliers", "after", "OAE", "assigned", "prec", "purity", "NMI",
                   "CMLR", "H", "time", "(s)", "mAP", "R10", "mINP"):
        assert header in words, header
