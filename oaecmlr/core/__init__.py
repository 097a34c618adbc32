"""The method's pure functions over tensors: k nearest neighbours, the k-reciprocal Jaccard distance,
DBSCAN, OAE, CMLR, cluster geometry, the cluster memory, evaluation, re-ranking and diagnostics.

Only torch, numpy and scipy: nothing here reads a config, a file or a run. Each module is one idea;
import the module (`from oaecmlr.core import oae`) or the function (`from oaecmlr.core.oae import oae`).
"""
