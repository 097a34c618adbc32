"""Time and peak memory of `pseudo_labels` at Market-1501 (12,936), MSMT17 (32,621) and 100,000
images, D = 2048, against the dense O(N^2) reference measured in the same run where it fits.

    python benchmarks/bench_pseudo_labels.py                  # all sizes, CPU (and CUDA if present)
    python benchmarks/bench_pseudo_labels.py --sizes 12936 --device cpu
    python benchmarks/bench_pseudo_labels.py --sizes 12936 --device cpu --camera   # CA-Jaccard against plain

`--camera` measures the camera-aware pseudo-labels (CA-Jaccard, six cameras, published k's) beside
the plain ones in the same run, instead of the dense reference.

Each measurement runs in a fresh subprocess so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def clustered_features(n: int, dim: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-ID-like features: ~17 images per identity around identity centres, plus camera offsets
    (six cameras); returns the features and the cameras."""
    g = torch.Generator().manual_seed(seed)
    ids = max(1, n // 17)
    centres = torch.nn.functional.normalize(torch.randn(ids, dim, generator=g), dim=1)
    cameras = 0.35 * torch.nn.functional.normalize(torch.randn(6, dim, generator=g), dim=1)
    identity, camids = torch.randint(0, ids, (n,), generator=g), torch.randint(0, 6, (n,), generator=g)
    x = centres[identity] + cameras[camids]
    x = x + 0.55 * torch.randn(n, dim, generator=g) / dim**0.5 * 2
    return torch.nn.functional.normalize(x, dim=1).to(device), camids


def measure(kind: str, n: int, dim: int, device: str) -> dict:
    """One measurement in this process (called in a subprocess by main)."""
    features, camids = clustered_features(n, dim, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    if kind in ("ours", "camera"):
        from oaecmlr import pseudo_labels

        camera = {"camids": camids} if kind == "camera" else {}
        pseudo_labels(features[:2000], **({"camids": camids[:2000]} if camera else {}))  # warm-up on a small slice
        start = time.perf_counter()
        result = pseudo_labels(features, **camera)
        stages = {k: round(v, 3) for k, v in result.timings.items()}
        clusters, outliers, backend = result.num_clusters, result.num_outliers, result.knn_backend
    else:
        sys.path.insert(0, str(HERE.parent / "tests"))
        import numpy as np
        from oracles import dense_jaccard  # the tests' oracle, in float32 as the widely copied code
        from sklearn.cluster import DBSCAN

        from oaecmlr.core.knn import knn

        ranked = knn(features.cpu(), 30).index.numpy()  # as that code takes faiss's ranked lists
        dist = dense_jaccard(features.cpu().numpy(), 30, 6, dtype=np.float32, ranked=ranked)
        mid = time.perf_counter()
        labels = DBSCAN(eps=0.6, min_samples=4, metric="precomputed", n_jobs=-1).fit_predict(dist)
        stages = {"jaccard": round(mid - start, 3), "dbscan": round(time.perf_counter() - mid, 3)}
        clusters, outliers, backend = int(labels.max()) + 1, int((labels == -1).sum()), "dense"
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = {"kind": kind, "n": n, "dim": dim, "device": device, "seconds": round(seconds, 3), "stages": stages,
           "peak_rss_gb": round(peak_gb, 2), "clusters": clusters, "outliers": outliers, "backend": backend}
    if device.startswith("cuda"):
        out["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def run_child(kind: str, n: int, dim: int, device: str, timeout: float) -> dict | None:
    command = [sys.executable, __file__, "--child", kind, str(n), str(dim), device]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "n": n, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"kind": kind, "n": n, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="12936,32621,100000")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--device", default="all", help="cpu, cuda or all")
    parser.add_argument("--dense-max", type=int, default=13000, help="largest N for the dense reference")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--camera", action="store_true", help="CA-Jaccard beside the plain pseudo-labels")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = arguments().parse_args()
    if args.child:
        kind, n, dim, device = args.child
        print(json.dumps(measure(kind, int(n), int(dim), device)))
        return
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    for device in devices:
        for n in (int(s) for s in args.sizes.split(",")):
            ours = run_child("ours", n, args.dim, device, args.timeout)
            print(json.dumps(ours))
            if args.camera:
                camera = run_child("camera", n, args.dim, device, args.timeout)
                print(json.dumps(camera))
                if "error" not in ours and "error" not in camera:
                    print(f"N={n} {device}: camera-aware {camera['seconds']:.1f} s / {camera['peak_rss_gb']:.2f} GB "
                          f"peak, plain {ours['seconds']:.1f} s / {ours['peak_rss_gb']:.2f} GB: "
                          f"x{camera['seconds'] / ours['seconds']:.2f} time, "
                          f"x{camera['peak_rss_gb'] / ours['peak_rss_gb']:.2f} memory; clusters {camera['clusters']} "
                          f"vs {ours['clusters']}")
            elif device == "cpu" and n <= args.dense_max:
                dense = run_child("dense", n, args.dim, device, args.timeout)
                print(json.dumps(dense))
                if "error" not in ours and "error" not in dense:
                    print(f"N={n} {device}: ours {ours['seconds']:.1f} s / {ours['peak_rss_gb']:.2f} GB peak, dense "
                          f"{dense['seconds']:.1f} s / {dense['peak_rss_gb']:.2f} GB peak: "
                          f"{dense['seconds'] / ours['seconds']:.1f}x faster, "
                          f"{dense['peak_rss_gb'] / ours['peak_rss_gb']:.1f}x less memory; same clusters "
                          f"{ours['clusters']} vs {dense['clusters']}, outliers {ours['outliers']} vs {dense['outliers']}")
            elif "error" not in ours:
                print(f"N={n} {device}: ours {ours['seconds']:.1f} s, {ours.get('peak_gpu_gb', ours['peak_rss_gb'])} GB peak "
                      "(dense reference skipped: it needs 3 N x N float32 arrays)")


if __name__ == "__main__":
    main()
