"""Unsupervised training (docs/method.md section 1). Each epoch: features of the training images ->
(per-camera normalisation) -> k-reciprocal (or camera-aware) Jaccard + DBSCAN pseudo-labels -> OAE
-> cluster geometry -> CMLR soft labels -> the cluster memory (and camera proxies) -> a fixed number
of PK iterations against them. Clustering runs once, on rank 0; every rank gets its labels and
rank 0's memory. The camera-aware pieces (section 11) are off unless configured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from oaecmlr.core.camera_memory import CameraProxyMemory
from oaecmlr.core.camera_norm import camera_normalise
from oaecmlr.core.clusters import Clusters, cluster_geometry
from oaecmlr.core.cmlr import CMLRResult, cmlr, matched, propagated
from oaecmlr.core.diagnostics import (
    camera_spread,
    cluster_size_histogram,
    cmlr_diagnostics,
    nmi,
    oae_diagnostics,
    purity,
)
from oaecmlr.core.memory import ClusterMemory
from oaecmlr.core.oae import OAEResult, camera_shift_at, oae
from oaecmlr.core.pseudo_labelling import _EPS_SLACK, PseudoLabels, pseudo_labels
from oaecmlr.data.sampler import max_occurrences
from oaecmlr.engine.health import clustering_findings
from oaecmlr.engine.loop import EpochLabels, Loop
from oaecmlr.engine.memories import initialise_memories
from oaecmlr.store.schema import Cluster, HealthWarning


@dataclass(frozen=True)
class NoLabels:
    """Why an epoch has no pseudo-labels (rank 0 broadcasts it; every rank then fails the run)."""

    reason: str


class UnsupervisedLoop(Loop):
    kind = "usl"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        memory = self.config.memory
        self.memory = ClusterMemory(self.core.feature_dim, temperature=memory.temperature, momentum=memory.momentum,
                                    mode=memory.mode).to(self.device)
        self.proxies = None
        if memory.camera_proxies:
            self.proxies = CameraProxyMemory(self.core.feature_dim, temperature=memory.camera_temperature,
                                             momentum=memory.momentum, negatives=memory.camera_negatives,
                                             mode=memory.mode).to(self.device)
        self.camids = torch.as_tensor(self.data.train.camids, device=self.device)
        self._rounds: list[int] = []
        self._proxy_rounds: list[int] = []
        self._sample_proxy: torch.Tensor | None = None
        self._previous: tuple[np.ndarray, torch.Tensor] | None = None  # cmlr.mode = matched: last epoch's labels

    def epoch_labels(self, epoch: int) -> EpochLabels:
        started = time.perf_counter()
        features = self.extract(self.data.train.images)
        timings = {"extract": time.perf_counter() - started}
        labels, geometry = self.pseudo_label(features, epoch, timings) if self.dist.is_main else (None, None)
        labels = self.dist.broadcast_object(labels)
        if isinstance(labels, NoLabels):
            raise self.fail(labels.reason)
        initialise_memories(self.dist, self.memory, self.proxies, geometry, features, labels.labels, self.camids)
        return labels

    def pseudo_label(self, features: torch.Tensor, epoch: int, timings: dict) -> tuple[EpochLabels | NoLabels, Clusters | None]:
        """Rank 0: this epoch's labels, the geometry of the raw features (the memory's), and the cluster
        event (or why there are no labels). DBSCAN, OAE and CMLR all see the features that were
        clustered (camera-normalised under `cluster.camera_norm`); the memory sees the raw ones."""
        cfg, cluster = self.config, self.config.cluster
        camids = self.data.train.camids
        clustered_on = camera_normalise(features, camids, cluster.camera_norm)
        camera = ({"camids": camids, "k1_intra": cluster.k1_intra, "k1_inter": cluster.k1_inter,
                   "k2_intra": cluster.k2_intra, "k2_inter": cluster.k2_inter} if cluster.camera_jaccard else {})
        clustering = pseudo_labels(clustered_on, eps=cluster.eps, min_samples=cluster.min_samples, k1=cluster.k1,
                                   k2=cluster.k2, knn_backend=cluster.knn_backend, **camera)
        timings.update({k: v for k, v in clustering.timings.items() if k != "total"})
        before = clustering.labels
        if clustering.num_clusters == 0:
            return NoLabels(f"no clusters at epoch {epoch}: all {before.size} images are DBSCAN outliers; "
                            "raise cluster.eps or lower cluster.min_samples"), None

        started = time.perf_counter()
        assigned = self.explore_outliers(clustered_on, clustering, epoch)
        labels = assigned.labels
        timings["oae"] = time.perf_counter() - started
        warnings, fatal = clustering_findings(labels, cluster.eps, cluster.min_samples)
        if fatal:
            return NoLabels(f"epoch {epoch}: {fatal}"), None

        started = time.perf_counter()
        geometry = cluster_geometry(clustered_on, labels)
        raw_geometry = geometry if clustered_on is features else cluster_geometry(features, labels)
        refined = self.refine_labels(clustered_on, labels, geometry, clustering)
        timings["cmlr"] = time.perf_counter() - started

        truth = self.data.train.pids
        target = refined if refined is not None else cmlr(features, labels, enabled=False)
        prediction = (features[torch.as_tensor(target.sample_index, device=features.device)].float()
                      @ raw_geometry.centroids.T / cfg.memory.temperature).softmax(dim=1)
        self.emit(Cluster(
            epoch=epoch, clusters=clustering.num_clusters, outliers_before=assigned.outliers_before,
            outliers_after=assigned.outliers_after, oae_assigned=assigned.assigned,
            oae_passed_neighbourhood=assigned.passed_neighbourhood,
            cmlr_entropy=refined.mean_entropy if refined else 0.0, cmlr_weight=refined.mean_weight if refined else 0.0,
            size_histogram=cluster_size_histogram(labels), knn_backend=clustering.knn_backend,
            timings={k: round(v, 4) for k, v in timings.items()}, **camera_spread(labels, camids),
            purity=purity(labels, truth), nmi=nmi(labels, truth),
            **oae_diagnostics(before, labels, assigned.anchors, truth, camids),
            **cmlr_diagnostics(target.soft_labels.cpu().numpy(), target.sample_index, labels, truth,
                               prediction.cpu().numpy())))
        for message in warnings:
            self.emit(HealthWarning(what="clustering", message=message, epoch=epoch))
        if cfg.cmlr.mode == "matched" and refined is not None:
            self._previous = (labels, refined.soft_labels.cpu())
        if refined is None or epoch <= cfg.cmlr.warmup:
            return EpochLabels(epoch, torch.as_tensor(labels)), raw_geometry
        return (EpochLabels(epoch, torch.as_tensor(labels), refined.soft_labels.cpu(),
                            torch.as_tensor(refined.sample_index)), raw_geometry)

    def explore_outliers(self, features: torch.Tensor, clustering: PseudoLabels, epoch: int) -> OAEResult:
        """OAE on the clustered features (docs/method.md section 3)."""
        cfg = self.config.oae
        on = cfg.enabled and cfg.rho > 0 and cfg.rounds > 0
        outliers = np.flatnonzero(clustering.labels == -1) if on else np.zeros(0, dtype=np.int64)
        shift = camera_shift_at(epoch, self.config.run.epochs, start=cfg.camera_shift) if cfg.camera_shift else 0.0
        return oae(features, clustering.labels, clustering.full_rows(outliers), clustering.neighbours, k=cfg.k,
                   rho=cfg.rho, rounds=cfg.rounds, min_samples=self.config.cluster.min_samples, enabled=on,
                   rule=cfg.rule, support=cfg.support, support_k=cfg.support_k, camids=self.data.train.camids,
                   camera_shift=shift)

    def refine_labels(self, features: torch.Tensor, labels: np.ndarray, geometry: Clusters,
                      clustering: PseudoLabels) -> CMLRResult | None:
        """CMLR's soft labels in the reading `cmlr.mode` (docs/method.md section 4); None when off."""
        cfg = self.config.cmlr
        if not cfg.enabled or cfg.lam == 0:
            return None
        if cfg.mode == "propagated":
            within = self.config.cluster.eps + _EPS_SLACK
            near = (clustering.distances if cfg.radius < min(1.0, within)
                    else clustering.full_rows(np.flatnonzero(labels >= 0)))
            return propagated(features, labels, near, lam=cfg.lam, radius=cfg.radius, candidates=cfg.candidates,
                              min_spread=cfg.min_spread, geometry=geometry)
        if cfg.mode == "matched":
            previous_labels, previous_soft = self._previous or (None, None)
            return matched(labels, previous_labels, previous_soft, lam=cfg.lam, device=features.device)
        return cmlr(features, labels, lam=cfg.lam, tau_r=cfg.tau_r, top_k=cfg.top_k or None, geometry=geometry)

    def start_epoch(self, labels: EpochLabels, global_batches: np.ndarray) -> None:
        """How often a cluster (and a proxy) occurs at most in each global batch, counted on the host:
        the memory update then never waits for the device."""
        hard = labels.labels.numpy()
        self._rounds = max_occurrences(hard, global_batches).tolist()
        if self.proxies is not None:
            self._sample_proxy = self.proxies.proxy_of(labels.labels, self.camids)
            self._proxy_rounds = max_occurrences(self._sample_proxy.cpu().numpy(), global_batches).tolist()

    def loss(self, features: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        cmlr = self.config.cmlr
        loss = self.memory(features.float(), y, soft, cmlr.weight, replace_hard=cmlr.mode == "propagated")
        if self.proxies is not None:
            loss = loss + self.config.memory.camera_weight * self.proxies(features.float(), y)
        return loss

    def after_step(self, features: torch.Tensor, y: torch.Tensor, index: torch.Tensor, iteration: int) -> None:
        # The memory moves with the whole global batch, so every rank holds the same memory.
        gathered = self.dist.all_gather_cat(features.detach().float())
        self.memory.update(gathered, self.dist.all_gather_cat(y), self._rounds[iteration])
        if self.proxies is not None:
            self.proxies.update(gathered, self.dist.all_gather_cat(self._sample_proxy[index]),
                                self._proxy_rounds[iteration])

    def extra_state(self) -> dict:
        state = {"memory": self.memory.state_dict()}
        if self.proxies is not None:
            state["camera_proxies"] = self.proxies.state_dict()
        if self._previous is not None:
            state["cmlr_previous"] = {"labels": torch.as_tensor(self._previous[0]), "soft": self._previous[1]}
        return state

    def load_extra_state(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        if self.proxies is not None and "camera_proxies" in state:  # else the next epoch builds them
            self.proxies.load_state_dict(state["camera_proxies"])
        previous = state.get("cmlr_previous")
        if previous is not None:
            self._previous = (previous["labels"].numpy(), previous["soft"])
