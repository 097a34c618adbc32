"""oaecmlr: unsupervised person re-ID with Outliers Adaptation Exploration (OAE) and Centroids
Matching Label Refinement (CMLR), on a fast, dependency-light clustering core.

Layout (docs/architecture.md): `core` (pure functions: torch, numpy, scipy), `data`, `models`,
`config`, `engine` (training), `store` (run folders and their events, no torch), `cli`; the
dashboard is the package `oaecmlr_tui`.

The core's functions are reachable from here too (`from oaecmlr import pseudo_labels, oae`); they
load on first use, so `import oaecmlr` (and the CLI's start) costs no torch import.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "CMLRResult": "cmlr", "cmlr": "cmlr", "dbscan": "dbscan", "evaluate_rank": "evaluation",
    "jaccard_distance": "jaccard", "knn": "knn", "ClusterMemory": "memory", "OAEResult": "oae", "oae": "oae",
    "PseudoLabels": "pseudo_labelling", "pseudo_labels": "pseudo_labelling", "re_rank": "rerank",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"oaecmlr.core.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'oaecmlr' has no attribute {name!r}")
