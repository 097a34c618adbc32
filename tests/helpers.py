"""Shared test data: clustered random features and small conversions used by the oracle tests."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# `oaecmlr.core.knn` as an attribute of the package is the `knn` function (re-exported by
# `oaecmlr/__init__.py`), so tests reach the module itself through importlib.
knn_module = importlib.import_module("oaecmlr.core.knn")


class PreconditionError(RuntimeError):
    """The test data is not what a test needs. Strict xfails use raises=AssertionError, so this
    surfaces as a failure instead of passing for the expected bug."""


def require(condition, message: str) -> None:
    if not condition:
        raise PreconditionError(message)


def clustered_features(n: int, dim: int, num_clusters: int, spread: float = 0.6, noise: float = 0.1,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised float32 features (n x dim): Gaussian blobs around random unit centres of
    uneven sizes, plus a share `noise` of isotropic background samples (label -1).

    Returns (features, identity labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.uniform(0.3, 1.0, num_clusters)
    ids = rng.choice(num_clusters, size=n, p=weights / weights.sum())
    x = centres[ids] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)
    background = rng.random(n) < noise
    x[background] = rng.normal(size=(int(background.sum()), dim))
    ids[background] = -1
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), ids


def dense(distances: sp.spmatrix, fill: float = 1.0) -> np.ndarray:
    """Dense float64 copy of a sparse distance matrix, absent pairs set to `fill`."""
    coo = sp.coo_matrix(distances)
    out = np.full(coo.shape, fill, dtype=np.float64)
    out[coo.row, coo.col] = coo.data
    return out


def stored_mask(distances: sp.spmatrix) -> np.ndarray:
    """Which pairs are stored (explicit zeros included)."""
    coo = sp.coo_matrix(distances)
    out = np.zeros(coo.shape, dtype=bool)
    out[coo.row, coo.col] = True
    return out


def triplets(distances: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, value) of the stored entries in (row, col) order, explicit zeros included."""
    coo = sp.coo_matrix(distances)
    order = np.lexsort((coo.col, coo.row))
    return coo.row[order], coo.col[order], coo.data[order]


def sklearn_dbscan(distances, eps: float, min_samples: int) -> np.ndarray:
    """scikit-learn's DBSCAN on a precomputed (dense or sparse) distance matrix: the reference."""
    from sklearn.cluster import DBSCAN

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse efficiency / unsorted-graph warnings
        return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distances)


def exact_ranking(features: np.ndarray, k: int) -> np.ndarray:
    """Each row's k nearest rows by float64 squared distance 2 - 2 a.b, ties broken by index.

    Dot products are summed element by element (not by BLAS, whose blocking may round identical
    rows differently), so exact duplicates get bit-identical distances and tie."""
    f = np.asarray(features, dtype=np.float64)
    n = f.shape[0]
    dots = np.empty((n, n))
    step = max(1, (1 << 21) // max(1, n * f.shape[1]))
    for start in range(0, n, step):
        dots[start:start + step] = (f[start:start + step, None, :] * f[None, :, :]).sum(axis=2)
    dist = 2 - 2 * dots
    cols = np.broadcast_to(np.arange(n), dist.shape)
    return np.lexsort((cols, dist), axis=1)[:, :k]


ROOT = Path(__file__).resolve().parents[1]


def device_check():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "benchmarks" / "device_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
