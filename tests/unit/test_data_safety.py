"""Entries that escape the data folder (through symlinks) and integers that do not fit are refused,
naming the file and line, before any image is opened."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from oaecmlr.data.datasets import MAX_ID, load_dataset
from oaecmlr.errors import DatasetError

pytestmark = [pytest.mark.filterwarnings("ignore::oaecmlr.data.records.DatasetCountWarning"),
              pytest.mark.filterwarnings("ignore::oaecmlr.data.records.DatasetNote"),
              pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")]

BIG = "1" * 23  # 23 digits: int64 overflows on it


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg()
ROWS = ["img/a.jpg,1,0,train", "img/b.jpg,1,1,train", "img/c.jpg,2,0,query", "img/d.jpg,2,1,gallery"]


def write(path: Path, data: bytes = JPEG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_manifest(root: Path, extra: list[str] = ()) -> Path:
    """A valid manifest (lines 2-5) and its images; `extra` rows start at line 6."""
    for row in ROWS:
        write(root / row.split(",")[0])
    (root / "manifest.csv").write_text("\n".join(["path,pid,camid,split", *ROWS, *extra]) + "\n")
    return root


@pytest.fixture
def outside(tmp_path) -> Path:
    """An image outside the data folder, the 'secret'."""
    return write(tmp_path / "outside" / "secret.jpg")


# ---------------------------------------------------------------- symlinks in manifests

def test_symlinks_that_stay_inside_are_accepted(tmp_path):
    root = make_manifest(tmp_path / "D", ["img/link.jpg,3,0,train", "alias/a.jpg,4,1,train"])
    os.symlink(root / "img" / "a.jpg", root / "img" / "link.jpg")  # absolute target inside
    os.symlink("img", root / "alias")  # a relative link to a folder inside
    splits = load_dataset("manifest", root)
    assert {r.pid for r in splits.train} == {1, 3, 4}
    assert str(root / "img" / "link.jpg") in {r.path for r in splits.train}  # the path as listed


def test_a_data_folder_that_is_itself_a_symlink_is_fine(tmp_path):
    real = make_manifest(tmp_path / "real")
    os.symlink(real, tmp_path / "D")
    assert len(load_dataset("manifest", tmp_path / "D").train) == 2


def test_symlink_to_a_file_outside_is_refused_with_its_line(tmp_path, outside):
    root = make_manifest(tmp_path / "D", ["img/link.jpg,999,0,train"])
    os.symlink(outside, root / "img" / "link.jpg")
    with pytest.raises(DatasetError) as info:
        load_dataset("manifest", root)
    message = str(info.value)
    assert message.startswith(f"{root / 'manifest.csv'}:6: 'img/link.jpg' resolves (through a symlink) to {outside}")
    assert f"outside the data folder {os.path.realpath(root)}" in message
    assert "data.allow_outside=true" in message and "\n" not in message


def test_symlink_to_a_folder_outside_is_refused(tmp_path):
    root = make_manifest(tmp_path / "D", ["img/root/etc/passwd,999,0,train"])
    os.symlink("/", root / "img" / "root")  # the report: a link to / opened /etc/passwd
    with pytest.raises(DatasetError, match=r"manifest\.csv:6: 'img/root/etc/passwd' resolves \(through a symlink\) "
                                           r"to /etc/passwd, outside the data folder"):
        load_dataset("manifest", root)


def test_a_link_chain_that_ends_outside_is_refused(tmp_path, outside):
    root = make_manifest(tmp_path / "D", ["img/hop.jpg,5,0,train"])
    os.symlink(outside, root / "img" / "far.jpg")
    os.symlink("far.jpg", root / "img" / "hop.jpg")  # inside -> inside -> outside
    with pytest.raises(DatasetError, match=r"manifest\.csv:6: 'img/hop\.jpg' resolves"):
        load_dataset("manifest", root)


def test_allow_outside_accepts_symlink_farms(tmp_path, outside):
    root = make_manifest(tmp_path / "D", ["img/link.jpg,7,0,train", "farm/secret.jpg,8,1,train"])
    os.symlink(outside, root / "img" / "link.jpg")
    os.symlink(outside.parent, root / "farm")
    splits = load_dataset("manifest", root, allow_outside=True)
    assert {r.pid for r in splits.train} == {1, 7, 8}
    with pytest.raises(DatasetError, match="resolves"):
        load_dataset("manifest", root)  # the default refuses them


def test_text_escapes_are_still_refused_with_allow_outside(tmp_path, outside):
    root = make_manifest(tmp_path / "D", ["../outside/secret.jpg,9,0,train"])
    with pytest.raises(DatasetError, match=r"manifest\.csv:6: path '\.\./outside/secret\.jpg' points outside"):
        load_dataset("manifest", root, allow_outside=True)


# ---------------------------------------------------------------- symlinks in MSMT17 lists

def make_msmt(root: Path, query: list[str], links: tuple[str, ...] = ()) -> Path:
    """An MSMT17 V1 folder; the query entries in `links` get no image (the test makes them links)."""
    lists = {"list_train.txt": ("train", ["0000/0000_000_01_0303morning_0015_0.jpg 0"]),
             "list_val.txt": ("train", ["0001/0001_000_02_0303noon_0001_0.jpg 1"]),
             "list_query.txt": ("test", query),
             "list_gallery.txt": ("test", ["0003/0003_001_07_0303afternoon_0002_0.jpg 3"])}
    for name, (folder, lines) in lists.items():
        write(root / name, ("\n".join(lines) + "\n").encode())
        for line in lines:
            if line.split()[0] not in links:
                write(root / folder / line.split()[0])
    return root


def test_msmt_symlinks(tmp_path, outside):
    root = make_msmt(tmp_path / "MSMT17", ["0003/0003_000_05_0303afternoon_0001_0.jpg 3",
                                           "0003/0003_002_05_link_0001_0.jpg 3"],
                     links=("0003/0003_002_05_link_0001_0.jpg",))
    link = root / "test" / "0003" / "0003_002_05_link_0001_0.jpg"
    os.symlink(root / "test" / "0003" / "0003_000_05_0303afternoon_0001_0.jpg", link)
    assert len(load_dataset("msmt17", root).query) == 2  # a link inside the image folder
    link.unlink()
    os.symlink(outside, link)
    with pytest.raises(DatasetError, match=r"list_query\.txt:2: '0003/0003_002_05_link_0001_0\.jpg' resolves "
                                           r"\(through a symlink\) to .*secret\.jpg, outside the data folder .*test"):
        load_dataset("msmt17", root)
    assert len(load_dataset("msmt17", root, allow_outside=True).query) == 2


def test_msmt_symlinked_folder_outside(tmp_path, outside):
    write(outside.parent / "0009_000_04_x_0001_0.jpg")
    root = make_msmt(tmp_path / "MSMT17", ["far/0009_000_04_x_0001_0.jpg 9"], links=("far/0009_000_04_x_0001_0.jpg",))
    os.symlink(outside.parent, root / "test" / "far")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1: 'far/0009_000_04_x_0001_0\.jpg' resolves"):
        load_dataset("msmt17", root)
    assert [r.pid for r in load_dataset("msmt17", root, allow_outside=True).query] == [9]


@pytest.mark.parametrize(("entry", "message"), [
    ("../../outside/secret_0_01_x.jpg 3", r"list_query\.txt:1: path .* points outside the image folder"),
    ("/etc/passwd_0_01 3", r"list_query\.txt:1: absolute path '/etc/passwd_0_01'"),
])
def test_msmt_text_escapes(tmp_path, entry, message):
    root = make_msmt(tmp_path / "MSMT17", ["0003/0003_000_05_0303afternoon_0001_0.jpg 3"])
    (root / "list_query.txt").write_text(entry + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset("msmt17", root, allow_outside=True)


# ---------------------------------------------------------------- symlinks in Market-layout folders

def make_market(root: Path) -> Path:
    for sub, name in (("bounding_box_train", "0001_c1s1_000001_00.jpg"), ("bounding_box_train", "0001_c2s1_000001_00.jpg"),
                      ("query", "0002_c1s1_000001_00.jpg"), ("bounding_box_test", "0002_c2s1_000001_00.jpg")):
        write(root / sub / name)
    return root


@pytest.mark.parametrize("dataset", ["market", "duke", "cuhk03", "msmt17"])
def test_market_layout_symlinks_outside_are_refused(tmp_path, outside, dataset):
    root = make_market(tmp_path / "D")
    link = root / "bounding_box_train" / "0003_c1s1_000001_00.jpg"
    os.symlink(outside, link)
    with pytest.raises(DatasetError) as info:
        load_dataset(dataset, root)
    message = str(info.value)
    assert message.startswith(f"{link}: 'bounding_box_train/0003_c1s1_000001_00.jpg' resolves (through a symlink) to "
                              f"{outside}, outside the data folder {os.path.realpath(root)}; remove the link")
    assert "data.allow_outside=true" in message
    assert str(link) in {r.path for r in load_dataset(dataset, root, allow_outside=True).train}


def test_a_market_split_folder_linked_outside_is_refused(tmp_path, outside):
    root = make_market(tmp_path / "D")
    write(outside.parent / "0007_c1s1_000001_00.jpg")
    (root / "query").rename(tmp_path / "q")
    os.symlink(outside.parent, root / "query")
    with pytest.raises(DatasetError, match=r"query/0007_c1s1_000001_00\.jpg' resolves \(through a symlink\)"):
        load_dataset("market", root)


def test_market_symlinks_inside_and_cuhk03_variants_are_fine(tmp_path):
    root = make_market(tmp_path / "D")
    os.symlink(root / "query" / "0002_c1s1_000001_00.jpg", root / "bounding_box_train" / "0004_c3s1_000001_00.jpg")
    assert len(load_dataset("market", root).train) == 3
    both = tmp_path / "NP"
    make_market(both / "labeled")
    make_market(both / "detected")
    os.symlink(both / "detected" / "query" / "0002_c1s1_000001_00.jpg",  # across the variants: inside the folder
               both / "labeled" / "bounding_box_train" / "0005_c3s1_000001_00.jpg")
    assert len(load_dataset("cuhk03", both).train) == 3


def test_data_check_decode_never_opens_a_file_outside(tmp_path, outside, opened):
    from oaecmlr.cli.datacheck import data_check_command

    root = make_market(tmp_path / "D")
    os.symlink(outside, root / "bounding_box_train" / "0003_c1s1_000001_00.jpg")
    del opened[:]
    with pytest.raises(DatasetError, match="resolves"):
        data_check_command("market", str(root), True, "json")
    assert str(outside) not in opened


# ---------------------------------------------------------------- integers that do not fit

@pytest.mark.parametrize(("row", "message"), [
    (f"img/a2.jpg,{BIG},0,train", rf"manifest\.csv:6: pid '{BIG}' does not fit: it must lie between "
                                  r"-1 and 2,147,483,647 \(2\*\*31 - 1\); renumber the identities"),
    (f"img/a2.jpg,3,{BIG},train", rf"manifest\.csv:6: camid '{BIG}' does not fit: .* between 0 and 2,147,483,647"),
    (f"img/a2.jpg,-{BIG},0,train", r"manifest\.csv:6: pid '-1111.*' does not fit"),
    (f"img/a2.jpg,{MAX_ID + 1},0,train", r"manifest\.csv:6: pid '2147483648' does not fit"),
    ("img/a2.jpg," + "9" * 5000 + ",0,train", r"manifest\.csv:6: pid '9999.*\.\.\. \(5,000 characters\) does not fit"),
])
def test_manifest_integers_that_do_not_fit(tmp_path, row, message):
    root = make_manifest(tmp_path / "D", [row])
    write(root / "img" / "a2.jpg")
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset("manifest", root)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_the_largest_ids_fit(tmp_path):
    root = make_manifest(tmp_path / "D", [f"img/a2.jpg,{MAX_ID},{MAX_ID},train", "img/a3.jpg,0000000000000000000005,0,train"])
    write(root / "img" / "a2.jpg")
    write(root / "img" / "a3.jpg")
    train = load_dataset("manifest", root).train
    assert {(r.pid, r.camid) for r in train} >= {(MAX_ID, MAX_ID), (5, 0)}


def test_market_file_names_that_do_not_fit(tmp_path):
    root = tmp_path / "market1501"
    for sub, name in (("bounding_box_train", "0001_c1s1_000001_00.jpg"), ("query", "0002_c1s1_000001_00.jpg"),
                      ("bounding_box_test", "0002_c2s1_000001_00.jpg")):
        write(root / sub / name)
    bad = write(root / "query" / f"{BIG}_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match=rf"query/{BIG}_c1s1_000001_00\.jpg: the pid or camera number in the file "
                                           r"name does not fit: they must be at most 2,147,483,647"):
        load_dataset("market", root)
    bad.unlink()
    write(root / "query" / f"0002_c{BIG}s1_000001_00.jpg")
    with pytest.raises(DatasetError, match=rf"query/0002_c{BIG}s1_000001_00\.jpg: the pid or camera number"):
        load_dataset("market", root)


@pytest.mark.parametrize(("entry", "message"), [
    (f"0003/0003_000_05_0303afternoon_0001_0.jpg {BIG}", rf"list_query\.txt:2: pid '{BIG}' does not fit"),
    (f"0003/0003_000_{BIG}_0303afternoon_0001_0.jpg 3", rf"list_query\.txt:2: camera \(3rd '_' field of the file "
                                                        rf"name\) '{BIG}' does not fit"),
])
def test_msmt_integers_that_do_not_fit(tmp_path, entry, message):
    root = make_msmt(tmp_path / "MSMT17", ["0003/0003_000_05_0303afternoon_0001_0.jpg 3"])
    (root / "list_query.txt").write_text("0003/0003_000_05_0303afternoon_0001_0.jpg 3\n" + entry + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset("msmt17", root)


# ---------------------------------------------------------------- other malformed input, one line each

def test_a_manifest_field_too_large_for_csv(tmp_path):
    root = make_manifest(tmp_path / "D", ['"' + "x" * 200_000 + '",1,0,train'])
    with pytest.raises(DatasetError, match=r"manifest\.csv:6: not valid CSV \(field larger than field limit"):
        load_dataset("manifest", root)


def test_a_manifest_that_is_not_utf8_names_the_line(tmp_path):
    root = make_manifest(tmp_path / "D")
    with open(root / "manifest.csv", "ab") as f:
        f.write(b"img/\xe9t\xe9.jpg,1,0,train\n")
    with pytest.raises(DatasetError, match=r"manifest\.csv:6: not UTF-8 text \(byte 0xe9\); re-save the file as UTF-8"):
        load_dataset("manifest", root)


def test_terminal_escapes_in_names_are_shown_escaped(tmp_path):
    root = tmp_path / "market1501"
    for sub, name in (("bounding_box_train", "0001_c1s1_000001_00.jpg"), ("query", "0002_c1s1_000001_00.jpg"),
                      ("bounding_box_test", "0002_c2s1_000001_00.jpg")):
        write(root / sub / name)
    write(root / "query" / "\x1b[31mred\nline.jpg")
    with pytest.raises(DatasetError) as info:
        load_dataset("market", root)
    message = str(info.value)
    assert "\x1b" not in message and "\n" not in message
    assert "\\x1b[31mred\\nline.jpg: file name does not match" in message


def test_manifest_values_with_escapes_are_shown_escaped(tmp_path):
    root = make_manifest(tmp_path / "D", ["img/missing\x1b[2J.jpg,1,0,train"])
    with pytest.raises(DatasetError) as info:
        load_dataset("manifest", root)
    assert "\x1b" not in str(info.value) and "missing\\x1b[2J.jpg does not exist" in str(info.value)


# ---------------------------------------------------------------- nothing is opened or written when refused

@pytest.fixture
def opened():
    """Paths opened (any open, through the audit hook) while the list is active."""
    seen: list[str] | None = None

    def hook(event, args):
        if event == "open" and seen is not None and args and isinstance(args[0], (str, bytes, os.PathLike)):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed: this one only records while `seen` is a list
    seen = []
    yield seen
    seen = None


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if not p.is_symlink()}


@pytest.mark.parametrize("case", ["outside", "folder", "pid", "camid"])
def test_nothing_is_opened_or_written_when_refused(tmp_path, outside, opened, monkeypatch, case):
    rows = {"outside": "img/link.jpg,1,0,train", "folder": "img/root/etc/passwd,1,0,train",
            "pid": f"img/a.jpg,{BIG},0,train", "camid": f"img/a.jpg,1,{BIG},train"}
    root = make_manifest(tmp_path / "D", [rows[case]])
    (root / "img" / "link.jpg").symlink_to(outside)
    (root / "img" / "root").symlink_to("/")
    monkeypatch.setenv("OAECMLR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was decoded"))
    before = _tree(tmp_path)
    del opened[:]
    with pytest.raises(DatasetError, match=r"manifest\.csv:6: "):
        load_dataset("manifest", root)
    assert [p for p in opened if Path(p).suffix.lower() in (".jpg", ".png") or "passwd" in p] == []
    data_files = {p for p in opened if p.startswith(str(tmp_path))}  # not python's own (codec modules...)
    assert data_files == {str(root / "manifest.csv")}, opened  # the hook works: it saw the manifest
    assert _tree(tmp_path) == before and not (tmp_path / "cache").exists()
