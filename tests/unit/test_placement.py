"""Where the image cache lives: GPU memory while it fits beside training, else pinned host memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oaecmlr.engine.placement import GiB, place_images, plan_placement
from oaecmlr.engine.rundata import RunData, Split
from oaecmlr.errors import ConfigError

MSMT = {"train": 32621 * 98304, "query": 11659 * 98304, "gallery": 82161 * 98304}  # 256x128x3 uint8


def test_msmt17_sized_caches_fit_an_80_gb_gpu_beside_training():
    assert plan_placement(MSMT, 79 * GiB, 24 * GiB) == {"train": "device", "query": "device", "gallery": "device"}


def test_what_does_not_fit_goes_to_the_host_training_split_first():
    # 10 GiB free beyond the reserve: train (3.0 GiB) and query (1.1 GiB) fit, the gallery (7.5 GiB) does not
    assert plan_placement(MSMT, 34 * GiB, 24 * GiB) == {"train": "device", "query": "device", "gallery": "host"}
    # nothing fits: all on the host
    assert set(plan_placement(MSMT, 20 * GiB, 24 * GiB).values()) == {"host"}
    # a later, smaller split may still fit after a larger one did not
    plan = plan_placement({"train": 2 * GiB, "query": 9 * GiB, "gallery": 1 * GiB}, 28 * GiB, 24 * GiB)
    assert plan == {"train": "device", "query": "host", "gallery": "device"}


def test_forced_modes():
    assert set(plan_placement(MSMT, 200 * GiB, 0, "host").values()) == {"host"}
    assert set(plan_placement(MSMT, 79 * GiB, 24 * GiB, "device").values()) == {"device"}
    with pytest.raises(ConfigError, match="data.image_cache=device needs 11.6 GiB"):
        plan_placement(MSMT, 30 * GiB, 24 * GiB, "device")
    with pytest.raises(ConfigError, match="data.image_cache must be one of"):
        plan_placement(MSMT, 30 * GiB, 24 * GiB, "gpu")


def _data(n=8):
    images = torch.randint(0, 256, (n, 3, 8, 4), dtype=torch.uint8)
    split = Split(images, np.arange(n), np.zeros(n, dtype=np.int64))
    return RunData("t", split, split, split, {})


def test_on_the_cpu_nothing_moves():
    data = _data()
    before = data.train.images
    placed = place_images(data, torch.device("cpu"))
    assert placed.train.images is before
    assert placed.stats["image_cache"] == {"train": "host", "query": "host", "gallery": "host"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode, where", [("auto", "cuda"), ("host", "pinned host")])
def test_cuda_placement_and_a_training_batch_from_either_cache(mode, where):
    from enginefixtures import tiny_config

    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    config = tiny_config()
    device = torch.device("cuda")  # index-less, as `--device cuda` gives it: resolved to cuda:N by placement and loop
    data = place_images(load_run_data(config.data), device, mode, reserve_gb=0.5)
    assert set(data.stats["image_cache"].values()) == {where}
    assert (data.train.images.device.type == "cuda") == (where == "cuda")
    assert where == "cuda" or data.train.images.is_pinned()
    loop = build_loop(config, RunDir(__import__("pathlib").Path("/nonexistent")), data, device, None)
    assert (data.train.images.device == loop.device) == (where == "cuda")  # a GPU cache takes the device path
    batches, host, _ = loop.epoch_batches(loop.epoch_labels(1))
    torch.manual_seed(0)
    x = loop.batch_images(batches[0], host[0])
    assert x.device.type == "cuda" and x.shape[0] == batches.shape[1]
