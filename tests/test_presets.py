"""Presets and the `+cam` suffix: the camera-aware pipeline on any preset, still overridable."""

from __future__ import annotations

import pytest

from oaecmlr.config import resolve_config
from oaecmlr.config.presets import CAMERA_AWARE
from oaecmlr.errors import ConfigError

PAPER = ["market", "duke", "msmt17", "duke2market", "market2duke", "market2msmt", "duke2msmt"]


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_keep_the_camera_aware_pieces_off(preset):
    config = resolve_config(preset).config
    assert not config.cluster.camera_jaccard and config.cluster.camera_norm == "none"
    assert not config.memory.camera_proxies


# the pieces a preset already has on, from its held-out numbers (README, Camera-aware training)
ALREADY_ON = {"demo": ["cluster.camera_norm", "memory.camera_proxies"], "cuhk03": ["cluster.camera_norm"]}


@pytest.mark.parametrize("preset", ["market", "duke", "msmt17", "cuhk03", "demo"])
def test_plus_cam_turns_all_three_on_and_leaves_the_rest_of_the_preset(preset):
    plain, cam = resolve_config(preset), resolve_config(f"{preset}+cam")
    assert cam.preset == f"{preset}+cam"
    for dotted, value in CAMERA_AWARE.items():
        assert cam.config.get(dotted) == value
    assert cam.config.oae.rho == plain.config.oae.rho and cam.config.cmlr.lam == plain.config.cmlr.lam
    changed = [k for k in CAMERA_AWARE if plain.config.get(k) != cam.config.get(k)]
    assert changed == [k for k in CAMERA_AWARE if k not in ALREADY_ON.get(preset, [])]
    assert (cam.config.cluster.eps, cam.config.data.dataset) == (plain.config.cluster.eps, plain.config.data.dataset)


def test_plus_cam_is_the_documented_set_line():
    line = ["cluster.camera_jaccard=true", "cluster.camera_norm=mean", "memory.camera_proxies=true"]
    assert resolve_config("market", sets=line).config == resolve_config("market+cam").config


def test_set_still_wins_over_plus_cam():
    config = resolve_config("market+cam", sets=["cluster.camera_norm=none"]).config
    assert config.cluster.camera_norm == "none" and config.cluster.camera_jaccard


def test_plus_cam_on_a_dataset_and_a_typo():
    assert resolve_config("manifest+cam").config.memory.camera_proxies
    with pytest.raises(ConfigError, match="did you mean market"):
        resolve_config("markt+cam")
