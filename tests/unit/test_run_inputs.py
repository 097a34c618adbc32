"""What `check_inputs` says before a run folder exists: --pretrained files, training from scratch."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from oaecmlr.config import resolve_config
from oaecmlr.engine.launch import check_inputs
from oaecmlr.errors import CheckpointError, ConfigError
from oaecmlr.models import build_model


def config_of(preset: str, tmp_path, **options):
    options = {"run.gpus": "cpu", **options}
    return resolve_config(preset, config_file=None, options=options,
                          sets=[f"data.cache_dir={tmp_path / 'cache'}"]).config


def market_folder(root):
    for folder, names in (("bounding_box_train", ["0001_c1s1_000001_01.jpg", "0001_c2s1_000002_01.jpg"]),
                          ("query", ["0002_c1s1_000003_01.jpg"]), ("bounding_box_test", ["0002_c2s1_000004_01.jpg"])):
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (16, 32), (100, 50, 25)).save(root / folder / name)
    return root


@pytest.fixture
def weights(tmp_path):
    """A resnet18 (the demo's arch, avg pooling) state dict saved by torch.save."""
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18", pooling="avg").backbone.state_dict(), path)
    return path


@pytest.mark.filterwarnings("ignore::oaecmlr.data.records.DatasetCountWarning")
def test_real_data_without_pretrained_weights_warns_that_it_trains_from_scratch(tmp_path, weights):
    data = market_folder(tmp_path / "market")
    with pytest.warns(UserWarning, match=r"^resnet50 trains from scratch: no --pretrained weights were given") as caught:
        check_inputs(config_of("market", tmp_path, **{"data.root": str(data)}))
    assert [w for w in caught if "from scratch" in str(w.message)] and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_inputs(config_of("demo", tmp_path))  # synthetic data: no word of it
        check_inputs(config_of("demo", tmp_path, **{"model.pretrained": str(weights)}))


def test_a_good_pretrained_file_passes_and_leaves_the_random_state(tmp_path, weights):
    state = torch.random.get_rng_state()
    check_inputs(config_of("demo", tmp_path, **{"model.pretrained": str(weights)}))
    assert torch.equal(state, torch.random.get_rng_state())  # the run's seeded start is not moved


def bad_file(tmp_path, kind: str, weights):
    path = tmp_path / f"{kind}.pth"
    if kind == "picture":
        path = tmp_path / "some.jpg"
        Image.new("RGB", (8, 8)).save(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "cut":
        path.write_bytes(weights.read_bytes()[:4096])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "other arch":
        torch.save(build_model("mobilenet_v2").backbone.state_dict(), path)
    return path


@pytest.mark.parametrize("kind, error, words", [
    ("picture", CheckpointError, "cannot be loaded: it is not a file written by torch.save"),
    ("missing", ConfigError, "--pretrained file not found"),
    ("folder", ConfigError, "is a folder; name the weights file (.pth) itself"),
    ("cut", CheckpointError, "cannot be loaded"),
    ("empty", CheckpointError, "cannot be loaded: the file is empty or cut short"),
    ("other arch", CheckpointError, "is it a mobilenet_v2 checkpoint? (pass --arch mobilenet_v2)"),
])
def test_a_bad_pretrained_file_is_refused_in_one_line(tmp_path, weights, kind, error, words):
    path = bad_file(tmp_path, kind, weights)
    with pytest.raises(error) as info:
        check_inputs(config_of("demo", tmp_path, **{"model.pretrained": str(path)}))
    assert words in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)
