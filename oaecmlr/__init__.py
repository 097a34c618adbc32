"""oaecmlr: unsupervised person re-ID with Outliers Adaptation Exploration (OAE) and Centroids
Matching Label Refinement (CMLR), on a fast, dependency-light clustering core.

The core imports only torch, numpy and scipy.
"""

from oaecmlr.cmlr import CMLRResult, cmlr
from oaecmlr.dbscan import dbscan
from oaecmlr.evaluation import evaluate_rank
from oaecmlr.jaccard import jaccard_distance
from oaecmlr.knn import knn
from oaecmlr.memory import ClusterMemory
from oaecmlr.oae import OAEResult, oae
from oaecmlr.pseudo_labelling import PseudoLabels, pseudo_labels
from oaecmlr.rerank import re_rank

__version__ = "0.1.0"

__all__ = [
    "CMLRResult", "ClusterMemory", "OAEResult", "PseudoLabels", "cmlr", "dbscan", "evaluate_rank",
    "jaccard_distance", "knn", "oae", "pseudo_labels", "re_rank", "__version__",
]
