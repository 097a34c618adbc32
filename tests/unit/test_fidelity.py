"""The paper presets train as the published Cluster Contrast runs did (run_code.sh and
examples/cluster_contrast_train_usl.py of alibaba/cluster-contrast-reid), and a run written before a
setting existed keeps the behaviour it was started with."""

from __future__ import annotations

import pytest
import torch

from oaecmlr.config import config_from_dict, load_config
from oaecmlr.errors import ConfigError

PAPER = ("market", "duke", "msmt17", "duke2market", "market2duke", "market2msmt", "duke2msmt")


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_hold_the_reference_values(preset):
    config = load_config(preset)
    # run_code.sh: 4 GPUs under DataParallel, -b 256 --num-instances 16: BatchNorm over 4 x 64 images
    assert (config.data.num_ids, config.data.num_instances, config.train.bn_group) == (16, 16, 64)
    assert config.train.bn_running == "first"  # DataParallel keeps replica 0's running statistics
    assert config.data.sampler == "reference"  # RandomMultipleGallerySampler
    assert config.data.resize == "bicubic"  # T.Resize((h, w), interpolation=3)
    assert config.train.amp is False and config.train.amp_extract is False  # no autocast anywhere in the reference
    # Adam(lr 3.5e-4, weight_decay 5e-4), StepLR(step_size 20, gamma 0.1), 50 epochs, GeM, last stride 1
    assert (config.optim.lr, config.optim.weight_decay, config.optim.step_size, config.optim.gamma) == (3.5e-4, 5e-4, 20, 0.1)
    assert (config.run.epochs, config.model.pooling, config.model.last_stride) == (50, "gem", 1)
    assert config.cluster.eps == 0.6  # --eps 0.6 for market1501, dukemtmcreid and msmt17 alike
    assert (config.cluster.k1, config.cluster.k2, config.cluster.min_samples) == (30, 6, 4)
    assert config.run.iterations == (400 if "msmt" in preset else 200)
    assert (config.memory.momentum, config.memory.temperature, config.memory.mode) == (0.1, 0.05, "mean")


def test_bn_group_that_cannot_be_formed_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="does not divide the global batch of 256"):
        load_config("market", sets=["train.bn_group=48"])
    with pytest.raises(ConfigError, match="must divide one another"):
        load_config("market", sets=["train.bn_group=64", "data.num_ids=12", "run.gpus=0,1"])  # 96 images per GPU
    assert load_config("market", sets=["run.gpus=0,1,2,3,4,5,6,7"]).train.bn_group == 64  # groups across 2 GPUs
    for bad in ("data.sampler=random", "data.resize=nearest", "train.bn_running=last"):
        with pytest.raises(ConfigError, match="must be one of"):
            load_config("market", sets=[bad])


def test_a_run_config_from_before_these_settings_keeps_its_behaviour():
    old = {"run": {"seed": 3}, "train": {"amp": True, "channels_last": True, "sync_bn": True}, "data": {}}
    config = config_from_dict(old)
    assert config.train.bn_group == 0  # it normalised over the whole global batch
    assert config.data.sampler == "distinct" and config.data.resize == "bilinear"
    assert config.train.amp_extract is True  # extraction followed train.amp
    assert config_from_dict({"train": {"amp": False}}).train.amp_extract is False
    new = load_config("market")
    assert config_from_dict(new.to_dict()).to_dict() == new.to_dict()  # today's files read back unchanged


@pytest.mark.parametrize("asked", [True, False])
@pytest.mark.parametrize("fast", [True, False])
def test_extraction_uses_bf16_only_where_asked_and_fast(asked, fast, monkeypatch):
    """One precision policy for the loop's and `oaecmlr eval`'s features (`engine/inference.py`)."""
    from oaecmlr.engine import inference

    monkeypatch.setattr(inference, "fast_bf16", lambda device: fast)
    config = config_from_dict({"train": {"amp_extract": asked, "channels_last": True}, "data": {"eval_batch": 64}})
    extraction = inference.Extraction.of(config, torch.device("cpu"))
    assert extraction.amp is (asked and fast)
    assert extraction.channels_last and extraction.batch_size == 64
    assert extraction.out_size == (config.data.height, config.data.width)
