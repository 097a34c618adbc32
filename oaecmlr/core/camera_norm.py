"""Per-camera feature normalisation before clustering: the camera-bias baseline of the camera-aware
re-ID papers (e.g. Zhuang et al., "Rethinking the Distribution Gap of Person Re-identification with
Camera-based Batch Normalization", ECCV 2020, applied here to features instead of BatchNorm).

"mean" subtracts each camera's mean feature from its samples; "meanstd" also divides each dimension
by the camera's standard deviation; both renormalise the rows. "none" returns the features unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("none", "mean", "meanstd")
_EPS = 1e-6


def camera_normalise(features: torch.Tensor, camids, mode: str = "mean") -> torch.Tensor:
    """L2-normalised rows of `features` centred (and scaled) per camera."""
    if mode not in MODES:
        raise ValueError(f"camera normalisation must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        return features
    cams = torch.as_tensor(np.asarray(camids), device=features.device).long()
    if cams.shape != (features.shape[0],):
        raise ValueError(f"camids must hold one camera per feature row: {tuple(cams.shape)} for {features.shape[0]} rows")
    out = features.float().clone()
    for camera in torch.unique(cams).tolist():
        rows = cams == camera
        part = out[rows]
        part = part - part.mean(dim=0, keepdim=True)
        if mode == "meanstd" and part.shape[0] > 1:
            part = part / part.std(dim=0, keepdim=True).clamp_min(_EPS)
        out[rows] = part
    zero = out.norm(dim=1) < _EPS  # a camera of one sample (or identical ones) centres to 0: keep it as it was
    out[zero] = features[zero].float()
    return F.normalize(out, dim=1)
