"""Bad input to `oaecmlr run`: one clear line on stderr, exit code 1, never a traceback, nothing lost."""

from __future__ import annotations

import pytest
from enginefixtures import cli, tiny_sets
from PIL import Image


def assert_one_line_error(result, *needles: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert all(line.startswith(("error:", "warning:", "note:")) for line in lines), result.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    message = errors[0]
    for needle in needles:
        assert needle in message, message
    return message


def write_market_layout(root, train_names=("0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"), corrupt=None):
    for folder, names in (("bounding_box_train", train_names), ("query", ["0002_c1s1_000001_00.jpg"]),
                          ("bounding_box_test", ["0002_c2s1_000002_00.jpg"])):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (16, 32), (100, 50, 25)).save(root / folder / name)
    if corrupt:
        (root / "bounding_box_train" / corrupt).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_missing_data_root_shows_expected_layout(tmp_path):
    result = cli("run", "cuhk03", "--data-root", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, "nowhere", "bounding_box_train")
    assert not (tmp_path / "runs").exists()  # nothing created for a run that cannot start


def test_folder_that_is_not_the_layout(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    result = cli("run", "cuhk03", "--data-root", str(tmp_path / "data"), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, "not a cuhk03 folder")


def test_corrupt_image_is_named_and_nothing_is_trained(tmp_path):
    data = tmp_path / "cuhk"
    write_market_layout(data, corrupt="0003_c1s1_000001_00.jpg")
    result = cli("run", "cuhk03", "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"), "--name", "bad",
                 "--set", "data.cache_dir=" + str(tmp_path / "cache"))
    assert_one_line_error(result, "0003_c1s1_000001_00.jpg")
    assert not (tmp_path / "runs").exists()  # found from its header, before any run folder exists


def test_empty_split(tmp_path):
    data = tmp_path / "cuhk"
    write_market_layout(data)
    for f in (data / "query").iterdir():
        f.unlink()
    result = cli("run", "cuhk03", "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, "query")


def test_gpus_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("run", "demo", "--gpus", "0", "--runs-dir", str(tmp_path))
    assert_one_line_error(result, "CUDA", "--gpus cpu")


def test_unknown_set_key(tmp_path):
    result = cli("run", "demo", "--set", "oae.rhoo=1", "--runs-dir", str(tmp_path))
    assert_one_line_error(result, "oae.rhoo", "rho")
    result = cli("run", "demo", "--set", "oae.rho=abc", "--runs-dir", str(tmp_path))
    assert_one_line_error(result, "oae.rho", "expects a number")


def test_existing_run_name_is_refused_and_left_intact(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "events.jsonl").write_text('{"event": "start", "time": 1}\n')
    result = cli("run", "demo", "--name", "taken", "--runs-dir", str(tmp_path), *tiny_sets())
    assert_one_line_error(result, "already exists", "resume")
    assert (tmp_path / "taken" / "events.jsonl").read_text() == '{"event": "start", "time": 1}\n'


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs"])
def test_run_name_cannot_escape_the_runs_folder(tmp_path, name):
    result = cli("run", "demo", "--name", name, "--runs-dir", str(tmp_path / "runs"), *tiny_sets())
    assert_one_line_error(result, "name")
    assert not (tmp_path / "escape").exists()


def test_unknown_preset_lists_the_presets(tmp_path):
    result = cli("run", "nosuchset", "--runs-dir", str(tmp_path))
    assert_one_line_error(result, "nosuchset")


def test_missing_run_for_show_and_resume(tmp_path):
    assert_one_line_error(cli("show", "ghost", "--runs-dir", str(tmp_path)), "ghost")
    assert_one_line_error(cli("resume", "ghost", "--runs-dir", str(tmp_path)), "ghost")


def test_zero_byte_image_is_named(tmp_path):
    data = tmp_path / "cuhk"
    write_market_layout(data)
    (data / "bounding_box_train" / "0004_c1s1_000001_00.jpg").write_bytes(b"")
    result = cli("run", "cuhk03", "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"), "--name", "zero",
                 "--set", "data.cache_dir=" + str(tmp_path / "cache"))
    assert_one_line_error(result, "0004_c1s1_000001_00.jpg")
    assert not (tmp_path / "runs" / "zero" / "last.pt").exists()
    assert not list((tmp_path / "cache").glob("*.npy")) if (tmp_path / "cache").exists() else True


def test_wrong_file_name_is_named_before_anything_is_written(tmp_path):
    data = tmp_path / "cuhk"
    write_market_layout(data)
    Image.new("RGB", (16, 32)).save(data / "bounding_box_train" / "person_one.jpg")
    result = cli("run", "cuhk03", "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, "person_one.jpg")
    assert not (tmp_path / "runs").exists()


def write_manifest(root, lines):
    root.mkdir(parents=True, exist_ok=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (16, 32), (10, 20, 30)).save(root / name)
    text = "\n".join(lines) + "\n"
    (root / "manifest.csv").write_text(text)
    return text


@pytest.mark.parametrize("lines, needles", [
    (["path,pid,split", "a.jpg,1,train"], ["manifest.csv", "camid"]),
    (["path,pid,camid,split", "a.jpg,1,0,train", "b.jpg,2,1,validation"], ["manifest.csv:3", "validation"]),
    (["path,pid,camid,split", "a.jpg,1,0,train", "../outside.jpg,2,1,query"], ["manifest.csv:3", "outside"]),
    (["path,pid,camid,split", "a.jpg,1,0,train", "b.jpg,x,1,query"], ["manifest.csv:3"]),
    (["path,pid,camid,split", "a.jpg,1,0,train", "missing.jpg,2,1,query"], ["manifest.csv", "missing.jpg"]),
])
def test_bad_manifests_name_file_and_line_and_leave_everything_intact(tmp_path, lines, needles):
    data = tmp_path / "mine"
    text = write_manifest(data, lines)
    before = sorted(p.name for p in data.iterdir())
    result = cli("run", "manifest", "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, *needles)
    assert (data / "manifest.csv").read_text() == text and sorted(p.name for p in data.iterdir()) == before
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind", ["picture", "missing", "folder", "cut"])
def test_a_bad_pretrained_file_makes_no_run_folder(tmp_path, kind):
    path = {"picture": tmp_path / "some.jpg", "missing": tmp_path / "absent.pth", "folder": tmp_path / "weights",
            "cut": tmp_path / "cut.pth"}[kind]
    if kind == "picture":
        Image.new("RGB", (8, 8)).save(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "cut":
        path.write_bytes(b"PK\x03\x04" + bytes(100))  # the start of a torch.save zip, cut short
    result = cli("run", "demo", "--pretrained", str(path), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, str(path))
    assert not (tmp_path / "runs").exists()


def test_a_market_folder_is_not_trained_as_duke(tmp_path):
    data = tmp_path / "Market-1501"
    names = [f"{p:04d}_c{c}s1_{p * 10 + c:06d}_01.jpg" for p in range(1, 21) for c in range(1, 7)]
    write_market_layout(data, train_names=names)
    result = cli("run", "duke", "--gpus", "cpu", "--data-root", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert_one_line_error(result, f"{data} looks like Market-1501", "not DukeMTMC-reID: use the dataset market")
    assert not (tmp_path / "runs").exists()
