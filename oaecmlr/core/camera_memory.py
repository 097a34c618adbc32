"""Camera-aware proxy memory: each cluster split into one proxy per camera, and an inter-camera
contrastive loss that pulls a sample towards every proxy of its cluster, whichever camera saw it
(Wang et al., "Camera-aware Proxies for Unsupervised Person Re-Identification", AAAI 2021;
Chen et al., "ICE: Inter-instance Contrastive Encoding for Unsupervised Person
Re-identification", ICCV 2021).

Proxy p of (cluster c, camera m) starts each epoch as the normalised mean of c's images from m.
For a sample of cluster y with feature f (L2-normalised), s_q = f.p_q / tau over all proxies,
  L = -1/|P| sum_{p in P} log( exp(s_p) / (sum_{u in P} exp(s_u) + sum_{n in H} exp(s_n)) ),
P = the proxies of y, H = the `negatives` proxies of other clusters most similar to f. After each
step the proxies move like the cluster memory (momentum, "mean" or "hard"), keyed by (cluster,
camera) of the batch's samples. Buffers hold everything, so `state_dict()` checkpoints it.
"""

from __future__ import annotations

import torch
from torch import nn

from oaecmlr.core.memory import ClusterMemory


class CameraProxyMemory(nn.Module):
    def __init__(self, num_features: int, *, temperature: float = 0.07, momentum: float = 0.1, negatives: int = 50,
                 mode: str = "mean"):
        super().__init__()
        if negatives < 0 or temperature <= 0:
            raise ValueError(f"camera proxies need negatives >= 0 and temperature > 0, got {negatives}, {temperature}")
        self.temperature, self.negatives = temperature, negatives
        self.bank = ClusterMemory(num_features, temperature=temperature, momentum=momentum, mode=mode)  # the proxies, as a memory
        self.register_buffer("proxy_cluster", torch.zeros(0, dtype=torch.long))  # (P,)
        self.register_buffer("table", torch.zeros(0, 0, dtype=torch.long))  # (C, cameras): proxy of (c, m), -1 none
        self.register_buffer("cameras", torch.zeros(0, dtype=torch.long))  # the camera numbers of the table's columns

    @property
    def proxies(self) -> torch.Tensor:
        return self.bank.centroids

    @torch.no_grad()
    def initialise(self, features: torch.Tensor, labels: torch.Tensor, camids: torch.Tensor) -> None:
        """Proxies of the clustered samples (labels >= 0): the normalised mean per (cluster, camera)."""
        labels, camids = labels.to(features.device).long(), camids.to(features.device).long()
        clustered = labels >= 0
        self.cameras, camids = torch.unique(camids, return_inverse=True)  # any camera numbers: 0..M-1 here
        cameras = max(1, self.cameras.numel())
        clusters = int(labels.max()) + 1 if clustered.any() else 0
        key = labels[clustered] * cameras + camids[clustered]
        keys, proxy = torch.unique(key, return_inverse=True)
        sums = torch.zeros(keys.numel(), features.shape[1], device=features.device)
        sums.index_add_(0, proxy, features[clustered].float())
        self.bank.initialise(sums)
        self.proxy_cluster = keys // cameras
        table = torch.full((clusters * cameras,), -1, dtype=torch.long, device=features.device)
        table[keys] = torch.arange(keys.numel(), device=features.device)
        self.table = table.view(clusters, cameras)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("proxy_cluster", "table", "cameras"):  # their sizes change every epoch
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def proxy_of(self, labels: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
        """The proxy of each (cluster, camera); -1 for samples outside the clusters."""
        labels, camids = labels.to(self.table.device).long(), camids.to(self.table.device).long()
        out = torch.full_like(labels, -1)
        clustered = labels >= 0
        column = torch.searchsorted(self.cameras, camids[clustered])
        out[clustered] = self.table[labels[clustered], column]
        return out

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The inter-camera contrastive loss of a batch (labels: the samples' clusters)."""
        logits = features.float() @ self.proxies.T / self.temperature  # (B, P)
        positive = self.proxy_cluster[None, :] == labels[:, None]
        negative_logits = logits.masked_fill(positive, float("-inf"))
        hard = negative_logits.topk(min(self.negatives, logits.shape[1]), dim=1).values
        denominator = torch.logsumexp(torch.cat([logits.masked_fill(~positive, float("-inf")), hard], dim=1), dim=1)
        positive_log_p = torch.where(positive, logits - denominator[:, None], torch.zeros_like(logits))
        return -(positive_log_p.sum(dim=1) / positive.sum(dim=1).clamp_min(1)).mean()

    @torch.no_grad()
    def update(self, features: torch.Tensor, proxies: torch.Tensor, rounds: int | None = None) -> None:
        """Move the proxies `proxies` (one per row of `features`) like the cluster memory moves."""
        self.bank.update(features, proxies, rounds)
