"""An epoch's cluster memory and camera proxies, built once on rank 0 and broadcast to the others.

The centroids and proxies are sums over clusters (`index_add_`), which CUDA computes in a
non-deterministic order: ranks that each built their own would hold memories differing by
rounding, and the training step assumes every rank holds the same one. Rank 0 builds them from
the features it clustered; the other ranks receive its tensors bit for bit and compute nothing.
"""

from __future__ import annotations

import torch

from oaecmlr.core.camera_memory import CameraProxyMemory
from oaecmlr.core.clusters import Clusters
from oaecmlr.core.memory import ClusterMemory
from oaecmlr.engine.distributed import Dist


def initialise_memories(dist: Dist, memory: ClusterMemory, proxies: CameraProxyMemory | None,
                        geometry: Clusters | None, features: torch.Tensor, labels: torch.Tensor,
                        camids: torch.Tensor) -> None:
    """Rank 0: the memory from `geometry.centroids` and the proxies from (features, labels, camids);
    then every rank holds rank 0's tensors. `geometry` is only read on rank 0 (None elsewhere)."""
    if dist.is_main:
        memory.initialise(geometry.centroids)
        if proxies is not None:
            proxies.initialise(features, labels, camids)
    dist.broadcast_buffers(memory)
    if proxies is not None:
        dist.broadcast_buffers(proxies)
