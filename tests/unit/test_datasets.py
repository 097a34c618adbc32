"""Dataset parsers, aliases, data-root resolution and error messages, on tiny fake folders."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
from PIL import Image

from oaecmlr.data import datasets
from oaecmlr.data.datasets import DATASETS, get_spec, load_dataset, resolve_data_root, standard_counts
from oaecmlr.data.records import DatasetCountWarning, DatasetNote
from oaecmlr.errors import DatasetError

# Tiny datasets never have the standard sizes; the warning and the note have their own tests.
pytestmark = [pytest.mark.filterwarnings("ignore::oaecmlr.data.records.DatasetCountWarning"),
              pytest.mark.filterwarnings("ignore::oaecmlr.data.records.DatasetNote")]


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 60, 30)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def touch_images(folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(JPEG)


def make_market(root: Path, train: list[str], query: list[str], gallery: list[str]) -> Path:
    for sub, names in (("bounding_box_train", train), ("query", query), ("bounding_box_test", gallery)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        touch_images(root / sub, names)
    return root


def market_root(tmp_path: Path) -> Path:
    root = make_market(
        tmp_path / "market1501",
        train=["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c6s4_002202_01.jpg",
               "0000_c1s1_000001_00.jpg", "-1_c1s1_000002_00.jpg"],
        query=["0002_c3s1_000001_00.jpg", "0007_c1s1_000001_00.jpg"],
        gallery=["0002_c5s1_000001_00.jpg", "0000_c6s1_000001_00.jpg", "-1_c2s1_000001_00.jpg"],
    )
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image")
    return root


def pids_cams(records):
    return [(r.pid, r.camid) for r in records]


def test_market_drops_junk_keeps_distractors_in_gallery_only(tmp_path):
    splits = load_dataset("market1501", market_root(tmp_path))
    assert splits.name == "market1501"
    assert pids_cams(splits.train) == [(2, 0), (2, 1), (7, 5)]  # pid 0 and -1 dropped, c1 -> 0
    assert pids_cams(splits.query) == [(2, 2), (7, 0)]
    assert sorted(pids_cams(splits.gallery)) == [(0, 5), (2, 4)]  # distractor kept, junk and Thumbs.db skipped
    for split in (splits.train, splits.query, splits.gallery):
        assert [r.path for r in split] == sorted(r.path for r in split)
        assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in split)
    assert splits.stats()["train"] == {"images": 3, "ids": 2, "cams": 3}


@pytest.mark.parametrize("name", ["market", "Market-1501", "MARKET1501"])
def test_market_aliases(tmp_path, name):
    assert load_dataset(name, market_root(tmp_path)).name == "market1501"


def test_market_nested_one_level(tmp_path):
    market_root(tmp_path / "download" / "Market-1501-v15.09.15")
    splits = load_dataset("market", tmp_path / "download" / "Market-1501-v15.09.15")
    assert len(splits.train) == 3
    splits = load_dataset("market", tmp_path / "download")  # the single child holding the layout
    assert splits.root.endswith("market1501")


def test_duke(tmp_path):
    root = make_market(tmp_path / "duke", train=["0001_c2_f0046182.jpg", "0001_c8_f0046999.jpg"],
                       query=["0005_c1_f0000001.jpg"], gallery=["0005_c3_f0000002.jpg", "0009_c4_f0000003.jpg"])
    splits = load_dataset("duke", root)
    assert splits.name == "dukemtmcreid"
    assert pids_cams(splits.train) == [(1, 1), (1, 7)]
    assert pids_cams(splits.gallery) == [(5, 2), (9, 3)]


def make_msmt(root: Path, train_dir: str = "train", test_dir: str = "test") -> Path:
    lists = {
        "list_train.txt": (train_dir, ["0000/0000_000_01_0303morning_0015_0.jpg 0",
                                       "0000/0000_001_15_0303morning_0016_0.jpg 0"]),
        "list_val.txt": (train_dir, ["0001/0001_000_02_0303noon_0001_0.jpg 1"]),
        "list_query.txt": (test_dir, ["0003/0003_000_05_0303afternoon_0001_0.jpg 3"]),
        "list_gallery.txt": (test_dir, ["0003/0003_001_07_0303afternoon_0002_0.jpg 3",
                                        "0004/0004_000_07_0303afternoon_0003_0.jpg 4", ""]),
    }
    for list_name, (folder, lines) in lists.items():
        (root / list_name).parent.mkdir(parents=True, exist_ok=True)
        (root / list_name).write_text("\n".join(lines) + "\n")
        touch_images(root / folder, [line.split()[0] for line in lines if line])
    return root


@pytest.mark.parametrize("dirs", [("train", "test"), ("mask_train_v2", "mask_test_v2")], ids=["v1", "v2"])
def test_msmt_list_layouts(tmp_path, dirs):
    root = make_msmt(tmp_path / "MSMT17", *dirs)
    splits = load_dataset("msmt", root)
    assert splits.name == "msmt17"
    assert pids_cams(splits.train) == [(0, 0), (0, 14), (1, 1)]  # train + val, camera 3rd field, 1-based -> 0
    assert pids_cams(splits.query) == [(3, 4)]
    assert pids_cams(splits.gallery) == [(3, 6), (4, 6)]
    assert all(f"/{dirs[0]}/" in r.path for r in splits.train)
    assert all(f"/{dirs[1]}/" in r.path for r in splits.query + splits.gallery)


def test_msmt_converted_to_market_layout_keeps_pid0(tmp_path):
    root = make_market(tmp_path / "msmt17", train=["0000_c1_0303morning_0015_0.jpg", "0001_c12_x.jpg"],
                       query=["0003_c5_a.jpg"], gallery=["0003_c15_b.jpg"])
    splits = load_dataset("msmt17", root)
    assert pids_cams(splits.train) == [(0, 0), (1, 11)]
    assert pids_cams(splits.gallery) == [(3, 14)]


def test_msmt_bad_list_line_and_missing_image(tmp_path):
    root = make_msmt(tmp_path / "msmt17")
    (root / "list_query.txt").write_text("0003/0003_000_05_0303afternoon_0001_0.jpg 3\nno-pid-here\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:2: expected 'RELPATH PID'"):
        load_dataset("msmt17", root)
    (root / "list_query.txt").write_text("0003/0003_000_05_0303afternoon_0999_0.jpg 3\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1: image .*0999_0\.jpg does not exist"):
        load_dataset("msmt17", root)
    (root / "list_query.txt").write_text("0003/nocamera.jpg 3\n")
    with pytest.raises(DatasetError, match=r"list_query\.txt:1: cannot read the camera"):
        load_dataset("msmt17", root)


def test_cuhk03_market_names(tmp_path):
    root = make_market(tmp_path / "cuhk03", train=["0001_c1s1_000000_00.jpg", "0001_c2s1_000001_00.jpg"],
                       query=["1001_c1s1_000000_00.jpg"], gallery=["1001_c2s1_000001_00.jpg"])
    splits = load_dataset("cuhk03", root)
    assert pids_cams(splits.train) == [(1, 0), (1, 1)]
    assert pids_cams(splits.query) == [(1001, 0)] and pids_cams(splits.gallery) == [(1001, 1)]


# ---------------------------------------------------------------- CUHK03-NP

def write_pngs(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (4, 8), (i * 40 % 255, 90, 30)).save(folder / name)


def make_cuhk03_variant(folder: Path, train_ids: int, test_ids: int = 2) -> Path:
    """CUHK03-NP names (0001_c1_1.png): train ids 1.., 2 images (one per camera) each; test ids
    from 1001, query on camera 1, gallery on camera 2."""
    write_pngs(folder / "bounding_box_train", [f"{p:04d}_c{c}_{c}.png" for p in range(1, train_ids + 1) for c in (1, 2)])
    write_pngs(folder / "query", [f"{p:04d}_c1_1.png" for p in range(1001, 1001 + test_ids)])
    write_pngs(folder / "bounding_box_test", [f"{p:04d}_c2_1.png" for p in range(1001, 1001 + test_ids)])
    return folder


def make_cuhk03_np(root: Path, variants=("labeled", "detected")) -> Path:
    """labeled/ with 3 train ids, detected/ with 2, so the two can be told apart."""
    for variant in variants:
        make_cuhk03_variant(root / variant, 3 if variant == "labeled" else 2)
    return root


def counts(splits):
    return {s: (v["images"], v["ids"]) for s, v in splits.stats().items()}


TINY = {"labeled": {"train": (6, 3), "query": (2, 2), "gallery": (2, 2)},
        "detected": {"train": (4, 2), "query": (2, 2), "gallery": (2, 2)}}


def test_cuhk03_np_both_variants_from_one_root(tmp_path):
    root = make_cuhk03_np(tmp_path / "cuhk03-np")
    labeled = load_dataset("cuhk03", root)  # labeled is the default, as data.cuhk03
    assert labeled.variant == "labeled" and labeled.root == str(root / "labeled")
    assert counts(labeled) == TINY["labeled"]
    assert pids_cams(labeled.train)[:2] == [(1, 0), (1, 1)] and pids_cams(labeled.query) == [(1001, 0), (1002, 0)]
    detected = load_dataset("cuhk03", root, cuhk03="detected")
    assert detected.variant == "detected" and detected.root == str(root / "detected")
    assert counts(detected) == TINY["detected"]
    assert all(r.path.startswith(str(root / "detected")) for r in detected.train + detected.query + detected.gallery)


def test_cuhk03_np_found_under_its_usual_names(tmp_path, monkeypatch):
    make_cuhk03_np(tmp_path / "data" / "cuhk03-np")
    make_cuhk03_variant(tmp_path / "data" / "cuhk03-market", 5)  # the CUHK03-NP folder is preferred
    assert load_dataset("cuhk03", tmp_path / "data", cuhk03="detected").root == str(tmp_path / "data/cuhk03-np/detected")
    monkeypatch.setenv("OAECMLR_DATA", str(tmp_path / "data"))
    assert load_dataset("cuhk03", None).root == str(tmp_path / "data/cuhk03-np/labeled")
    monkeypatch.delenv("OAECMLR_DATA")
    monkeypatch.chdir(tmp_path / "data")
    make_cuhk03_np(tmp_path / "data" / "data" / "cuhk03" / "CUHK03-NP")  # ./data/cuhk03, one level down
    assert load_dataset("cuhk03", None).root == str(tmp_path / "data/data/cuhk03/CUHK03-NP/labeled")


def test_cuhk03_one_variant_folder_loads_as_it_is(tmp_path):
    root = make_cuhk03_np(tmp_path / "cuhk03-np")
    splits = load_dataset("cuhk03", root / "detected")  # the name says which variant it is
    assert splits.variant == "detected" and counts(splits) == TINY["detected"]
    with pytest.warns(DatasetNote, match=r"detected variant of CUHK03-NP \(by its folder name\); data\.cuhk03=labeled"):
        load_dataset("cuhk03", root / "detected", cuhk03="labeled")
    plain = make_cuhk03_variant(tmp_path / "mine", 2)  # no variant in its name: the requested one
    assert load_dataset("cuhk03", plain).variant == "labeled"
    assert load_dataset("cuhk03", plain, cuhk03="detected").variant == "detected"


def test_cuhk03_missing_or_unknown_variant(tmp_path):
    root = make_cuhk03_np(tmp_path / "np", variants=("labeled",))
    assert load_dataset("cuhk03", root).variant == "labeled"
    with pytest.raises(DatasetError, match=r"np has no detected/ folder in the Market layout \(it holds labeled/\); "
                                           r"set data\.cuhk03=labeled"):
        load_dataset("cuhk03", root, cuhk03="detected")
    with pytest.raises(DatasetError, match=r"data\.cuhk03 must be one of labeled, detected, got 'both'"):
        load_dataset("cuhk03", root, cuhk03="both")


def test_cuhk03_layout_error_names_both_layouts(tmp_path):
    (tmp_path / "odd" / "labeled" / "query").mkdir(parents=True)
    with pytest.raises(DatasetError) as info:
        load_dataset("cuhk03", tmp_path / "odd")
    assert "is not a cuhk03 folder: expected DIR/labeled and DIR/detected (CUHK03-NP)" in str(info.value)
    assert "DIR/bounding_box_train, DIR/query, DIR/bounding_box_test" in str(info.value)


def test_cuhk03_standard_counts_are_the_variants():
    assert standard_counts("cuhk03", "labeled") == {"train": (7368, 767), "query": (1400, 700), "gallery": (5328, 700)}
    assert standard_counts("cuhk03", "detected") == {"train": (7365, 767), "query": (1400, 700),
                                                     "gallery": (5332, 700)}
    assert standard_counts("market") == DATASETS["market1501"].expected
    from oaecmlr.config import settings

    assert datasets.CUHK03_VARIANTS == settings.CUHK03_VARIANTS


def test_cuhk03_counts_compare_with_the_chosen_variant(tmp_path, monkeypatch):
    root = make_cuhk03_np(tmp_path / "cuhk03-np")
    monkeypatch.setitem(datasets.CUHK03_NP, "labeled", TINY["labeled"])
    monkeypatch.setitem(datasets.CUHK03_NP, "detected", TINY["detected"])
    for variant in ("labeled", "detected"):  # each has its variant's standard sizes: silent
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_dataset("cuhk03", root, cuhk03=variant)
    with warnings.catch_warnings(record=True) as caught:  # its name wins over the request, with a note
        warnings.simplefilter("always")
        assert load_dataset("cuhk03", root / "detected", cuhk03="labeled").variant == "detected"
    assert [w.category for w in caught] == [DatasetNote] and "detected variant of CUHK03-NP" in str(caught[0].message)
    plain = make_cuhk03_variant(tmp_path / "mine", 2)  # same sizes as detected, name says nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset("cuhk03", plain, cuhk03="labeled")
    assert splits.variant == "detected"  # by its split sizes
    assert [w.category for w in caught] == [DatasetNote] and "(by its split sizes)" in str(caught[0].message)
    monkeypatch.setitem(datasets.CUHK03_NP, "detected", {"train": (4, 2), "query": (1, 1), "gallery": (2, 2)})
    with pytest.warns(DatasetCountWarning, match=r"cuhk03 \(CUHK03-NP detected\) query: 2 images / 2 ids, but the "
                                                  r"standard release has 1 / 1"):
        load_dataset("cuhk03", root, cuhk03="detected")  # a larger split: not a subset, a warning


def test_cuhk03_subset_is_a_note_not_a_warning(tmp_path):
    root = make_cuhk03_np(tmp_path / "cuhk03-np")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset("cuhk03", root, cuhk03="detected")
    assert [w.category for w in caught] == [DatasetNote]
    message = str(caught[0].message)
    assert "\n" not in message
    assert message.startswith(f"cuhk03: {root / 'detected'} is a subset of CUHK03-NP detected: train 4 images / 2 ids")
    assert "(the full detected set: 7,365 / 767, 1,400 / 700, 5,332 / 700)" in message
    assert "standard release" not in message


# ---------------------------------------------------------------- manifest

MANIFEST_ROWS = ["a/1.jpg,5,0,train,x", "a/2.jpg,5,1,train,x", "b/3.jpg,7,0,query,", "b/4.jpg,7,1,gallery,",
                 "b/5.jpg,-1,1,gallery,junk"]


def make_manifest(root: Path, rows: list[str], header: str = "path,pid,camid,split,note") -> Path:
    touch_images(root, ["a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg", "b/5.jpg"])
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return root


def test_manifest(tmp_path):
    splits = load_dataset("manifest", make_manifest(tmp_path / "mine", MANIFEST_ROWS))
    assert pids_cams(splits.train) == [(5, 0), (5, 1)]
    assert pids_cams(splits.query) == [(7, 0)]
    assert pids_cams(splits.gallery) == [(7, 1)]  # pid -1 dropped
    assert splits.train[0].path == str(tmp_path / "mine" / "a" / "1.jpg")


@pytest.mark.parametrize(("header", "bad_row", "message"), [
    ("path,pid,split", None, r"manifest\.csv:1: header lacks column\(s\) camid"),
    (None, "a/1.jpg,five,0,train,", r"manifest\.csv:7: pid must be an integer"),
    (None, "c/9.jpg,5,zero,train,", r"manifest\.csv:7: camid must be an integer"),
    (None, "c/9.jpg,5,0,val,", r"manifest\.csv:7: split must be one of train, query, gallery"),
    (None, "/etc/passwd,5,0,train,", r"manifest\.csv:7: absolute path"),
    (None, "../outside.jpg,5,0,train,", r"manifest\.csv:7: path '\.\./outside\.jpg' points outside"),
    (None, "a/../../outside.jpg,5,0,train,", r"manifest\.csv:7: path .* points outside"),
    (None, "c/missing.jpg,5,0,train,", r"manifest\.csv:7: file .*missing\.jpg does not exist"),
    (None, "a/./1.jpg,5,0,train,", r"manifest\.csv:7: duplicate path 'a/1\.jpg' \(first on line 2\)"),
    (None, "a/1.jpg,5,0", r"manifest\.csv:7: expected 5 columns"),
])
def test_manifest_errors_name_file_and_line(tmp_path, header, bad_row, message):
    rows = MANIFEST_ROWS + ([bad_row] if bad_row else [])
    root = make_manifest(tmp_path / "mine", rows, **({"header": header} if header else {}))
    with pytest.raises(DatasetError, match=message):
        load_dataset("manifest", root)


def test_manifest_empty_split(tmp_path):
    root = make_manifest(tmp_path / "mine", [r for r in MANIFEST_ROWS if "query" not in r])
    with pytest.raises(DatasetError, match=r"manifest\.csv: no rows with split=query"):
        load_dataset("manifest", root)


# ---------------------------------------------------------------- data root and errors

def test_resolve_data_root_order(tmp_path, monkeypatch):
    explicit = market_root(tmp_path / "explicit")
    env_parent = tmp_path / "env"
    market_root(env_parent)  # env_parent/market1501
    monkeypatch.setenv("OAECMLR_DATA", str(env_parent))
    assert resolve_data_root("market", explicit) == explicit
    assert resolve_data_root("market", None) == env_parent / "market1501"  # env holds <name>
    monkeypatch.setenv("OAECMLR_DATA", str(env_parent / "market1501"))
    assert resolve_data_root("market", None) == env_parent / "market1501"  # env is the dataset itself
    monkeypatch.delenv("OAECMLR_DATA")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root("market", None) == Path("data") / "market1501"
    assert resolve_data_root("synthetic", "ignored") is None


def test_env_var_finds_usual_folder_names(tmp_path, monkeypatch):
    make_market(tmp_path / "cuhk03-market", ["0001_c1s1_000000_00.jpg"], ["1001_c1s1_000000_00.jpg"],
                ["1001_c2s1_000000_00.jpg"])
    make_market(tmp_path / "Market-1501-v15.09.15", ["0002_c1s1_000451_03.jpg"], ["0002_c2s1_000451_03.jpg"],
                ["0002_c3s1_000451_03.jpg"])
    monkeypatch.setenv("OAECMLR_DATA", str(tmp_path))
    assert load_dataset("cuhk03", None).root == str(tmp_path / "cuhk03-market")
    assert load_dataset("market", None).root == str(tmp_path / "Market-1501-v15.09.15")


def test_default_data_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("OAECMLR_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    market_root(tmp_path / "data")
    assert len(load_dataset("market", None).query) == 2


def test_missing_root_shows_expected_layout(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("market", tmp_path / "nowhere")
    message = str(info.value)
    assert "nowhere" in message and "\n" not in message
    assert "expected DIR/bounding_box_train, DIR/query, DIR/bounding_box_test" in message


def test_folder_with_wrong_layout(tmp_path):
    (tmp_path / "odd" / "bounding_box_train").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"odd is not a market1501 folder: expected DIR/bounding_box_train"):
        load_dataset("market", tmp_path / "odd")
    with pytest.raises(DatasetError, match=r"is not a msmt17 folder: expected DIR/train, DIR/test"):
        load_dataset("msmt17", tmp_path / "odd")


def test_empty_split(tmp_path):
    root = make_market(tmp_path / "m", ["0002_c1s1_000451_03.jpg"], [], ["0002_c3s1_000451_03.jpg"])
    with pytest.raises(DatasetError, match=r"query: no usable images, so the query split is empty"):
        load_dataset("market", root)


def test_bad_file_name_is_named(tmp_path):
    root = market_root(tmp_path)
    touch_images(root / "query", ["holiday_photo.jpg"])
    with pytest.raises(DatasetError, match=r"query/holiday_photo\.jpg: file name does not match"):
        load_dataset("market", root)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match=r"unknown dataset 'imagenet'; choose one of market1501 \(market\)"):
        load_dataset("imagenet", None)


def test_count_deviation_warns(tmp_path):
    with pytest.warns(DatasetCountWarning, match=r"market1501 train: 3 images / 2 ids, but the standard release "
                                                  r"has 12,936 / 751"):
        load_dataset("market", market_root(tmp_path))


def test_registry_lists_every_dataset():
    assert set(DATASETS) == {"market1501", "dukemtmcreid", "msmt17", "cuhk03", "manifest", "synthetic"}
    assert get_spec("duke").name == "dukemtmcreid" and get_spec("msmt").name == "msmt17"


def test_synthetic_needs_no_files():
    splits = load_dataset("synthetic", None)
    assert splits.root is None and len(splits.train) > 0 and len(splits.query) > 0


# ---------------------------------------------------------------- a folder of another release is refused

def release_folder(root: Path, name, ids: int = 20, cams: tuple[int, ...] = (1, 2, 3, 4, 5, 6)) -> Path:
    """`ids` train and `ids` test identities, one image per camera each; name(pid, cam, i) gives the file name."""
    train = [name(p, c, i) for i, (p, c) in enumerate((p, c) for p in range(1, ids + 1) for c in cams)]
    test = [(p, c) for p in range(1001, 1001 + ids) for c in cams]
    query = [name(p, c, i) for i, (p, c) in enumerate(test) if c == cams[0]]
    gallery = [name(p, c, i) for i, (p, c) in enumerate(test) if c != cams[0]]
    return make_market(root, train, query, gallery)


def market_name(pid: int, cam: int, i: int) -> str:
    return f"{pid:04d}_c{cam}s1_{i:06d}_01.jpg"


@pytest.mark.parametrize("dataset, release", [("duke", "DukeMTMC-reID"), ("msmt17", "MSMT17"), ("cuhk03", "CUHK03")])
def test_a_market_folder_is_refused_as_another_release(tmp_path, dataset, release):
    root = release_folder(tmp_path / "market", market_name)
    with pytest.raises(DatasetError) as info:
        load_dataset(dataset, root)
    assert str(info.value) == (f"{root} looks like Market-1501 (file names such as 0001_c1s1_000000_01.jpg, 6 "
                               f"cameras), not {release}: use the dataset market for it, or point --data-root at "
                               f"the {release} folder")
    assert len(load_dataset("market", root).train) == 120


def test_cuhk03_in_the_market_layout_is_told_by_its_two_cameras(tmp_path):
    root = release_folder(tmp_path / "converted", market_name, ids=30, cams=(1, 2))
    with pytest.raises(DatasetError, match=r"looks like CUHK03 \(file names such as 0001_c1s1_000000_01\.jpg, 2 "
                                           r"cameras in 120 images: CUHK03 converted to the Market layout\), not "
                                           r"Market-1501: use the dataset cuhk03 for it"):
        load_dataset("market", root)
    assert load_dataset("cuhk03", root).variant == "labeled"


def test_too_few_market_style_images_are_not_judged_by_their_cameras(tmp_path):
    root = release_folder(tmp_path / "tiny", market_name, ids=20, cams=(1, 2))  # 80 images: a small subset may lack cameras
    assert len(load_dataset("market", root).train) == 40
    assert len(load_dataset("duke", root).train) == 40


@pytest.mark.parametrize("dataset, name, release", [
    ("dukemtmcreid", lambda p, c, i: f"{p:04d}_c{c}_f{i:07d}.jpg", "DukeMTMC-reID"),
    ("cuhk03", lambda p, c, i: f"{p:04d}_c{c % 2 + 1}_{i}.png", "CUHK03"),
    ("msmt17", lambda p, c, i: f"{p:04d}_c{c + 9}_{i:04d}.jpg", "MSMT17"),
])
def test_every_release_is_recognised_and_accepted_as_itself(tmp_path, dataset, name, release):
    root = release_folder(tmp_path / dataset, name, ids=3)  # few images: file names and camera numbers decide alone
    with pytest.raises(DatasetError, match=rf"looks like {release} \(.*\), not Market-1501: use the dataset"):
        load_dataset("market", root)
    assert load_dataset(dataset, root).name == dataset
