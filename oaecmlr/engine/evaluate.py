"""Scoring a model on a query/gallery split (docs/method.md section 5): the one evaluation used by
the training loop and by `oaecmlr eval`."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from oaecmlr.core.evaluation import evaluate_rank
from oaecmlr.engine.features import distance_matrix
from oaecmlr.engine.rundata import Split
from oaecmlr.store.metrics import Evaluation, Metrics


def evaluate(extract: Callable[[torch.Tensor], torch.Tensor], query: Split, gallery: Split, rerank: bool = False,
             main: bool = True, say: Callable[[str], None] | None = None) -> Evaluation | None:
    """mAP, rank-1/5/10 and mINP (fractions in [0, 1]) of the features `extract` gives for the query
    and gallery images, with the counts behind them and the seconds it took. Under several workers
    every rank extracts (its shard) and only the main one scores; the others get None. `say` hears
    where re-ranking ran when that is not the features' device."""
    start = time.perf_counter()
    query_features, gallery_features = extract(query.images), extract(gallery.images)
    if not main:
        return None
    distmat = distance_matrix(query_features, gallery_features, rerank, say)
    result = evaluate_rank(distmat, query.pids, gallery.pids, query.camids, gallery.camids)
    cmc = result["cmc"]
    metrics = Metrics(mAP=result["mAP"], mINP=result["mINP"], rank1=float(cmc[0]),
                      rank5=float(cmc[min(4, len(cmc) - 1)]), rank10=float(cmc[min(9, len(cmc) - 1)]))
    return Evaluation(metrics=metrics, num_query=int(distmat.shape[0]), num_gallery=int(distmat.shape[1]),
                      skipped_queries=result["num_skipped_queries"], rerank=rerank,
                      seconds=round(time.perf_counter() - start, 3))
