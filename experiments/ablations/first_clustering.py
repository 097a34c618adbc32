"""What the first clustering of a run looks like, plain against camera-aware, at several eps:
clusters, clustered share, cross-camera share and purity (a diagnostic against the true ids; it
never reaches training). Features: the ImageNet backbone before any training, as epoch 1 sees them.

    python experiments/ablations/first_clustering.py --data-root data/cuhk03 --pretrained mobilenet_v2-b0353104.pth
"""

from __future__ import annotations

import argparse

import torch

from oaecmlr.config import load_config
from oaecmlr.core.camera_norm import camera_normalise
from oaecmlr.core.diagnostics import camera_spread, purity
from oaecmlr.core.pseudo_labelling import pseudo_labels
from oaecmlr.engine.features import extract_features
from oaecmlr.engine.rundata import load_run_data
from oaecmlr.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cuhk03")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--eps", default="0.5,0.6,0.7")
    args = parser.parse_args()
    config = load_config(args.preset, sets=[f"data.root={args.data_root}", f"model.pretrained={args.pretrained}"])
    cluster = config.cluster
    data = load_run_data(config.data)
    model = build_model(config.model.arch, config.model.pretrained, config.model.pooling, config.model.last_stride)
    with torch.no_grad():
        features = extract_features(model, data.train.images, out_size=(config.data.height, config.data.width),
                                    batch_size=config.data.eval_batch, device=torch.device("cpu"))
    cams, pids = data.train.camids, data.train.pids
    print("| distance | eps | clusters | clustered | cross-camera clusters | images in cross-camera clusters | purity |")
    print("|---|---|---|---|---|---|---|")
    for norm in ("none", "mean"):
        x = camera_normalise(features, cams, norm)
        for camera_aware in (False, True):
            extra = (dict(camids=cams, k1_intra=cluster.k1_intra, k1_inter=cluster.k1_inter, k2_intra=cluster.k2_intra,
                          k2_inter=cluster.k2_inter) if camera_aware else {})
            name = ("CA-Jaccard" if camera_aware else "plain Jaccard") + (", per-camera centring" if norm != "none" else "")
            for eps in (float(e) for e in args.eps.split(",")):
                labels = pseudo_labels(x, eps=eps, min_samples=cluster.min_samples, k1=cluster.k1, k2=cluster.k2, **extra).labels
                spread = camera_spread(labels, cams)
                print(f"| {name} | {eps} | {labels.max() + 1} | {100 * (labels >= 0).mean():.1f} % | "
                      f"{100 * spread['cross_camera']:.1f} % | {100 * spread['cross_camera_images']:.1f} % | "
                      f"{100 * purity(labels, pids):.1f} % |", flush=True)


if __name__ == "__main__":
    main()
