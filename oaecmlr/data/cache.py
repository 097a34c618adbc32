"""Decode every image once, in parallel, into a uint8 N x 3 x H x W tensor, cached on disk.

Images are resized with PIL's bicubic filter, as the reference's `T.Resize((h, w), interpolation=3)`
(train and test); "bilinear" is the opt-in alternative. The cache file is a .npy named by a hash
of (format version, size, filter, each file's path, size and mtime), so editing, adding or removing
an image gives a new file. Images are stored in sorted path order and returned in the caller's order.

A cache entry is trusted only as far as it can be checked: each .npy has a checksum file beside it
(`.npy.sha256`: SHA-256 over the SHA-256 of each 64 MiB of pixels), written after the .npy and,
like it, whole (temp file + os.replace); an entry whose pixels do not match it (overwritten,
truncated, written by a version without checksums) is decoded again. The cache folder is created
private (0700); a cache path that is not a folder only warns, and the run decodes without a cache.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oaecmlr.errors import DatasetError
from oaecmlr.tempfiles import remove_files, temp_name, writer_is_dead

FORMAT_VERSION = 1
_RESAMPLING = getattr(Image, "Resampling", Image)  # Pillow < 9.1 has the names on Image
FILTERS = {"bicubic": _RESAMPLING.BICUBIC, "bilinear": _RESAMPLING.BILINEAR}


def default_cache_dir() -> Path:
    return Path(os.environ.get("OAECMLR_CACHE") or Path.home() / ".cache" / "oaecmlr")


def decode_image(path: str, height: int, width: int, resample: str = "bicubic") -> np.ndarray:
    """One image as uint8 3 x height x width (RGB, resized with `resample`); DatasetError if unreadable."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((width, height), FILTERS[resample])
            return np.asarray(rgb).transpose(2, 0, 1)
    except MemoryError:
        raise
    except Exception as exc:  # PIL reports broken files as OSError, SyntaxError, ValueError, EOFError...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DatasetError(f"cannot read image {path} ({reason}); replace or remove the file") from None


def cache_key(paths: Sequence[str], height: int, width: int, resample: str = "bicubic") -> str:
    # The bilinear key is the one older versions wrote, so their caches stay valid.
    filter_tag = "" if resample == "bilinear" else f" {resample}"
    digest = hashlib.sha256(f"oaecmlr images v{FORMAT_VERSION} {height}x{width}{filter_tag}\n".encode())
    for path in sorted(paths):
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise DatasetError(f"cannot read image {path} ({exc.strerror}); restore or remove the file") from None
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def load_images(paths: list[str], height: int, width: int, cache_dir: str | os.PathLike | bool | None = None,
                num_workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                resample: str = "bicubic") -> torch.Tensor:
    """uint8 tensor N x 3 x height x width, row i decoded from paths[i] and resized with `resample`.

    cache_dir: folder for the .npy cache (None: $OAECMLR_CACHE, else ~/.cache/oaecmlr); False: no disk.
    progress(done, total) is called from this thread as images finish.
    """
    paths = [os.path.abspath(p) for p in paths]
    order = sorted(range(len(paths)), key=paths.__getitem__)
    sorted_paths = [paths[i] for i in order]
    shape = (len(paths), 3, height, width)
    if not paths:
        return torch.empty(shape, dtype=torch.uint8)

    cache_file = None
    if cache_dir is not False:
        folder = Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
        key = cache_key(sorted_paths, height, width, resample)
        if usable_folder(folder):
            cache_file = folder / f"images-{height}x{width}-n{len(paths)}-{key[:32]}.npy"
    images = _read_cache(cache_file, shape) if cache_file else None
    if images is not None:
        if progress:
            progress(len(paths), len(paths))
    else:
        images = _decode_all(sorted_paths, height, width, num_workers, progress, resample)
        if cache_file:
            clean_stale_temp_files(cache_file.parent)
            _write_atomic(cache_file, images)

    if order != list(range(len(paths))):
        rank = np.empty(len(paths), dtype=np.int64)
        rank[order] = np.arange(len(paths))
        images = images[rank]
    return torch.from_numpy(images)


def check_images(paths: list[str], height: int, width: int, cache_dir: str | os.PathLike | bool | None = None,
                 resample: str = "bicubic") -> None:
    """DatasetError naming the first image that is no image (empty, garbage, another format, gone),
    found by reading each file's header, before a run exists; nothing when the cache already holds
    these images (they were decoded once). A file whose header is fine but whose pixels are broken
    (a truncated JPEG) is only found when decoded."""
    paths = sorted(os.path.abspath(p) for p in paths)
    if not paths:
        return
    if cache_dir is not False:
        folder = Path(cache_dir) if cache_dir not in (None, True) else default_cache_dir()
        name = f"images-{height}x{width}-n{len(paths)}-{cache_key(paths, height, width, resample)[:32]}.npy"
        try:
            if (folder / name).is_file() and _checksum_file(folder / name).is_file():
                return
        except OSError:
            pass

    def header(path: str) -> None:
        try:
            with Image.open(path) as img:
                img.size  # noqa: B018 - parsed from the header
        except Exception as exc:  # PIL reports files it cannot identify as several types
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise DatasetError(f"cannot read image {path} ({reason}); replace or remove the file") from None

    for path in paths:  # one thread: parsing a header holds the GIL (about 0.3 ms an image, a fifth of a decode)
        header(path)


def _decode_all(paths: list[str], height: int, width: int, num_workers: int | None,
                progress: Callable[[int, int], None] | None, resample: str) -> np.ndarray:
    out = np.empty((len(paths), 3, height, width), dtype=np.uint8)

    def decode_into(i: int) -> None:
        out[i] = decode_image(paths[i], height, width, resample)

    workers = num_workers or min(16, (os.cpu_count() or 1) + 2)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(decode_into, i) for i in range(len(paths))]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()  # re-raises the DatasetError of a broken file
            if progress:
                progress(done, len(paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on error, skip the images not started yet
    return out


def usable_folder(folder: Path) -> bool:
    """False, with a warning, when the cache path exists but is no folder (OAECMLR_CACHE naming a
    file): the images are then decoded without a disk cache."""
    try:
        if not folder.exists() or folder.is_dir():
            return True
    except OSError:
        pass
    warnings.warn(f"the image cache {folder} is not a folder; decoding without a disk cache (point "
                  "OAECMLR_CACHE or data.cache_dir at a folder)", stacklevel=3)
    return False


CHECKSUM_BLOCK = 64 * 2**20


def checksum(images: np.ndarray) -> str:
    """SHA-256 over the SHA-256 of each CHECKSUM_BLOCK bytes of the pixels, the blocks hashed in
    parallel (hashlib releases the GIL)."""
    data = memoryview(np.ascontiguousarray(images)).cast("B")
    blocks = range(0, max(len(data), 1), CHECKSUM_BLOCK)
    with ThreadPoolExecutor(max_workers=min(len(blocks), os.cpu_count() or 1)) as pool:
        digests = pool.map(lambda start: hashlib.sha256(data[start:start + CHECKSUM_BLOCK]).digest(), blocks)
        return f"sha256/64MiB {hashlib.sha256(b''.join(digests)).hexdigest()}"


def _checksum_file(file: Path) -> Path:
    return file.with_name(file.name + ".sha256")


def _read_cache(file: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array memory-mapped, or None when absent or unusable (it is then rebuilt): not a
    regular file, another shape, or pixels that do not match the checksum written beside them.

    Copy-on-write mapping ('c') rather than 'r': pages load lazily as with 'r', but the tensor
    built on it stays writable, so an in-place op cannot crash on read-only memory.
    """
    if not file.is_file():
        return None
    try:
        images = np.load(file, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if images.shape != shape or images.dtype != np.uint8:
        return None
    stored = _stored_checksum(_checksum_file(file))
    if stored != checksum(images):
        why = "has no checksum" if stored is None else "does not match its checksum"
        warnings.warn(f"image cache {file} {why}; decoding the images again", stacklevel=3)
        return None
    return images


def _stored_checksum(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > 256:
            return None
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def clean_stale_temp_files(folder: Path) -> list[str]:
    """Remove cache files half-written by processes of this host that no longer run."""
    return remove_files(p for p in (folder.glob(".images-*.tmp") if folder.is_dir() else []) if writer_is_dead(p))


def _write_atomic(file: Path, images: np.ndarray) -> None:
    """Write the entry whole or not at all: its checksum removed, the .npy, then its checksum, each
    through a temp file and os.replace. A cache that cannot be written only warns."""
    try:
        file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _checksum_file(file).unlink(missing_ok=True)
        _replace(file, lambda f: np.save(f, images))
        _replace(_checksum_file(file), lambda f: f.write(checksum(images).encode("ascii") + b"\n"))
    except OSError as exc:
        warnings.warn(f"could not write image cache {file} ({exc.strerror or exc}); images will be decoded again "
                      "next time", stacklevel=3)


def _replace(file: Path, write: Callable) -> None:
    tmp = temp_name(file)
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, file)
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
