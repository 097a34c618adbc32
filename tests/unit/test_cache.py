"""Image decoding and the on-disk .npy cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oaecmlr.data import cache
from oaecmlr.data.cache import load_images
from oaecmlr.errors import DatasetError

H, W = 16, 8


def write_images(folder: Path, count: int = 5, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (20 + i, 11, 3), dtype=np.uint8)
        path = folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


def with_pil(path: str, resample=Image.BICUBIC) -> np.ndarray:
    """The reference's resize: torchvision's T.Resize((h, w), interpolation=3) on a PIL image is
    PIL's own bicubic resize."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((W, H), resample)).transpose(2, 0, 1)


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = cache.decode_image

    def counting(path, height, width, resample="bicubic"):
        calls.append(path)
        return real(path, height, width, resample)

    monkeypatch.setattr(cache, "decode_image", counting)
    return calls


def npy_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npy")) if folder.exists() else []


def test_decode_matches_pil_in_callers_order(tmp_path):
    paths = write_images(tmp_path / "img")
    shuffled = [paths[i] for i in (3, 0, 4, 1, 2)]
    images = load_images(shuffled, H, W, cache_dir=tmp_path / "cache", num_workers=3)
    assert images.dtype == torch.uint8 and images.shape == (5, 3, H, W)
    assert np.array_equal(images.numpy(), np.stack([with_pil(p) for p in shuffled]))


def test_the_resize_filter_is_a_choice_and_part_of_the_cache_key(tmp_path, count_decodes):
    paths = write_images(tmp_path / "img")
    bicubic = load_images(paths, H, W, cache_dir=tmp_path / "cache")
    bilinear = load_images(paths, H, W, cache_dir=tmp_path / "cache", resample="bilinear")
    assert np.array_equal(bilinear.numpy(), np.stack([with_pil(p, Image.BILINEAR) for p in paths]))
    assert not torch.equal(bicubic, bilinear)
    assert len(npy_files(tmp_path / "cache")) == 2 and len(count_decodes) == 10  # no cache hit across filters
    assert torch.equal(load_images(paths, H, W, cache_dir=tmp_path / "cache"), bicubic) and len(count_decodes) == 10


def test_second_call_hits_cache(tmp_path, count_decodes):
    paths = write_images(tmp_path / "img")
    first = load_images(paths, H, W, cache_dir=tmp_path / "cache")
    (cached,) = npy_files(tmp_path / "cache")
    mtime = cached.stat().st_mtime_ns
    progress = []
    second = load_images(paths[::-1], H, W, cache_dir=tmp_path / "cache", progress=lambda *a: progress.append(a))
    assert len(count_decodes) == 5  # only the first call decoded
    assert torch.equal(second, first.flip(0))
    assert npy_files(tmp_path / "cache") == [cached] and cached.stat().st_mtime_ns == mtime
    assert progress == [(5, 5)]
    second[0] += 1  # the mapped cache is copy-on-write: writable, and the file is untouched
    assert torch.equal(load_images(paths, H, W, cache_dir=tmp_path / "cache"), first)


def test_changed_file_changes_the_key(tmp_path):
    paths = write_images(tmp_path / "img")
    before = load_images(paths, H, W, cache_dir=tmp_path / "cache")
    Image.new("RGB", (11, 20), (255, 0, 0)).save(paths[0])
    os.utime(paths[0], ns=(10**18, 10**18))  # a distinct mtime even on coarse clocks
    after = load_images(paths, H, W, cache_dir=tmp_path / "cache")
    assert len(npy_files(tmp_path / "cache")) == 2
    assert torch.equal(after[1:], before[1:]) and not torch.equal(after[0], before[0])
    assert cache.cache_key(paths, H, W) != cache.cache_key(paths, H + 1, W)


def test_no_disk_cache(tmp_path, monkeypatch, count_decodes):
    monkeypatch.setenv("OAECMLR_CACHE", str(tmp_path / "env_cache"))
    paths = write_images(tmp_path / "img", count=3)
    progress = []
    load_images(paths, H, W, cache_dir=False, progress=lambda *a: progress.append(a))
    load_images(paths, H, W, cache_dir=False)
    assert len(count_decodes) == 6 and not (tmp_path / "env_cache").exists()
    assert sorted(progress) == [(1, 3), (2, 3), (3, 3)]


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("OAECMLR_CACHE", str(tmp_path / "env_cache"))
    load_images(write_images(tmp_path / "img", count=2), H, W)
    assert len(npy_files(tmp_path / "env_cache")) == 1


def test_unusable_cache_file_is_rebuilt(tmp_path):
    paths = write_images(tmp_path / "img", count=2)
    first = load_images(paths, H, W, cache_dir=tmp_path / "cache")
    (cached,) = npy_files(tmp_path / "cache")
    cached.write_bytes(b"garbage")
    assert torch.equal(load_images(paths, H, W, cache_dir=tmp_path / "cache"), first)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_broken_image_names_the_file_and_writes_nothing(tmp_path, damage):
    paths = write_images(tmp_path / "img", count=4)
    broken = Path(paths[2])  # a jpg
    data = broken.read_bytes()
    if damage == "truncated":
        broken.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    elif damage == "empty":
        broken.write_bytes(b"")
    else:
        broken.unlink()
    for cache_dir in (tmp_path / "cache", False):
        with pytest.raises(DatasetError, match=rf"cannot read image {broken}"):
            load_images(paths, H, W, cache_dir=cache_dir)
    leftovers = list((tmp_path / "cache").iterdir()) if (tmp_path / "cache").exists() else []
    assert leftovers == []


def test_empty_list(tmp_path):
    assert load_images([], H, W, cache_dir=tmp_path).shape == (0, 3, H, W)
