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
    """Re-ID-like features with what OAE works on: ~13 images per identity over six cameras. The identities
    crowd a 10-dimensional subspace (so DBSCAN merges some of them, as it does on real images) and each
    person looks different in each camera (a random view offset of up to 3x the identity's own direction),
    so images from an unusual view fall outside their cluster; a tenth of the images are loners. At Market
    size this leaves a few thousand outliers, some of which pass constraints A and B. Returns features,
    cameras and identities."""
    g = torch.Generator().manual_seed(seed)
    ids, sub = max(2, n // 13), 10
    basis = torch.linalg.qr(torch.randn(dim, sub, generator=g))[0].T
    centres = torch.nn.functional.normalize(torch.randn(ids, sub, generator=g), dim=1) @ basis
    view_size = 3.0 * torch.rand(ids, 6, 1, generator=g)
    views = view_size * torch.nn.functional.normalize(torch.randn(ids, 6, sub, generator=g), dim=2) @ basis
    identity, camids = torch.randint(0, ids, (n,), generator=g), torch.randint(0, 6, (n,), generator=g)
    x = centres[identity] + views[identity, camids] + 0.8 * torch.randn(n, dim, generator=g) / dim**0.5
    loner = torch.rand(n, generator=g) < 0.1
    x[loner] = torch.randn(int(loner.sum()), dim, generator=g)
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
    lines = [("OAE nearest (today), full rows included", oae_today, None, plain)]
    for name, kwargs in (("OAE support rule", {"rule": "support"}),
                         ("OAE camera shift 0.1", {"camids": camids, "camera_shift": 0.1}),
                         ("OAE 5 rounds (CASTOR's count)", {"rounds": 5})):
        seconds, result = timed(lambda kw=kwargs: oae(features, labels, clustering.full_rows(outliers),
                                                      clustering.neighbours, rho=1.0, **kw), args.repeats)
        lines.append((name, seconds, oae_today, result))
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
    for name, seconds, baseline, result in lines:
        ratio = f"x{seconds / baseline:.2f} of today's" if baseline else "baseline"
        extra = (f", {result.passed_neighbourhood} pass A, {result.passed_centroid} pass B, {result.assigned} assigned"
                 if result is not None else "")
        print(f"{name:55s} {seconds:7.3f} s  {ratio}{extra}")


if __name__ == "__main__":
    main()
