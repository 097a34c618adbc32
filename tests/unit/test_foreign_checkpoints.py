"""Checkpoints from elsewhere: Cluster Contrast's model_best.pth.tar through --pretrained, --init and
`oaecmlr eval FILE`; what weights_only loading allows (numpy float64, nothing else) and refuses, in
one-line messages; advice that fits the command; `oaecmlr export` of the features eval scores."""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest
import torch
from ccfixtures import Payload, save_cc, trained_looking
from typer.testing import CliRunner

from oaecmlr.cli.app import app
from oaecmlr.cli.evaluate import FileOptions, evaluate_run, is_checkpoint_file
from oaecmlr.engine.checkpoint import (
    FORMAT,
    check_compatible,
    load_checkpoint,
    load_init_weights,
    load_model_weights,
)
from oaecmlr.errors import CheckpointError
from oaecmlr.models import build_model
from oaecmlr.models.weights import NUMPY_SCALAR_NAMES, read_weights_file

runner = CliRunner()


def assert_same_weights(a: dict, b: dict) -> None:
    a = {k: v for k, v in a.items() if not k.startswith("classifier.")}
    b = {k: v for k, v in b.items() if not k.startswith("classifier.")}
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_one_clean_line(message: str) -> None:
    assert "\n" not in message and "\x1b" not in message and "\t" not in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "  " not in message


# ---------- what weights_only loading allows ----------
def _allowed(name: str):
    import importlib

    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_a_numpy_float64_needs_exactly_the_allowed_globals(tmp_path):
    """Let torch name, one at a time, what it refuses in a numpy float64; those are what we allow."""
    path = tmp_path / "scalar.pt"
    torch.save({"best_mAP": np.float64(0.5)}, path)
    reported, allowed = [], []
    for _ in range(6):
        try:
            with torch.serialization.safe_globals(allowed):
                value = torch.load(path, weights_only=True)["best_mAP"]
            break
        except Exception as exc:  # noqa: BLE001 - torch's UnpicklingError
            text = str(exc)
            found = re.findall(r"GLOBAL ([\w.]+) was not", text) + re.findall(r"but got <class '([\w.]+)'>", text)
            assert found, text
            reported.append(found[0])
            allowed.append(_allowed(found[0]))
    assert value == 0.5
    # numpy 1.x wrote the same reconstruction function as numpy.core.multiarray.scalar
    assert set(reported) | {"numpy.core.multiarray.scalar"} == set(NUMPY_SCALAR_NAMES)
    loaded = read_weights_file(path, "checkpoint")["best_mAP"]
    assert isinstance(loaded, np.float64) and loaded == 0.5


def test_a_file_from_numpy_1_loads(tmp_path):
    buffer = io.BytesIO()
    torch.save({"state_dict": {"a": torch.ones(2)}, "best_mAP": np.float64(0.25)}, buffer)
    source, out = zipfile.ZipFile(io.BytesIO(buffer.getvalue())), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
                assert b"numpy.core.multiarray\nscalar" in data
            target.writestr(info, data)
    path = tmp_path / "old.pth.tar"
    path.write_bytes(out.getvalue())
    assert load_checkpoint(path)["best_mAP"] == 0.25


def test_other_numpy_scalars_stay_refused(tmp_path):
    path = tmp_path / "f32.pt"
    torch.save({"x": np.float32(1.0)}, path)
    with pytest.raises(CheckpointError, match=r"Python objects that are not loaded \(numpy\.dtypes\.Float32DType\)"):
        load_checkpoint(path)


class Thing:
    """An ordinary class: torch's refusal of it carries terminal escape codes."""


def test_a_malicious_cluster_contrast_file_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    model = trained_looking()
    path = save_cc(model.state_dict(), tmp_path / "model_best.pth.tar", extra=Payload(marker))
    for load in (lambda: load_checkpoint(path), lambda: load_model_weights(path, "resnet18"),
                 lambda: build_model("resnet18", pretrained=path)):
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert_one_clean_line(message)
        assert "holds Python objects that are not loaded (posix.system)" in message
    assert not marker.exists()


def test_refusals_name_the_objects_in_one_clean_line(tmp_path):
    path = tmp_path / "thing.pt"
    torch.save({"model": Thing()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert_one_clean_line(message)
    assert re.search(r"holds Python objects that are not loaded \([\w.]*Thing\); only tensors", message), message
    assert message.endswith("(e.g. torch.save(model.state_dict(), path))")


def test_broken_files_say_why_in_whole_sentences(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(1000)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:500])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    expected = {cut: r"PytorchStreamReader failed reading zip archive: failed finding central directory\.$",
                empty: "the file is empty or cut short", garbage: "not a file written by torch.save"}
    for path, pattern in expected.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert_one_clean_line(str(info.value))
        assert re.search(pattern, str(info.value)), str(info.value)
        assert str(info.value).startswith(f"checkpoint {path} cannot be loaded: ")


# ---------- Cluster Contrast weights: --pretrained, --init, eval ----------
@pytest.mark.parametrize("arch, pooling", [("resnet18", "gem"), ("resnet18", "avg"), ("resnet50_ibn_a", "gem")])
def test_cluster_contrast_file_loads_as_pretrained(tmp_path, arch, pooling):
    source = trained_looking(arch, pooling)
    path = save_cc(source.state_dict(), tmp_path / "model_best.pth.tar")
    if arch == "resnet50_ibn_a":  # the IBN layers keep their names inside base.4-6 (XingangPan/IBN-Net's)
        keys = read_weights_file(path, "checkpoint")["state_dict"]
        assert "module.base.4.0.bn1.IN.weight" in keys and "module.base.7.0.bn1.weight" in keys
    loaded = build_model(arch, pretrained=path, pooling=pooling)
    assert_same_weights(loaded.state_dict(), source.state_dict())


def test_cluster_contrast_file_loads_for_init(tmp_path):
    source = trained_looking()
    path = save_cc(source.state_dict(), tmp_path / "model_best.pth.tar")
    assert_same_weights(load_model_weights(path, "resnet18"), source.state_dict())
    target = build_model("resnet18", num_classes=7)  # a classifier may be left out
    load_init_weights(target, str(path), "resnet18")
    assert_same_weights(target.state_dict(), source.state_dict())


def test_cluster_contrast_file_of_another_arch_or_pooling_says_which(tmp_path):
    path = save_cc(trained_looking().state_dict(), tmp_path / "model_best.pth.tar")
    with pytest.raises(CheckpointError, match=r"Cluster Contrast checkpoint of a resnet18 model, not resnet50 .*; "
                                              r"pass --arch resnet18$"):
        load_model_weights(path, "resnet50")
    with pytest.raises(CheckpointError, match=r"is it a resnet18 checkpoint\? \(pass --arch resnet18\)"):
        build_model("mobilenet_v2", pretrained=path)
    avg = save_cc(trained_looking(pooling="avg").state_dict(), tmp_path / "avg.pth.tar")
    with pytest.raises(CheckpointError, match=r"trained with avg pooling but the model uses gem; add --set "
                                              r"model\.pooling=avg"):
        load_init_weights(build_model("resnet18", pooling="gem"), str(avg), "resnet18")
    with pytest.raises(CheckpointError, match=r"trained with avg pooling .* --set model\.pooling=avg"):
        build_model("resnet18", pretrained=avg, pooling="gem")
    with pytest.raises(CheckpointError, match=r"trained with avg pooling but the model uses gem; pass --pooling avg"):
        evaluate_run(str(avg), None, options=FileOptions(dataset="synthetic", arch="resnet18", pooling="gem"))


def test_other_files_are_neither_kind(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.save(build_model("resnet18").backbone.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"neither an oaecmlr checkpoint nor a Cluster Contrast one .*; "
                                              r"ImageNet backbone weights go to --pretrained"):
        load_model_weights(path, "resnet18")


# ---------- advice that fits the command ----------
def test_architecture_advice_fits_the_command():
    state = {"format": FORMAT, "arch": "resnet18", "dataset": "synthetic", "model": {}}
    advice = {"resume": r"the run's config\.toml says mobilenet_v2; set arch = \"resnet18\" in its \[model\] section",
              "run": r"the run's config\.toml says mobilenet_v2; set arch = \"resnet18\"",
              "init": r"this run uses mobilenet_v2; pass --arch resnet18 to start from it",
              "file": r"--arch is mobilenet_v2; pass --arch resnet18, or leave --arch out"}
    for hint, pattern in advice.items():
        with pytest.raises(CheckpointError) as info:
            check_compatible(state, "x/last.pt", "mobilenet_v2", None, None, hint=hint)
        assert re.search(pattern, str(info.value)), (hint, str(info.value))
        assert ("--arch" in str(info.value)) == (hint in ("init", "file")), hint
    with pytest.raises(CheckpointError, match="config.toml"):  # resume's own call passes no hint
        check_compatible(state, "x/last.pt", "mobilenet_v2", "synthetic", None)


def test_a_state_dict_mismatch_is_named_briefly(tmp_path):
    sd = dict(trained_looking().state_dict())
    for key in ("neck.weight", "neck.bias", "backbone.layer4.1.conv2.weight", "backbone.layer4.1.bn2.weight"):
        del sd[key]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save({"format": FORMAT, "arch": "resnet18", "dataset": "synthetic", "model": sd}, path)
    with pytest.raises(CheckpointError) as info:
        load_init_weights(build_model("resnet18"), str(path), "resnet18")
    message = str(info.value)
    assert_one_clean_line(message)
    assert "does not fit a resnet18 model: 4 missing (" in message and "+1 more" in message
    assert "1 unexpected (extra.weight)" in message


def test_run_or_file():
    assert is_checkpoint_file(__file__) and not is_checkpoint_file("some-run")
    with pytest.raises(CheckpointError, match="checkpoint file not found: nowhere/model_best.pth.tar"):
        is_checkpoint_file("nowhere/model_best.pth.tar")


def test_export_help_has_examples():
    result = runner.invoke(app, ["export", "--help"])
    assert result.exit_code == 0 and "Example" in result.stdout and "query_features.npy" in result.stdout
    result = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "an existing file is a checkpoint file" in result.stdout
