"""Presets and their suffixes: `+cam` (the camera-aware pipeline) and `+cpu` (the 2-core budget) on any preset; package data."""

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


def test_presets_are_package_data():
    """A wheel carries the presets: they live inside the package and are read through
    importlib.resources, not from a folder next to the source tree."""
    from importlib import resources
    from pathlib import Path

    from oaecmlr.config.files import read_toml
    from oaecmlr.config.presets import available_presets

    files = sorted(p.name for p in resources.files("oaecmlr.presets").iterdir() if p.name.endswith(".toml"))
    assert [f.removesuffix(".toml") for f in files] == available_presets()
    assert {"demo", "cuhk03", "market", "msmt17"} <= set(available_presets())
    project = read_toml(Path(__file__).resolve().parents[2] / "pyproject.toml")
    assert "oaecmlr.presets" in project["tool"]["setuptools"]["packages"]
    assert "*.toml" in project["tool"]["setuptools"]["package-data"]["oaecmlr.presets"]


@pytest.mark.parametrize("target", ["market+cpu", "market+cam+cpu", "market+cpu+cam", "msmt17+cpu", "duke+cpu"])
def test_cpu_suffix_keeps_dataset_and_method_and_takes_the_budget(target):
    from oaecmlr.config.presets import CPU_BUDGET

    base = resolve_config(target.split("+")[0]).config
    resolved = resolve_config(target)
    config = resolved.config
    assert config.data.dataset == base.data.dataset
    for section in ("oae", "cmlr", "memory"):  # the method, except what +cam adds
        if "+cam" not in target:
            assert getattr(config, section) == getattr(base, section)
    for dotted, value in CPU_BUDGET.items():
        assert config.get(dotted) == value
    assert config.model.arch == "mobilenet_v2" and (config.data.height, config.data.width) == (128, 64)
    assert (config.data.num_ids, config.data.num_instances) == (16, 4)
    assert resolved.preset.startswith(target.split("+")[0]) and "+cpu" in resolved.preset
    assert ("+cam" in target) == config.cluster.camera_jaccard


def test_cpu_suffix_pretrain_has_the_same_budget():
    """`oaecmlr pretrain market+cpu`: the supervised bound at the same epochs and iterations."""
    usl = resolve_config("market+cpu").config
    supervised = resolve_config("market+cpu", supervised=True).config
    assert supervised.run.kind == "supervised"
    assert (supervised.run.epochs, supervised.run.iterations) == (usl.run.epochs, usl.run.iterations)
    assert supervised.model.arch == usl.model.arch and supervised.data.num_instances == 4


def test_unknown_or_repeated_suffix_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"unknown suffix '\+gpu'.*\+cam, \+cpu"):
        resolve_config("market+gpu")
    with pytest.raises(ConfigError, match="twice"):
        resolve_config("market+cpu+cpu")


@pytest.mark.parametrize("preset", PAPER)
def test_paper_presets_run_the_oae_reading_chosen_on_held_out_identities(preset):
    """docs/results.md (Market-1501 subset): the support rule with 2 votes had the best held-out mean;
    CMLR keeps its self reading. cuhk03 and demo were tuned earlier with the nearest rule and keep it."""
    config = resolve_config(preset).config
    assert (config.oae.rule, config.oae.support, config.cmlr.mode) == ("support", 2, "self")
    assert resolve_config(f"{preset}+cpu").config.oae.rule == "support"


@pytest.mark.parametrize("preset", ["cuhk03", "demo"])
def test_cuhk03_and_demo_keep_the_nearest_rule(preset):
    assert resolve_config(preset).config.oae.rule == "nearest"


def test_the_demo_states_its_promise_only_as_it_was_measured(tmp_path):
    """`oaecmlr run demo` prints the time and figure measured for the preset as it stands (docs/results.md);
    a suffix, a config file, a --set or another option makes it another run, with no promise."""
    promise = resolve_config("demo").promise
    assert "minutes" in promise and "mAP" in promise
    assert resolve_config("demo", options={"run.seed": 3}).promise == promise
    other = tmp_path / "other.toml"
    other.write_text("[run]\nepochs = 2\n")
    for changed in (resolve_config("demo", sets=["run.epochs=2"]), resolve_config("demo+cam"),
                    resolve_config("demo", config_file=str(other)), resolve_config("demo", options={"run.epochs": 2}),
                    resolve_config("demo", supervised=True), resolve_config("cuhk03")):
        assert changed.promise == ""
