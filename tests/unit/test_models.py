"""Tests for oaecmlr.models: shapes, torchvision key compatibility, weight loading, head behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from oaecmlr.models import ARCHS, GeM, ReIDModel, TrainOutput, build_model
from oaecmlr.models.resnet import resnet18

SHARED = Path(__file__).resolve().parents[3] / "shared"
MOBILENET_WEIGHTS = SHARED / "weights/mobilenet_v2_imagenet.pth"
IMAGES = SHARED / "data/cuhk03-market/bounding_box_train"
needs_weights = pytest.mark.skipif(not MOBILENET_WEIGHTS.is_file(), reason=f"{MOBILENET_WEIGHTS} absent")

FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048, "resnet50_ibn_a": 2048, "mobilenet_v2": 1280}
# torchvision's published parameter counts minus the ImageNet classifier (fc / classifier.1)
BACKBONE_PARAMS = {"resnet18": 11_689_512 - 513_000, "resnet50": 25_557_032 - 2_049_000,
                   "resnet50_ibn_a": 25_557_032 - 2_049_000, "mobilenet_v2": 3_504_872 - 1_281_000}


def _x(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 64, 32, generator=torch.Generator().manual_seed(0))


# ---------- torchvision key names, written out from the block structure ----------
def _bn(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def torchvision_resnet_keys(layers, bottleneck: bool, ibn=(False, False, False, False)) -> list[str]:
    keys = ["conv1.weight", *_bn("bn1")]
    for li, (n, use_ibn) in enumerate(zip(layers, ibn, strict=True), start=1):
        for b in range(n):
            p = f"layer{li}.{b}"
            for c in range(1, 4 if bottleneck else 3):
                keys.append(f"{p}.conv{c}.weight")
                if c == 1 and use_ibn:  # IBN-Net-a: XingangPan/IBN-Net names
                    keys += [f"{p}.bn1.IN.weight", f"{p}.bn1.IN.bias", *_bn(f"{p}.bn1.BN")]
                else:
                    keys += _bn(f"{p}.bn{c}")
            if b == 0 and (li > 1 or bottleneck):
                keys += [f"{p}.downsample.0.weight", *_bn(f"{p}.downsample.1")]
    return keys


@pytest.mark.parametrize("arch, layers, bottleneck, ibn", [
    ("resnet18", (2, 2, 2, 2), False, (False,) * 4),
    ("resnet50", (3, 4, 6, 3), True, (False,) * 4),
    ("resnet50_ibn_a", (3, 4, 6, 3), True, (True, True, True, False)),
])
def test_resnet_keys_match_torchvision(arch, layers, bottleneck, ibn):
    for last_stride in (1, 2):
        keys = list(build_model(arch, last_stride=last_stride).backbone.state_dict())
        assert keys == torchvision_resnet_keys(layers, bottleneck, ibn)


def test_ibn_split_widths():
    sd = build_model("resnet50_ibn_a").backbone.state_dict()
    assert sd["layer1.0.bn1.IN.weight"].shape == (32,) and sd["layer1.0.bn1.BN.weight"].shape == (32,)
    assert sd["layer3.5.bn1.IN.weight"].shape == (128,) and "layer4.0.bn1.weight" in sd


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_counts_match_torchvision(arch):
    backbone = build_model(arch).backbone
    assert sum(p.numel() for p in backbone.parameters()) == BACKBONE_PARAMS[arch]


# ---------- shapes, normalisation, strides ----------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["gem", "avg"])
def test_output_shape_and_unit_norm(arch, pooling):
    model = build_model(arch, pooling=pooling)
    assert model.feature_dim == FEATURE_DIMS[arch]
    for train in (True, False):
        model.train(train)
        with torch.no_grad():
            f = model(_x())
        assert f.shape == (2, FEATURE_DIMS[arch]) and f.dtype == torch.float32
        torch.testing.assert_close(f.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("arch", ARCHS)
def test_last_stride_one_doubles_the_final_map(arch):
    with torch.no_grad():
        s1 = build_model(arch, last_stride=1).backbone.eval()(_x()).shape
        s2 = build_model(arch, last_stride=2).backbone.eval()(_x()).shape
    assert s1 == (2, FEATURE_DIMS[arch], 4, 2) and s2 == (2, FEATURE_DIMS[arch], 2, 1)


def test_same_seed_same_initialisation():
    sds = []
    for _ in range(2):
        torch.manual_seed(123)
        sds.append(build_model("resnet18").state_dict())
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
    conv = sds[0]["backbone.layer1.0.conv1.weight"]
    assert 0.05 < conv.std() < 0.15  # kaiming normal, fan_out = 64*3*3: std = sqrt(2/576) = 0.059


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_and_bf16_autocast(arch):
    model = build_model(arch, num_classes=5).eval()
    x = _x()
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model_cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-4, rtol=1e-4)
    model_cl.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model_cl.forward_train(x.to(memory_format=torch.channels_last))
    assert out.features.dtype == torch.float32 and out.features_before_bn.dtype == torch.float32
    torch.testing.assert_close(out.features.norm(dim=1), torch.ones(2))
    (out.features.sum() + out.logits.float().sum() + out.features_before_bn.sum()).backward()
    grads = [p.grad for p in model_cl.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


# ---------- head ----------
def test_gem_with_p_one_is_average_pooling():
    x = torch.rand(3, 7, 5, 4) + 0.1
    gem = GeM(p=1.0)
    torch.testing.assert_close(gem(x), F.adaptive_avg_pool2d(x, 1).flatten(1))
    assert gem.p.requires_grad and GeM().p.item() == 3.0
    torch.testing.assert_close(GeM(p=3.0)(x), x.pow(3).mean(dim=(2, 3)).pow(1 / 3))


def test_bn_neck_bias_is_frozen_at_zero():
    model = build_model("resnet18")
    assert not model.neck.bias.requires_grad
    assert torch.equal(model.neck.bias, torch.zeros(512)) and torch.equal(model.neck.weight, torch.ones(512))
    model(_x()).sum().backward()
    assert model.neck.bias.grad is None and model.neck.weight.grad is not None


def test_supervised_head_returns_logits():
    model = build_model("resnet18", num_classes=7).train()
    out = model.forward_train(_x(4))
    assert isinstance(out, TrainOutput)
    assert out.logits.shape == (4, 7) and out.features_before_bn.shape == (4, 512)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_train(_x(4)).features, model(_x(4)))
    assert build_model("resnet18").train().forward_train(_x()).logits is None


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="pooling"):
        build_model("resnet18", pooling="max")
    with pytest.raises(ValueError, match="last_stride"):
        build_model("resnet18", last_stride=3)
    with pytest.raises(ValueError, match="pooling"):
        ReIDModel(resnet18(), 512, "sum")


# ---------- loading pretrained weights ----------
def _torchvision_style_file(tmp_path: Path, arch: str = "resnet18") -> tuple[Path, dict]:
    """A backbone state dict as torchvision would save it: with fc keys."""
    torch.manual_seed(1)
    sd = dict(build_model(arch).backbone.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.randn(1000, FEATURE_DIMS[arch]), torch.randn(1000)
    path = tmp_path / f"{arch}.pth"
    torch.save(sd, path)
    return path, sd


def test_torchvision_format_loads_and_values_match(tmp_path):
    path, sd = _torchvision_style_file(tmp_path)
    torch.manual_seed(2)
    model = build_model("resnet18", pretrained=path)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_wrapped_prefixed_and_old_checkpoints_load(tmp_path):
    _, sd = _torchvision_style_file(tmp_path)
    old = {f"module.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    for i, wrapped in enumerate([{"state_dict": old, "epoch": 3}, {"model": old}]):
        path = tmp_path / f"wrapped{i}.pth"
        torch.save(wrapped, path)
        model = build_model("resnet18", pretrained=path)
        assert torch.equal(model.backbone.layer4[1].bn2.running_var, sd["layer4.1.bn2.running_var"])


def test_reid_model_checkpoint_loads_whole_model_without_classifier(tmp_path):
    src = build_model("resnet18", num_classes=9)
    with torch.no_grad():
        src.pool.p.fill_(4.5)
        src.neck.running_mean.normal_()
    path = tmp_path / "stage1.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = build_model("resnet18", pretrained=path, num_classes=3)
    assert dst.pool.p.item() == 4.5 and torch.equal(dst.neck.running_mean, src.neck.running_mean)
    assert dst.classifier.weight.shape == (3, 512)


def test_mismatched_checkpoint_names_the_problem(tmp_path):
    path, _ = _torchvision_style_file(tmp_path, "resnet50")
    with pytest.raises(ValueError, match=r"resnet50\.pth has 0 of 260 expected .* mobilenet_v2; is it a resnet50"):
        build_model("mobilenet_v2", pretrained=path)
    with pytest.raises(ValueError, match=r"for resnet50_ibn_a; is it a resnet50 checkpoint"):
        build_model("resnet50_ibn_a", pretrained=path)
    bad = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "layer2.0.conv1.weight"}
    bad["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"1 missing \(layer2\.0\.conv1\.weight\), 1 of wrong shape \(layer1\.0\.conv1"
                                         r"\.weight: file \(64, 64, 3, 3\), model \(64, 64, 1, 1\)\)$"):
        build_model("resnet50", pretrained=path)


def _side_effect(path: str) -> None:
    Path(path).write_text("ran")


class _Malicious:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (_side_effect, (str(self.marker),))


def test_pickled_objects_and_bad_files_are_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Malicious(marker)}, path)
    with pytest.raises(ValueError, match=r"evil\.pth cannot be loaded: it holds Python objects that are not loaded "
                                         r"\([\w.]*_side_effect\)"):
        build_model("resnet18", pretrained=path)
    assert not marker.exists()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth cannot be loaded: it is not a file written by torch.save"):
        build_model("resnet18", pretrained=garbage)
    with pytest.raises(ValueError, match="no such file"):
        build_model("resnet18", pretrained=tmp_path / "absent.pth")
    torch.save({"epoch": 3}, path)
    with pytest.raises(ValueError, match="not a state dict"):
        build_model("resnet18", pretrained=path)


@needs_weights
def test_real_mobilenet_weights_load():
    sd = torch.load(MOBILENET_WEIGHTS, map_location="cpu", weights_only=True)
    model = build_model("mobilenet_v2", pretrained=MOBILENET_WEIGHTS)
    ours = model.backbone.state_dict()
    assert list(ours) == list(sd)  # same keys, same order; the file has no classifier
    for k, v in sd.items():
        assert torch.equal(ours[k], v), k
    with pytest.raises(ValueError, match=r"0 of 265 expected backbone keys for resnet50; is it a mobilenet_v2"):
        build_model("resnet50", pretrained=MOBILENET_WEIGHTS)


@needs_weights
@pytest.mark.skipif(not IMAGES.is_dir(), reason=f"{IMAGES} absent")
def test_real_weights_separate_real_images():
    image = pytest.importorskip("PIL.Image")
    files = sorted(IMAGES.glob("*.jpg"))
    pair = [files[0], next(f for f in files if f.name[:4] != files[0].name[:4])]  # two identities
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    batch = []
    for f in pair:
        img = image.open(f).convert("RGB").resize((64, 128))
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(128, 64, 3).float() / 255
        batch.append(((t - mean) / std).permute(2, 0, 1))
    model = build_model("mobilenet_v2", pretrained=MOBILENET_WEIGHTS).eval()
    with torch.no_grad():
        f = model(torch.stack(batch))
    assert torch.isfinite(f).all()
    assert (f[0] - f[1]).norm() > 0.05
