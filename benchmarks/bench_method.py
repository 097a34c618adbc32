"""Cost of each reading of OAE and CMLR (docs/method.md sections 3 and 4) at Market-1501 size,
beside today's OAE and CMLR measured in the same run, on the same pseudo-labels.

    python benchmarks/bench_method.py                       # N = 12,936, D = 2048, CPU
    python benchmarks/bench_method.py --n 32621 --repeats 1

Each line: the median seconds over --repeats, and the ratio to the reading it replaces (OAE
"nearest" for the OAE lines, CMLR "self" for the CMLR lines). The diagnostics of the cluster event
are timed too, against today's OAE + CMLR together. Clustering itself is not timed here
(bench_pseudo_labels.py does that).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from oaecmlr import pseudo_labels
from oaecmlr.core.clusters import cluster_geometry
from oaecmlr.core.cmlr import cmlr, matched, propagated
from oaecmlr.core.diagnostics import cmlr_diagnostics, oae_diagnostics
from oaecmlr.core.oae import oae


def features_with_outliers(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Re-ID-like features with what OAE works on: ~17 images per identity around identity centres with
    six camera offsets; a fifth of the images sit halfway between two identities and a fifth are loners, so
    DBSCAN leaves a few thousand outliers at Market size. Returns features, cameras and identities."""
    g = torch.Generator().manual_seed(seed)
    ids = max(2, n // 17)
    centres = torch.nn.functional.normalize(torch.randn(ids, dim, generator=g), dim=1)
    cameras = 0.35 * torch.nn.functional.normalize(torch.randn(6, dim, generator=g), dim=1)
    identity, other = torch.randint(0, ids, (n,), generator=g), torch.randint(0, ids, (n,), generator=g)
    camids = torch.randint(0, 6, (n,), generator=g)
    kind = torch.rand(n, generator=g)
    between = (kind < 0.2).float().unsqueeze(1)
    x = (1 - 0.5 * between) * centres[identity] + 0.5 * between * centres[other] + cameras[camids]
    loner = kind > 0.8
    x[loner] = torch.randn(int(loner.sum()), dim, generator=g) / dim**0.5
    x = x + 1.3 * torch.randn(n, dim, generator=g) / dim**0.5
    return torch.nn.functional.normalize(x, dim=1), camids.numpy(), identity.numpy()


def timed(function, repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=12936)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    features, camids, truth = features_with_outliers(args.n, args.dim)
    clustering = pseudo_labels(features, eps=0.6, min_samples=4, k1=30, k2=6)
    labels = clustering.labels
    outliers = np.flatnonzero(labels == -1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; N={args.n}, D={args.dim}: "
          f"{clustering.num_clusters} clusters, {outliers.size} outliers (clustering not timed)")

    rows = clustering.full_rows(outliers)
    oae_today, plain = timed(lambda: oae(features, labels, clustering.full_rows(outliers), clustering.neighbours,
                                         rho=1.0), args.repeats)
    lines = [("OAE nearest (today), full rows included", oae_today, None, plain.assigned)]
    for name, kwargs in (("OAE support rule", {"rule": "support"}),
                         ("OAE camera shift 0.1", {"camids": camids, "camera_shift": 0.1}),
                         ("OAE 5 rounds (CASTOR's count)", {"rounds": 5})):
        seconds, result = timed(lambda kw=kwargs: oae(features, labels, clustering.full_rows(outliers),
                                                      clustering.neighbours, rho=1.0, **kw), args.repeats)
        lines.append((name, seconds, oae_today, result.assigned))
    after = plain.labels
    geometry = cluster_geometry(features, after)
    cmlr_today, soft = timed(lambda: cmlr(features, after, lam=0.5, geometry=geometry), args.repeats)
    lines.append(("CMLR self (today)", cmlr_today, None, None))
    seconds, _ = timed(lambda: propagated(features, after, clustering.distances, lam=0.5, geometry=geometry),
                       args.repeats)
    lines.append(("CMLR propagated (radius 0.2, within the DBSCAN graph)", seconds, cmlr_today, None))
    previous = pseudo_labels(features, eps=0.55, min_samples=4, k1=30, k2=6).labels  # another clustering
    previous_soft = cmlr(features, previous, lam=0.5).soft_labels
    seconds, _ = timed(lambda: matched(after, previous, previous_soft, lam=0.5), args.repeats)
    lines.append(("CMLR matched (RLCC)", seconds, cmlr_today, None))
    prediction = (features[soft.sample_index] @ geometry.centroids.T / 0.05).softmax(dim=1).numpy()
    seconds, _ = timed(lambda: (oae_diagnostics(labels, after, plain.anchors, truth, camids),
                                cmlr_diagnostics(soft.soft_labels.numpy(), soft.sample_index, after, truth, prediction)),
                       args.repeats)
    lines.append(("diagnostics (OAE + CMLR, cluster event)", seconds, oae_today + cmlr_today, None))
    del rows
    for name, seconds, baseline, assigned in lines:
        ratio = f"x{seconds / baseline:.2f} of today's" if baseline else "baseline"
        extra = f", {assigned} assigned" if assigned is not None else ""
        print(f"{name:55s} {seconds:7.3f} s  {ratio}{extra}")


if __name__ == "__main__":
    main()
