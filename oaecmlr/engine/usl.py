"""Unsupervised training (method.md section 1): per epoch extract features, pseudo-label with the
Jaccard distance and DBSCAN, OAE, CMLR, initialise the cluster memory, train a fixed number of PK
iterations, evaluate every `eval_every` epochs. Epoch 0 is an evaluation before any training.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from oaecmlr.clusters import cluster_geometry
from oaecmlr.cmlr import cmlr
from oaecmlr.diagnostics import cluster_size_histogram, cross_camera_fraction, nmi, oae_precision, purity
from oaecmlr.engine.features import autocast
from oaecmlr.engine.loop import Loop, Phase
from oaecmlr.memory import ClusterMemory
from oaecmlr.oae import oae
from oaecmlr.pseudo_labelling import pseudo_labels


class UnsupervisedLoop(Loop):
    kind = "usl"

    def build(self) -> None:
        cfg = self.config
        self.memory = ClusterMemory(self.core.feature_dim, cfg.memory.temperature, cfg.memory.momentum,
                                    cfg.memory.mode).to(self.device)

    def extra_state(self) -> dict:
        return {"memory": self.memory.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])

    # one epoch --------------------------------------------------------------------------------------
    def prepare_epoch(self, epoch: int) -> Phase:
        """Pseudo-labels, OAE, CMLR and memory for this epoch (computed on rank 0, shared)."""
        stage_start = time.perf_counter()
        features = self.extract(self.data.train.images)
        timings = {"extract": time.perf_counter() - stage_start}
        payload = None
        if self.dist.is_main:
            payload = self._cluster(features, epoch, timings)
        payload = self.dist.broadcast_object(payload)
        if payload is None or "error" in payload:
            raise self.fail(payload["error"] if payload else "clustering failed on rank 0")
        labels = payload["labels"]
        geometry = cluster_geometry(features, labels)
        self.memory.initialise(geometry.centroids)
        soft = payload["soft"]
        return Phase(epoch, 0, torch.as_tensor(labels), None if soft is None else soft[0],
                     None if soft is None else torch.as_tensor(soft[1]))

    def _cluster(self, features: torch.Tensor, epoch: int, timings: dict) -> dict:
        cfg = self.config
        result = pseudo_labels(features, cfg.cluster.eps, cfg.cluster.min_samples, cfg.cluster.k1, cfg.cluster.k2,
                               cfg.cluster.knn_backend)
        timings.update({k: v for k, v in result.timings.items() if k != "total"})
        start = time.perf_counter()
        before = result.labels
        if result.num_clusters == 0:
            return {"error": f"no clusters at epoch {epoch}: all {before.size} images are DBSCAN outliers; "
                             "raise cluster.eps or lower cluster.min_samples"}
        oae_on = cfg.oae.enabled and cfg.oae.rho > 0 and cfg.oae.rounds > 0
        outliers = np.flatnonzero(before == -1) if oae_on else np.zeros(0, dtype=np.int64)
        oae_result = oae(features, before, result.full_rows(outliers), result.neighbours, k=cfg.oae.k,
                         rho=cfg.oae.rho, rounds=cfg.oae.rounds, min_samples=cfg.cluster.min_samples,
                         enabled=oae_on)
        labels = oae_result.labels
        timings["oae"] = time.perf_counter() - start
        start = time.perf_counter()
        refined = None
        if cfg.cmlr.enabled and cfg.cmlr.lam > 0:
            refined = cmlr(features, labels, cfg.cmlr.lam, cfg.cmlr.tau_r, cfg.cmlr.top_k or None)
        timings["cmlr"] = time.perf_counter() - start
        truth = self.data.train.pids
        self.emit("cluster", epoch=epoch, clusters=result.num_clusters, outliers_before=oae_result.outliers_before,
                  outliers_after=oae_result.outliers_after, oae_assigned=oae_result.assigned,
                  oae_passed_neighbourhood=oae_result.passed_neighbourhood,
                  cmlr_entropy=refined.mean_entropy if refined else 0.0,
                  cmlr_weight=refined.mean_weight if refined else 0.0,
                  size_histogram=cluster_size_histogram(labels), knn_backend=result.knn_backend,
                  timings={k: round(v, 4) for k, v in timings.items()},
                  cross_camera=cross_camera_fraction(labels, self.data.train.camids),
                  purity=purity(labels, truth), nmi=nmi(labels, truth),
                  oae_precision=oae_precision(before, labels, truth))
        soft = None if refined is None else (refined.soft_labels.cpu(), refined.sample_index)
        return {"labels": labels, "soft": soft}

    def train_epoch(self, phase: Phase) -> None:
        cfg = self.config
        labels = phase.labels.to(self.device)
        soft_rows = None
        if phase.soft is not None:
            soft = phase.soft.to(self.device)
            position = torch.full((labels.numel(),), -1, dtype=torch.long, device=self.device)
            position[phase.soft_index.to(self.device)] = torch.arange(soft.shape[0], device=self.device)
            soft_rows = (soft, position)
        batches, host_batches, rounds = self.epoch_batches(phase)
        self.model.train()
        for iteration in range(phase.iteration, batches.shape[0]):
            index = batches[iteration]
            x = self.batch_images(index, host_batches[iteration])
            y = labels[index]
            with autocast(self.device, self.amp):
                features = self.model(x)
            target_soft = None if soft_rows is None else soft_rows[0][soft_rows[1][index]]
            loss = self.memory(features.float(), y, target_soft, cfg.cmlr.weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            # The memory moves with the whole global batch, so every rank holds the same memory.
            self.memory.update(self.dist.all_gather_cat(features.detach().float()), self.dist.all_gather_cat(y),
                               rounds[iteration])
            self.after_iteration(phase, iteration, batches.shape[0], loss.detach(), x.shape[0])
