"""Where the real-data tier finds the real images and weights: ../shared beside the repository, or
the folder OAECMLR_SHARED names. One definition, so every real-data test skips and runs alike."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(os.environ.get("OAECMLR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
REAL_CUHK03 = SHARED / "data" / "cuhk03-market"
REAL_MARKET = SHARED / "data" / "market-subset"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet.pth"
