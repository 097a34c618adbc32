"""Cluster memory and its contrastive loss (Dai et al., "Cluster Contrast for Unsupervised Person
Re-Identification", 2021), with optional CMLR soft labels.

The centroids live in a buffer, so `state_dict()` checkpoints them. The momentum update is applied
explicitly with `update()` after the backward pass, on the features the loss saw:
- "mean": every sample of the batch in turn, m_y <- normalise(mu m_y + (1 - mu) f);
- "hard": per cluster, only the batch member least similar to m_y.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("mean", "hard")


class ClusterMemory(nn.Module):
    def __init__(self, num_features: int, *, temperature: float = 0.05, momentum: float = 0.1, mode: str = "mean"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown memory mode {mode!r}; choose one of {', '.join(MODES)}")
        self.temperature = temperature
        self.momentum = momentum
        self.mode = mode
        self.register_buffer("centroids", torch.zeros(0, num_features))

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    @torch.no_grad()
    def initialise(self, centroids: torch.Tensor) -> None:
        """Replace the memory with new L2-normalised centroids (C x D), e.g. each epoch."""
        self.centroids = F.normalize(centroids.detach().float(), dim=1).to(self.centroids.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "centroids")
        if saved is not None and saved.shape != self.centroids.shape:
            self.centroids = torch.empty_like(saved, device=self.centroids.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: torch.Tensor, labels: torch.Tensor, soft_labels: torch.Tensor | None = None,
                soft_weight: float = 1.0, *, replace_hard: bool = False) -> torch.Tensor:
        """CE(f.M^T / tau, y), plus soft_weight * soft-CE against CMLR labels when given; with
        `replace_hard`, the soft-CE alone takes the place of the CE."""
        logits = features.float() @ self.centroids.T / self.temperature
        if soft_labels is not None and replace_hard:
            return -(soft_labels * logits.log_softmax(dim=1)).sum(dim=1).mean()
        loss = F.cross_entropy(logits, labels)
        if soft_labels is not None:
            loss = loss + soft_weight * -(soft_labels * logits.log_softmax(dim=1)).sum(dim=1).mean()
        return loss

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, rounds: int | None = None) -> None:
        """`rounds`: the largest number of times a label occurs in `labels`, when the caller knows it
        (the engine counts it on the host); the mean update then never waits for the device."""
        features = features.detach().float()
        if self.mode == "hard":
            self._update_hard(features, labels)
            return
        # Sequential per sample, as the reference; samples of different clusters never interact,
        # so the t-th occurrence of every cluster is updated together.
        if rounds is not None:
            self._update_rounds(features, labels, rounds)
            return
        for features_t, labels_t in zip(*_occurrence_rounds(features, labels)):
            self._move(labels_t, features_t)

    def _update_rounds(self, features: torch.Tensor, labels: torch.Tensor, rounds: int) -> None:
        """The mean update without host syncs: in round t every row computes its move, and rows that
        are not a t-th occurrence write into a spare row that is dropped at the end."""
        occurrence = _occurrence(labels)
        spare = self.num_clusters
        table = torch.cat([self.centroids, self.centroids.new_zeros(1, self.centroids.shape[1])])
        for t in range(rounds):
            target = torch.where(occurrence == t, labels, spare)
            moved = self.momentum * table[target] + (1 - self.momentum) * features
            table.index_copy_(0, target, F.normalize(moved, dim=1))
        self.centroids.copy_(table[:spare])

    def _update_hard(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        similarity = (features * self.centroids[labels]).sum(dim=1)
        lowest = torch.full((self.num_clusters,), float("inf"), device=features.device)
        lowest.scatter_reduce_(0, labels, similarity, "amin")
        is_hardest = similarity == lowest[labels]
        # First hardest sample per cluster (ties by batch position).
        position = torch.arange(labels.numel(), device=labels.device)
        first = torch.full((self.num_clusters,), labels.numel(), device=labels.device)
        first.scatter_reduce_(0, labels[is_hardest], position[is_hardest], "amin")
        chosen = first[first < labels.numel()]
        self._move(labels[chosen], features[chosen])

    def _move(self, labels: torch.Tensor, features: torch.Tensor) -> None:
        moved = self.momentum * self.centroids[labels] + (1 - self.momentum) * features
        self.centroids[labels] = F.normalize(moved, dim=1)


def _occurrence(labels: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same label (0 for the first)."""
    order = torch.sort(labels, stable=True).indices
    sorted_labels = labels[order]
    start = torch.ones_like(sorted_labels, dtype=torch.bool)
    start[1:] = sorted_labels[1:] != sorted_labels[:-1]
    group_start = torch.cummax(torch.where(start, torch.arange(labels.numel(), device=labels.device), 0), 0).values
    occurrence = torch.empty_like(labels)
    occurrence[order] = torch.arange(labels.numel(), device=labels.device) - group_start
    return occurrence


def _occurrence_rounds(features: torch.Tensor, labels: torch.Tensor):
    """Split a batch into rounds where round t holds the t-th occurrence of each label."""
    occurrence = _occurrence(labels)
    rounds_f, rounds_y = [], []
    for t in range(int(occurrence.max()) + 1 if labels.numel() else 0):
        chosen = torch.nonzero(occurrence == t).squeeze(1)
        rounds_f.append(features[chosen])
        rounds_y.append(labels[chosen])
    return rounds_f, rounds_y
