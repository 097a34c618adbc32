"""Hostile files and bad luck (issue 26, with the first round's malformed events and partial --config):
files in a run folder and in the image cache are checked before anything acts on them, every read is
bounded, settings have upper bounds, resume checks config.toml as run does, text from files never
reaches a terminal raw. One case per item, at the smallest size that shows it (items 1 and 9, `stop`
and orphans, are in test_lifecycle.py; the full disk, in test_full_disk.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from enginefixtures import cli, main_in_process, one_error_line
from runfixtures import make_run

from oaecmlr.config import resolve_config
from oaecmlr.store import ondisk
from oaecmlr.store.runs import RunDir

ESCAPES = "\x1b]0;PWNED\x07\x1b[2J"


main = main_in_process


def views(monkeypatch, capsys, root: Path, name: str = "a") -> list[tuple[int, str, str]]:
    """runs (table and json), show (table and json) and compare, each as (code, out, err)."""
    make_run(root, "other")
    return [main(monkeypatch, capsys, *args, "--runs-dir", root) for args in
            (["runs"], ["runs", "--format", "json"], ["show", name], ["show", name, "--format", "json"],
             ["compare", name, "other"])]


# 2. unbounded values: every number has an upper bound, the image cache's memory is checked first ----------
@pytest.mark.parametrize("setting, words", [
    ("run.threads=100000", ["run.threads must be between 0 and", "cores of this machine), got 100000"]),
    ("data.height=100000", ["data.height must be between 8 and 1,024, got 100000"]),
    ("data.synthetic_ids=100000000", ["data.synthetic_ids must be between 1 and 100,000"]),
    ("run.seed=99999999999999999999999", ["run.seed must be between 0 and 18,446,744,073,709,551,615"]),
    ("run.seed=-1", ["run.seed must be between 0 and"]),
    ("optim.lr=1e6", ["optim.lr must be > 0 and <= 10"]),
    ("train.dist_timeout=1e300", ["train.dist_timeout must be > 0 and <= 604800"]),
    ("run.gpus=" + ",".join(["cpu"] * 64), ["starts 64 CPU workers on the", "use at most"]),
])
def test_unbounded_values_are_refused_before_anything_exists(tmp_path, monkeypatch, capsys, setting, words):
    code, _, err = main(monkeypatch, capsys, "run", "demo", "--set", setting, "--runs-dir", tmp_path / "runs")
    line = one_error_line(err)
    assert code == 1 and all(w in line for w in words), line
    assert not (tmp_path / "runs").exists()


def test_every_number_setting_has_an_upper_bound():
    from oaecmlr.config import Config, ConfigError, set_value, validate

    for dotted, default in Config().flat().items():
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        config = Config()
        set_value(config, dotted, 10**30 if isinstance(default, int) else 1e30)
        with pytest.raises(ConfigError, match=dotted.replace(".", r"\.")):
            validate(config)


def test_the_image_cache_that_cannot_fit_is_refused_naming_the_setting(tmp_path, monkeypatch, capsys):
    import oaecmlr.engine.launch as launch

    monkeypatch.setattr(launch, "available_memory", lambda: 50_000_000)
    code, _, err = main(monkeypatch, capsys, "run", "demo", "--set", "data.synthetic_ids=5000",
                        "--runs-dir", tmp_path / "runs")
    line = one_error_line(err)
    assert code == 1 and "the image cache needs 994.8 MB for 80,960 images of data.height x data.width = 64 x 32" in line
    assert "this machine has 50.0 MB of memory available" in line
    assert "lower data.synthetic_ids (now 5,000)" in line and "data.height and data.width" in line
    assert not (tmp_path / "runs").exists()
    data = tmp_path / "market"  # a real layout: the images counted from the records, none decoded
    for folder, name in (("bounding_box_train", "0001_c1s1_000001_00.jpg"), ("query", "0002_c1s1_000001_00.jpg"),
                         ("bounding_box_test", "0002_c2s1_000002_00.jpg")):
        (data / folder).mkdir(parents=True)
        (data / folder / name).write_bytes(b"not decoded")
    monkeypatch.setattr(launch, "available_memory", lambda: 1_000_000)
    code, _, err = main(monkeypatch, capsys, "run", "market", "--gpus", "cpu", "--data-root", data, "--set", "data.height=1024",
                        "--set", "data.width=1024", "--runs-dir", tmp_path / "runs")
    line = one_error_line(err)
    assert "needs 9.4 MB for 3 images of data.height x data.width = 1024 x 1024, but this machine has 1.0 MB" in line
    assert "lower data.height and data.width" in line and not (tmp_path / "runs").exists()


def test_available_memory_is_read():
    from oaecmlr.engine.devices import available_memory

    free = available_memory()
    assert free is None or 0 < free < 2**50


# 3. resume checks config.toml as run checks a new config, before touching the run -------------------------
@pytest.mark.parametrize("edit, words", [
    (('arch = "resnet18"', 'arch = "evil"'), ["model.arch must be one of", "got 'evil'"]),
    (("height = 256", "height = 0"), ["data.height must be between 8 and 1,024, got 0"]),
    (("iterations = 200", "iterations = 12345678901234567890123"), ["run.iterations must be between 1 and 1,000,000"]),
    (('gpus = "cpu"', 'gpus = "' + ",".join(["cpu"] * 64) + '"'), ["starts 64 CPU workers"]),
    (("threads = 0", "threads = 100000"), ["run.threads must be between 0 and"]),
    (("lr = 0.00035", 'lr = "fast"'), ["optim.lr expects a number, got 'fast'"]),
])
def test_resume_refuses_an_edited_config_and_leaves_the_run_as_it_was(tmp_path, monkeypatch, capsys, edit, words):
    run = make_run(tmp_path, "r", state="stopped", sets={"model.arch": "resnet18"})
    config = (run / "config.toml").read_text()
    assert edit[0] in config
    (run / "config.toml").write_text(config.replace(edit[0], edit[1]))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    code, _, err = main(monkeypatch, capsys, "resume", "r", "--runs-dir", tmp_path)
    line = one_error_line(err)
    assert code == 1 and all(w in line for w in words) and "config.toml" in line, line
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before


def test_resume_bounds_its_own_options(tmp_path, monkeypatch, capsys):
    make_run(tmp_path, "r", state="stopped")
    code, _, err = main(monkeypatch, capsys, "resume", "r", "--epochs", str(10**9), "--runs-dir", tmp_path)
    assert code == 1 and "run.epochs must be between 0 and 10,000" in one_error_line(err)
    code, _, err = main(monkeypatch, capsys, "resume", "r", "--gpus", ",".join(["cpu"] * 64), "--runs-dir", tmp_path)
    assert code == 1 and "starts 64 CPU workers" in one_error_line(err)


# 7. the image cache: a checksum per entry, a cache path that is a file, defensive temp names, 0700 ------------
def _images(folder: Path, count: int = 4) -> list[str]:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (12, 6, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_a_cache_entry_overwritten_with_zeros_is_decoded_again(tmp_path, recwarn):
    import numpy as np
    import torch

    from oaecmlr.data.cache import load_images

    paths = _images(tmp_path / "img")
    first = load_images(paths, 8, 4, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npy")
    assert (tmp_path / "cache" / (entry.name + ".sha256")).is_file()  # the checksum beside it
    np.save(entry, np.zeros(first.shape, dtype=np.uint8))  # same shape, no pixels
    again = load_images(paths, 8, 4, cache_dir=tmp_path / "cache")
    assert torch.equal(again, first) and again.sum() > 0
    assert any("does not match its checksum; decoding the images again" in str(w.message) for w in recwarn)
    assert torch.equal(load_images(paths, 8, 4, cache_dir=tmp_path / "cache"), first)  # rebuilt with a new checksum
    (tmp_path / "cache" / (entry.name + ".sha256")).unlink()  # as if killed between the .npy and its checksum
    assert torch.equal(load_images(paths, 8, 4, cache_dir=tmp_path / "cache"), first)
    assert any("has no checksum" in str(w.message) for w in recwarn)


def test_the_checksum_sees_every_block(monkeypatch):
    import numpy as np

    from oaecmlr.data import cache

    monkeypatch.setattr(cache, "CHECKSUM_BLOCK", 1000)
    images = np.arange(3 * 4500, dtype=np.uint8).reshape(3, 4500)
    base = cache.checksum(images)
    for index in (0, 999, 1000, 4499 * 3 - 1):
        flipped = images.copy().reshape(-1)
        flipped[index] ^= 1
        assert cache.checksum(flipped.reshape(3, 4500)) != base
    assert cache.checksum(images.copy()) == base


def test_a_cache_path_that_is_a_file_only_warns(tmp_path, monkeypatch):
    import torch

    from oaecmlr.data.cache import load_images

    paths = _images(tmp_path / "img")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("mine")
    monkeypatch.setenv("OAECMLR_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="is not a folder; decoding without a disk cache"):
        images = load_images(paths, 8, 4)
    assert images.shape == (4, 3, 8, 4) and blocker.read_text() == "mine"
    with pytest.warns(UserWarning, match="could not write image cache"):  # a path under a file
        assert torch.equal(load_images(paths, 8, 4, cache_dir=blocker / "sub"), images)


@pytest.mark.parametrize("pid", ["9" * 30, "\u00b2", "0", "-1", "4194305", ""])
def test_a_temp_file_of_any_name_never_breaks_the_cache(tmp_path, pid):
    import socket

    from oaecmlr.data.cache import clean_stale_temp_files, load_images
    from oaecmlr.tempfiles import writer_is_dead

    (tmp_path / "cache").mkdir()
    odd = tmp_path / "cache" / f".images-8x4-n4-x.npy.{socket.gethostname()}~{pid}~abcd.tmp"
    odd.write_bytes(b"x")
    assert writer_is_dead(odd) is False and clean_stale_temp_files(tmp_path / "cache") == []
    load_images(_images(tmp_path / "img"), 8, 4, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1 and odd.exists()


def test_the_cache_folder_is_private(tmp_path):
    from oaecmlr.data.cache import load_images

    old = os.umask(0)
    try:
        load_images(_images(tmp_path / "img"), 8, 4, cache_dir=tmp_path / "new" / "cache")
    finally:
        os.umask(old)
    assert (tmp_path / "new" / "cache").stat().st_mode & 0o777 == 0o700


# 4. hangs: every read is bounded, only regular files are read --------------------------------------------
def test_a_line_longer_than_the_limit_is_skipped_without_being_read_whole(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path, "a")
    lines = len(run.joinpath("events.jsonl").read_text().splitlines())
    with open(run / "events.jsonl", "a") as f:
        f.write('{"event": "warning", "what": "x", "message": "' + "y" * (ondisk.LINE_LIMIT + 10) + '"}\n')
        f.write(json.dumps({"event": "epoch_end", "time": 2e9, "epoch": 9}) + "\n")
    for code, out, err in views(monkeypatch, capsys, tmp_path):
        assert code == 0 and "Traceback" not in err
        assert f"events.jsonl:{lines + 1}: skipping a line longer than 1,048,576 bytes" in err, err
        assert "yyyy" not in out
    code, out, _ = main(monkeypatch, capsys, "show", "a", "--format", "json", "--runs-dir", tmp_path)
    assert json.loads(out)["epoch"] == 9  # the line after it is read


def test_a_long_line_split_over_many_chunks_is_skipped(tmp_path, monkeypatch):
    from oaecmlr.store.events import EventTail

    path = tmp_path / "events.jsonl"
    good = json.dumps({"event": "epoch_end", "time": 1.0, "epoch": 1})
    path.write_text(good + "\n" + "z" * 5000 + "\n" + good.replace("1}", "2}") + "\n")
    monkeypatch.setattr(EventTail, "CHUNK", 64)
    warned = []
    tail = EventTail(path, warn=warned.append, line_limit=1000)
    assert [e.epoch for e in tail.read_new()] == [1, 2]
    assert warned == [f"{path}:2: skipping a line longer than 1,000 bytes"]
    assert len(tail._partial) <= 1000 + EventTail.CHUNK  # never held whole


def test_oversized_meta_and_status_are_skipped(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path, "a")
    (run / "meta.json").write_text(json.dumps({"note": "n" * ondisk.META_LIMIT}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "pad": "p" * ondisk.STATUS_LIMIT}))
    for index, (code, out, err) in enumerate(views(monkeypatch, capsys, tmp_path)):
        assert code == 0 and "nnnn" not in out, err
        assert "status.json holds 65," in err, err
        if index < 4:  # runs and show read notes, compare does not
            assert "meta.json holds 262," in err and "more than the 262,144 it may; skipped" in err, err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["status.json", "meta.json", "events.jsonl", "config.toml"])
def test_a_fifo_in_place_of_a_file_blocks_no_reader(tmp_path, name):
    run = make_run(tmp_path, "a")
    make_run(tmp_path, "healthy")
    (run / name).unlink(missing_ok=True)
    os.mkfifo(run / name)
    for args in (["runs", "--format", "json"], ["show", "a"], ["compare", "a", "healthy"]):
        result = cli(*args, "--runs-dir", str(tmp_path), timeout=60)  # a blocked open would time out
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        if (name, args[0]) != ("meta.json", "compare"):  # compare reads no notes
            assert f"{name} is not a regular file;" in result.stderr, result.stderr
    listed = json.loads(cli("runs", "--format", "json", "--runs-dir", str(tmp_path), timeout=60).stdout)
    assert {row["name"] for row in listed} == {"a", "healthy"}  # the healthy run is not hidden


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_the_dashboard_reader_is_not_blocked_by_fifos(tmp_path):
    from oaecmlr_tui.tailer import RunTracker, read_log_tail

    run = make_run(tmp_path, "a")
    make_run(tmp_path, "healthy")
    for name in ("status.json", "meta.json", "log.txt"):
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
    tracker = RunTracker(tmp_path)
    done = threading.Event()

    def poll():
        tracker.poll()
        tracker.feeds["a"].status()
        read_log_tail(run / "log.txt")
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    assert done.wait(30), "the dashboard's reader blocked on a FIFO"
    assert {s.name for s in tracker.snapshots()} == {"a", "healthy"}  # the healthy run is not hidden
    assert any("status.json is not a regular file" in m for _, m in tracker.take_warnings())


@pytest.mark.parametrize("text", ["not [toml", "x = " + "[" * 5000 + "]" * 5000, "# " + "y" * 1_100_000],
                         ids=["not-toml", "nested-too-deep", "too-large"])
def test_one_unreadable_config_toml_hides_no_other_run(tmp_path, monkeypatch, capsys, text):
    run = make_run(tmp_path, "a")
    (run / "config.toml").write_text(text)
    for code, _out, err in views(monkeypatch, capsys, tmp_path):
        assert code == 0 and "config.toml" in err and "Traceback" not in err, err[:2000]
        assert "settings are not shown" in err or "defaults are shown instead of a's settings" in err, err[:2000]
    code, out, _ = main(monkeypatch, capsys, "runs", "--format", "json", "--runs-dir", tmp_path)
    assert {row["name"] for row in json.loads(out)} == {"a", "other"}


def test_runs_reads_the_events_as_a_stream(tmp_path, monkeypatch):
    """`runs` folds the events as they are read: the first row is known before the file is read to
    its end, and a fold of the listing keeps two evaluations, whatever the number of events."""
    from oaecmlr.store import runs as runs_module
    from oaecmlr.store.events import EventTail

    run = make_run(tmp_path, "a", epochs=15, sets={"run.eval_every": 1}, base_map=0.5, gain=-0.01)
    monkeypatch.setattr(EventTail, "CHUNK", 256)
    reads, folded = [], []
    real_lines, real_add = EventTail._lines, runs_module.RunFold.add

    def lines(self, chunk):
        reads.append(len(folded))
        return real_lines(self, chunk)

    monkeypatch.setattr(EventTail, "_lines", lines)
    monkeypatch.setattr(runs_module.RunFold, "add", lambda self, events: folded.extend(events) or real_add(self, events))
    summary = runs_module.summarize_run(RunDir(run), history=False)
    assert len(reads) > 50 and reads[-1] > 0  # many chunks, folded as they came
    assert [e.epoch for e in summary.evaluations] == [1, 15]  # the best and the last of 16
    assert summary.losses == () and len(summary.clusters) == 1


def test_runs_skims_iter_lines_only_for_a_time_it_checks(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path, "a")
    number = len((run / "events.jsonl").read_text().splitlines()) + 1
    with open(run / "events.jsonl", "a") as f:
        f.write('{"event": "iter", "time": 1e300, "epoch": 1, "iteration": 1, "total_iterations": 1, "loss": 1, '
                '"lr": 1}\n')
    code, out, err = main(monkeypatch, capsys, "runs", "--format", "json", "--runs-dir", tmp_path)
    assert code == 0 and f"events.jsonl:{number}: skipping a malformed event (iter: time must be a number" in err
    assert json.loads(out)[0]["elapsed"] < 10**6  # the bad time was not folded


def test_the_listing_fold_agrees_with_the_full_fold(tmp_path):
    """The oracle: on run histories of every shape, `runs` (history=False) shows what the full fold
    (show, compare) gives."""
    import random

    from oaecmlr.cli.listing import run_row
    from oaecmlr.store.runs import summarize_run
    from oaecmlr.store.schema import Eval

    rng = random.Random(0)
    for case in range(30):
        state = rng.choice(["finished", "failed", "stopped", "running"])
        run = make_run(tmp_path, f"r{case}", state=state, epochs=rng.randint(1, 8), sets={"run.eval_every": rng.randint(1, 3)},
                       base_map=0.2 + rng.random() * 0.3, gain=rng.choice([-0.02, 0.0, 0.04]))
        if rng.random() < 0.5:  # equal mAPs: the first of equals is the best
            with open(run / "events.jsonl", "a") as f:
                for epoch in (1, 2):
                    record = {"event": "eval", "time": 2e9 + epoch, **{k: getattr(Eval(epoch=epoch, mAP=0.5, rank1=0.6,
                              rank5=0.7, rank10=0.8, mINP=0.1), k) for k in ("epoch", "mAP", "rank1", "rank5", "rank10",
                                                                            "mINP")}}
                    f.write(json.dumps(record) + "\n")
        full, light = summarize_run(RunDir(run)), summarize_run(RunDir(run), history=False)
        assert {**run_row(light), "elapsed": light.elapsed} == {**run_row(full), "elapsed": full.elapsed}
        assert (light.best, light.final, light.latest_clusters) == (full.best, full.final, full.latest_clusters)


# 5. valid JSON of the wrong type or out of range -----------------------------------------------------------
BAD_EVENTS = ['{"event":"eval","epoch":"x","mAP":"bad"}', '{"event":"eval","epoch":1,"mAP":null,"rank1":0,'
              '"rank5":0,"rank10":0,"mINP":0}', '{"event":"cluster","epoch":2,"clusters":"many"}',
              '{"event":"iter","epoch":1,"iteration":1,"total_iterations":10,"loss":"nan?","lr":1}',
              '{"event":"start","schema":"two"}', '{"event":"end","best":"yes"}', '{"event":5}', '[]', '"text"']


@pytest.mark.parametrize("bad", BAD_EVENTS)
def test_a_malformed_event_is_skipped_by_runs_show_and_compare(tmp_path, monkeypatch, capsys, bad):
    for name in ("a", "b"):
        make_run(tmp_path, name)
    with open(tmp_path / "a" / "events.jsonl", "a") as f:
        f.write(bad + "\n")
    line = len((tmp_path / "a" / "events.jsonl").read_text().splitlines())
    for args in (["runs"], ["show", "a"], ["compare", "a", "b"], ["runs", "--format", "json"]):
        code, out, err = main(monkeypatch, capsys, *args, "--runs-dir", tmp_path)
        assert code == 0, err
        assert f"events.jsonl:{line}: skipping a malformed event" in err, err
        assert "Traceback" not in err
    code, out, _ = main(monkeypatch, capsys, "runs", "--format", "json", "--runs-dir", tmp_path)
    assert {r["name"] for r in json.loads(out)} == {"a", "b"}  # one bad run does not hide the others


EVAL = {"event": "eval", "time": 2e9, "epoch": 7, "mAP": 0.5, "rank1": 0.5, "rank5": 0.5, "rank10": 0.5, "mINP": 0.5}
WRONG_EVENTS = {
    "400-digit mAP": ({**EVAL, "mAP": int("9" * 400)}, "eval: mAP must be a number between"),
    "400-digit time": ({**EVAL, "time": int("9" * 400)}, "eval: time must be a number between"),
    "NaN mAP": ('{"event": "eval", "time": 2e9, "epoch": 7, "mAP": NaN, "rank1": 0.5, "rank5": 0.5, "rank10": 0.5, '
                '"mINP": 0.5}', "NaN is not a finite number"),
    "Infinity mAP": ('{"event": "eval", "time": 2e9, "epoch": 7, "mAP": Infinity, "rank1": 0.5, "rank5": 0.5, '
                     '"rank10": 0.5, "mINP": 0.5}', "Infinity is not a finite number"),
    "mAP above 1": ({**EVAL, "mAP": 3.0}, "eval: mAP must be a number between -1e-06 and 1"),
    "string in timings": ({"event": "cluster", "time": 2e9, "epoch": 9, "clusters": 3, "outliers_before": 1,
                           "outliers_after": 0, "oae_assigned": 1, "timings": {"knn": "slow"}},
                          "cluster: timings must be an object whose values are each a number"),
}


@pytest.mark.parametrize("case", list(WRONG_EVENTS))
def test_an_event_of_the_wrong_type_or_range_is_skipped_by_every_reader(tmp_path, monkeypatch, capsys, case):
    line, reason = WRONG_EVENTS[case]
    run = make_run(tmp_path, "a")
    number = len((run / "events.jsonl").read_text().splitlines()) + 1
    with open(run / "events.jsonl", "a") as f:
        f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    for code, _out, err in views(monkeypatch, capsys, tmp_path):
        assert code == 0 and "Traceback" not in err, err
        assert f"events.jsonl:{number}: skipping a malformed event" in err and reason in err, err
    code, out, _ = main(monkeypatch, capsys, "show", "a", "--format", "json", "--runs-dir", tmp_path)
    assert 7 not in [e["epoch"] for e in json.loads(out)["evaluations"]]


def test_the_dashboard_skips_nan_and_its_plot_takes_no_non_finite_point(tmp_path):
    from oaecmlr_tui.plot import Series, render_plot
    from oaecmlr_tui.tailer import RunTracker

    run = make_run(tmp_path, "a")
    with open(run / "events.jsonl", "a") as f:
        f.write(WRONG_EVENTS["NaN mAP"][0] + "\n")
    tracker = RunTracker(tmp_path)
    tracker.poll()
    (summary,) = tracker.snapshots()
    assert all(e.epoch != 7 for e in summary.evaluations)
    assert "NaN is not a finite number" in tracker.take_warnings()[0][1]
    lines = render_plot([Series("mAP", ((1.0, 0.2), (2.0, float("nan")), (3.0, float("inf"))))], 40, 10)
    assert len(lines) == 10  # no ValueError on NaN or Infinity


WRONG_STATUS = {
    "a list": ("[1, 2]", "status.json: not a JSON object but list; skipped"),
    "a dict as state": ('{"state": {"x": 1}, "pid": 1}', "status.json: field state must be one of starting"),
    "pid 10**23": ('{"state": "running", "pid": 100000000000000000000000, "host": "%s"}',
                   "status.json: field pid must be an integer between 1 and 4,194,304, got 1000000000000"),
    "string updated": ('{"state": "running", "host": "elsewhere", "updated": "yesterday"}',
                       "status.json: field updated must be a number between 0 and"),
    "NaN updated": ('{"state": "running", "host": "elsewhere", "updated": NaN}', "status.json: NaN is not a finite number"),
    "pid true": ('{"state": "running", "pid": true, "host": "%s"}', "status.json: field pid must be an integer"),
    "workers of strings": ('{"state": "starting", "workers": ["1"]}', "status.json: field workers must be a list"),
}


@pytest.mark.parametrize("case", list(WRONG_STATUS))
def test_a_status_of_the_wrong_type_is_skipped_with_one_warning(tmp_path, monkeypatch, capsys, case):
    import socket

    text, warning = WRONG_STATUS[case]
    run = make_run(tmp_path, "a")
    (run / "status.json").write_text(text.replace("%s", socket.gethostname()))
    for code, _out, err in views(monkeypatch, capsys, tmp_path):
        assert code == 0 and "Traceback" not in err, err
        assert err.count(warning) == 1, err
    status = RunDir(run).read_status()
    assert all(ondisk.STATUS_RULES[k][0](v) for k, v in status.items() if k in ondisk.STATUS_RULES)


def test_status_fields_of_a_newer_writer_pass_through(tmp_path):
    run = RunDir(tmp_path)
    run.status_file.write_text(json.dumps({"state": "running", "pid": 5, "newer": [1, 2]}))
    assert run.read_status() == {"state": "running", "pid": 5, "newer": [1, 2]}


# 6. terminal escapes are shown escaped, never obeyed -------------------------------------------------------
def test_escapes_in_notes_tags_warnings_and_datasets_never_reach_the_terminal(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path, "a", dataset="market" + ESCAPES)
    with open(run / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": "warning", "time": 2e9, "what": "x", "message": "bad " + ESCAPES, "epoch": 1}) + "\n")
    code, out, err = main(monkeypatch, capsys, "note", "a", "note " + ESCAPES, "--tag", "t" + ESCAPES[:6],
                          "--runs-dir", tmp_path)
    assert code == 0 and "\x1b" not in out + err and "\x07" not in out + err, (out, err)
    for args in (["runs"], ["show", "a"], ["compare", "a", "a"], ["runs", "--where", "tag=x"]):
        code, out, err = main(monkeypatch, capsys, *args, "--runs-dir", tmp_path)
        assert "\x1b" not in out + err and "\x07" not in out + err, (args, out, err)
    code, out, _ = main(monkeypatch, capsys, "show", "a", "--runs-dir", tmp_path)
    assert r"note \x1b]0;PWNED\x07\x1b[2J" in out and r"bad \x1b]0;PWNED" in out
    assert r"market\x1b]0;PWNED" in out


def test_escapes_never_reach_the_dashboard(tmp_path):
    from oaecmlr_tui.runs_screen import row_cells
    from oaecmlr_tui.tailer import RunTracker, read_log_tail

    run = make_run(tmp_path, "a", dataset="d" + ESCAPES)
    (run / "meta.json").write_text(json.dumps({"note": ESCAPES, "tags": [ESCAPES]}))
    with open(run / "log.txt", "a") as f:
        f.write("warning " + ESCAPES + "\n")
    tracker = RunTracker(tmp_path)
    tracker.poll()
    (summary,) = tracker.snapshots()
    (_, meta), = tracker.metas()
    keys = ("name", "dataset", "status", "note")
    cells = row_cells(summary, False, keys, 40, meta, 80)
    assert all("\x1b" not in cell.plain for cell in cells) and r"\x1b[2J" in cells[3].plain
    assert all("\x1b" not in line for line in read_log_tail(run / "log.txt"))
    with open(run / "events.jsonl", "a") as f:
        f.write(json.dumps({"event": "warning", "time": 2e9, "what": "x", "message": "bad " + ESCAPES}) + "\n")
        f.write('{"event": "warning", "what": "x", "message": "' + "y" * (ondisk.LINE_LIMIT + 1) + '"}\n')
    tracker.poll()
    (summary,) = tracker.snapshots()
    assert summary.warnings[-1].message == r"bad \x1b]0;PWNED\x07\x1b[2J"  # the run screen's title shows these
    assert any("skipping a line longer than" in m for _, m in tracker.take_warnings())


def test_printable_escapes_controls_and_keeps_the_rest():
    from oaecmlr.formatting import printable

    assert printable("plain ü 中 ✓") == "plain ü 中 ✓"
    assert printable("a\nb\tc\x1b[2J\x07\u202e\x9b") == r"a\nb\tc\x1b[2J\x07\u202e\x9b"
    assert all(printable(chr(c)).isprintable() for c in range(0x3000))


# 10. tracebacks that are one line now ---------------------------------------------------------------------
@pytest.fixture
def shared_tmp():
    """A folder another user can enter (pytest's tmp_path is private to root)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="oaecmlr-perm-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def as_another_user(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`oaecmlr ARGS` under an unprivileged user (root passes every permission check)."""
    import shutil

    command = [sys.executable, "-m", "oaecmlr.cli.app", *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: permissions cannot be shown")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, "HOME": str(cwd), "OAECMLR_CACHE": str(cwd / "cache")})


def tiny() -> list[str]:
    from enginefixtures import tiny_sets

    return tiny_sets()


@pytest.mark.parametrize("mode, commands", [
    (0o555, [["run", "demo", "--name", "x"]]),  # read-only
    (0o000, [["runs"], ["show", "x"], ["run", "demo", "--name", "x"]]),  # unreadable
])
def test_a_runs_folder_without_permission_is_one_line(shared_tmp, mode, commands):
    runs = shared_tmp / "runs"
    runs.mkdir()
    runs.chmod(mode)
    for command in commands:
        result = as_another_user(*command, "--runs-dir", str(runs), *(tiny() if command[0] == "run" else []),
                                 cwd=shared_tmp)
        line = one_error_line(result.stderr)
        assert result.returncode == 1 and "Permission denied" in line and str(runs) in line, (command, line)
        assert "pass --runs-dir" in line and "no runs" not in result.stderr


def test_a_runs_folder_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("a file")
    for how in ("option", "environment"):
        options = ["--runs-dir", blocker] if how == "option" else []
        if how == "environment":
            monkeypatch.setenv("OAECMLR_RUNS", str(blocker))
        for command in (["runs"], ["show", "x"], ["run", "demo", *tiny()]):
            code, _, err = main(monkeypatch, capsys, *command, *options)
            line = one_error_line(err)
            assert code == 1 and str(blocker) in line and ("is a file" in line or "Not a directory" in line), line
    assert blocker.read_text() == "a file"


def test_output_folders_under_a_file_or_on_a_read_only_disk_are_refused_first(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for command in (["eval", "nothing", "--visrank", blocker / "ranks"], ["export", "nothing", "--out", blocker / "f"],
                    ["export", "nothing", "--out", blocker]):
        code, _, err = main(monkeypatch, capsys, *command, "--runs-dir", tmp_path)
        line = one_error_line(err)
        assert code == 1 and ("is a file, not a folder" in line or "which is a file, not a folder" in line), line
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only disk (root passes any mode check)
    code, _, err = main(monkeypatch, capsys, "export", "nothing", "--out", tmp_path / "new", "--runs-dir", tmp_path)
    assert code == 1 and "cannot write under" in one_error_line(err)


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "cpu;x", "gpu", "99999999999"])
def test_a_bad_device_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, device):
    import torch

    if torch.cuda.is_available() and device == "cuda":
        pytest.skip("this machine has CUDA")
    for command in ("eval", "export"):
        code, _, err = main(monkeypatch, capsys, command, "nothing", "--device", device, "--runs-dir", tmp_path)
        assert code == 1 and "--device" in one_error_line(err)


def test_a_config_nested_too_deep_is_one_line(tmp_path, monkeypatch, capsys):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    code, _, err = main(monkeypatch, capsys, "run", "demo", "--config", deep, "--runs-dir", tmp_path / "runs")
    assert code == 1 and "nested too deep" in one_error_line(err)
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * 2_000_000 + "\n")
    code, _, err = main(monkeypatch, capsys, "run", "demo", "--config", huge, "--runs-dir", tmp_path / "runs")
    assert code == 1 and "larger than 1,048,576 bytes" in one_error_line(err)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.toml")
        code, _, err = main(monkeypatch, capsys, "run", "demo", "--config", tmp_path / "fifo.toml")
        assert code == 1 and "is not a regular file" in one_error_line(err)


def test_note_refuses_what_a_reader_would_skip(tmp_path, monkeypatch, capsys):
    make_run(tmp_path, "a")
    code, _, err = main(monkeypatch, capsys, "note", "a", "n" * (ondisk.NOTE_LIMIT + 1), "--runs-dir", tmp_path)
    assert code == 1 and "the note must be text of at most 10,000 characters" in one_error_line(err)
    code, _, err = main(monkeypatch, capsys, "note", "a", "--tag", "t" * 65, "--runs-dir", tmp_path)
    assert code == 1 and "the tags must be a list" in one_error_line(err)


def test_stopped_at_once_says_what_resume_will_do(tmp_path):
    from oaecmlr.engine.recorder import resume_note

    run = RunDir(tmp_path / "r")
    assert resume_note(run) == f"there is no checkpoint yet: `oaecmlr resume r --runs-dir {tmp_path}` starts over from epoch 0"
    run.path.mkdir()
    run.last.write_bytes(b"x")
    assert resume_note(run) == f"`oaecmlr resume r --runs-dir {tmp_path}` continues from the last checkpoint"


# 12. a --config file sets only its keys; a dataset typed on the command line wins over it, for every name ---
def test_a_config_file_sets_only_its_keys_and_the_typed_dataset_wins(tmp_path):
    partial = tmp_path / "f.toml"
    partial.write_text("[data]\nheight = 96\n")
    resolved = resolve_config("manifest", config_file=str(partial))
    assert resolved.config.data.dataset == "manifest" and resolved.config.data.height == 96
    assert resolved.config.data.width == 128  # the neighbours keep their defaults
    other = tmp_path / "g.toml"
    other.write_text('[data]\ndataset = "cuhk03"\nheight = 96\n')
    resolved = resolve_config("manifest", config_file=str(other))
    assert resolved.config.data.dataset == "manifest"
    assert any("g.toml sets data.dataset = 'cuhk03'; the command line's 'manifest' wins" in n for n in resolved.notes)
    cuhk = resolve_config("cuhk03", config_file=str(tmp_path / "f.toml"), options={"run.epochs": 3})
    assert cuhk.config.data.dataset == "cuhk03" and cuhk.config.data.height == 96 and cuhk.notes == []


@pytest.mark.parametrize("typed", ["dukemtmcreid", "duke", "market", "market1501", "msmt17", "msmt", "cuhk03"])
def test_a_typed_dataset_wins_over_config_also_when_it_names_a_preset(tmp_path, typed):
    from oaecmlr.config import dataset_name, resolve_config

    wanted = dataset_name(typed)
    other = "manifest" if wanted != "manifest" else "synthetic"
    config_file = tmp_path / "other.toml"
    config_file.write_text(f'[data]\ndataset = "{other}"\nheight = 96\n')
    resolved = resolve_config(typed, config_file=str(config_file))
    assert resolved.config.data.dataset == wanted and resolved.config.data.height == 96  # the rest of the file holds
    dataset_notes = [n for n in resolved.notes if "data.dataset" in n]
    assert dataset_notes == [f"{config_file} sets data.dataset = '{other}'; the command line's '{wanted}' wins"]


def test_the_report_of_a_duke_run_under_the_cuhk03_config(tmp_path):
    from oaecmlr.config import resolve_config
    from oaecmlr.config.presets import presets_dir

    resolved = resolve_config("dukemtmcreid", config_file=str(presets_dir() / "cuhk03.toml"))
    assert resolved.config.data.dataset == "dukemtmcreid"
    assert not any("replacing 'dukemtmcreid'" in n for n in resolved.notes)


# 13. messages ----------------------------------------------------------------------------------------------
def test_eval_of_a_run_without_checkpoints_sends_nowhere(tmp_path, monkeypatch, capsys):
    make_run(tmp_path, "a", sets={"model.arch": "resnet18"})
    for which in ([], ["--checkpoint", "last"], ["--checkpoint", "best"]):
        code, _, err = main(monkeypatch, capsys, "eval", "a", "--device", "cpu", *which, "--runs-dir", tmp_path)
        line = one_error_line(err)
        assert code == 1 and "has no checkpoint yet" in line and "try --checkpoint" not in line, line
    (tmp_path / "a" / "last.pt").write_bytes(b"only last.pt")  # the other one exists: point at it
    code, _, err = main(monkeypatch, capsys, "eval", "a", "--device", "cpu", "--runs-dir", tmp_path)
    assert code == 1 and "has no best.pt (no evaluation after epoch 0 yet); try --checkpoint last" in one_error_line(err)


def test_a_raw_pickle_is_refused_without_torch_asking_to_file_an_issue(tmp_path, monkeypatch, capsys):
    import pickle

    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": [1, 2, 3]}, protocol=4))
    code, _, err = main(monkeypatch, capsys, "eval", raw, "--dataset", "synthetic", "--device", "cpu")
    assert code == 1 and "not a file written by torch.save" in one_error_line(err)
    assert "file an issue" not in err and "warning" not in err


def test_a_corrupt_image_in_a_manifest_is_named_before_any_run_folder_exists(tmp_path, monkeypatch, capsys):
    from PIL import Image

    data = tmp_path / "mine"
    data.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        Image.new("RGB", (8, 16), (10, 20, 30)).save(data / name)
    (data / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (data / "manifest.csv").write_text("path,pid,camid,split\na.jpg,1,0,train\nb.jpg,1,1,train\nc.jpg,2,0,query\n"
                                       "d.jpg,2,1,gallery\n")
    code, _, err = main(monkeypatch, capsys, "run", "manifest", "--data-root", data, "--runs-dir", tmp_path / "runs",
                        "--set", f"data.cache_dir={tmp_path / 'cache'}")
    line = one_error_line(err)
    assert code == 1 and f"cannot read image {data / 'b.jpg'}" in line and "replace or remove the file" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_the_dashboard_says_when_the_runs_folder_cannot_be_read(tmp_path, monkeypatch):
    pytest.importorskip("textual")
    import asyncio
    import errno

    from oaecmlr_tui import tailer
    from oaecmlr_tui.app import make_app

    real = os.scandir

    def unreadable(path):
        if Path(path) == tmp_path / "runs":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(tailer.os, "scandir", unreadable)
    tracker = tailer.RunTracker(tmp_path / "runs")
    assert tracker.poll() and tracker.problem == f"cannot read the runs folder {tmp_path / 'runs'} (Permission denied)"
    app = make_app(tmp_path / "runs", poll_interval=0.05, gpu_probe=lambda: ())

    async def scenario():
        async with app.run_test(size=(160, 30)) as pilot:
            for _ in range(100):
                await pilot.pause(0.05)
                info = str(app.screen.query_one("#runs-info").render())
                if "Permission denied" in info:
                    break
            assert "cannot read the runs folder" in info and "n starts one" not in info, info

    asyncio.run(scenario())


def test_a_run_folder_linked_from_outside_is_listed_and_shown_alike(tmp_path, monkeypatch, capsys):
    make_run(tmp_path / "elsewhere", "linked")
    (tmp_path / "runs").mkdir()
    os.symlink(tmp_path / "elsewhere" / "linked", tmp_path / "runs" / "linked")
    code, out, _ = main(monkeypatch, capsys, "runs", "--format", "json", "--runs-dir", tmp_path / "runs")
    assert code == 0 and [r["name"] for r in json.loads(out)] == ["linked"]
    code, out, err = main(monkeypatch, capsys, "show", "linked", "--format", "json", "--runs-dir", tmp_path / "runs")
    assert code == 0 and json.loads(out)["name"] == "linked", err
