"""Training that runs but learns nothing, caught: weights or gradients exploding, a degenerate
clustering, a loss stuck at exactly 0. Each finding is a `warning` event (the console, `show` and
the dashboard show it); where going on is pointless the run fails with what to change.

Thresholds, chosen to stay quiet on healthy runs (on 2026-12-02 the 12-epoch demo, the 2-epoch
CUHK03 run and the CUHK03 baseline, camera-proxy, centring and supervised runs raised none):
- weights: warn when their norm has grown WARN_GROWTH-fold since training started, fail at
  FAIL_GROWTH-fold (optim.lr=1e6 on a tiny demo grew them 2.9e7-fold by the first log interval);
- gradients: warn when the gradient norm exceeds WARN_GROWTH times the median of the first ones;
- clustering: warn when one cluster holds more than DOMINANT of the clustered images, or more
  than MOSTLY_OUTLIERS of the images are outliers; fail when there is a single cluster (the
  contrastive loss over one centroid is identically 0);
- loss: warn the first time an interval's mean loss is exactly 0; fail when a whole epoch is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

WARN_GROWTH = 100.0
FAIL_GROWTH = 1e6
DOMINANT = 0.5
MOSTLY_OUTLIERS = 0.95


def parameter_norm(module: torch.nn.Module) -> torch.Tensor:
    """The L2 norm of all parameters, as a device scalar (read it at log intervals only)."""
    return torch.linalg.vector_norm(torch.stack([p.detach().float().norm() for p in module.parameters()]))


def gradient_norm(module: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.zeros(())


def clustering_findings(labels: np.ndarray, eps: float, min_samples: int) -> tuple[list[str], str | None]:
    """(warnings, a reason to stop) of an epoch's pseudo-labels."""
    labels = np.asarray(labels)
    clustered = labels[labels >= 0]
    warnings = []
    if clustered.size:
        sizes = np.bincount(clustered)
        if sizes.size == 1:
            return [], (f"DBSCAN put all {clustered.size} clustered images into one cluster: the contrastive loss over "
                        f"one centroid is 0 and nothing is learnt; lower cluster.eps (now {eps:g})")
        share = sizes.max() / clustered.size
        if share > DOMINANT:
            warnings.append(f"one cluster holds {100 * share:.0f}% of the clustered images: cluster.eps = {eps:g} is "
                            "probably too large for these features; try a smaller one")
    outliers = float((labels < 0).mean()) if labels.size else 0.0
    if outliers > MOSTLY_OUTLIERS:
        warnings.append(f"{100 * outliers:.0f}% of the images are DBSCAN outliers and are not trained on: raise "
                        f"cluster.eps (now {eps:g}) or lower cluster.min_samples (now {min_samples})")
    return warnings, None


@dataclass
class Watch:
    """The run's norms and losses over time; `check_*` return (warning or None, reason to stop or None)."""

    first_weights: float | None = None
    first_gradients: list[float] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)
    zero_intervals: int = 0
    intervals: int = 0

    def _once(self, what: str, message: str) -> str | None:
        if what in self.warned:
            return None
        self.warned.add(what)
        return message

    def check_weights(self, norm: float, lr: float) -> tuple[str | None, str | None]:
        if self.first_weights is None:
            self.first_weights = norm
            return None, None
        growth = norm / max(self.first_weights, 1e-12)
        if not math.isfinite(norm) or growth >= FAIL_GROWTH:
            return None, (f"the weights exploded: their norm grew {growth:.1e}-fold since training started "
                          f"(now {norm:.3g}); lower optim.lr (now {lr:g})")
        if growth >= WARN_GROWTH:
            return self._once("weights", f"the weight norm grew {growth:.0f}-fold since training started: training "
                                         f"is probably diverging; consider a lower optim.lr (now {lr:g})"), None
        return None, None

    def check_gradients(self, norm: float, lr: float) -> str | None:
        if len(self.first_gradients) < 5:
            self.first_gradients.append(norm)
            return None
        typical = float(np.median(self.first_gradients))
        if math.isfinite(norm) and norm > WARN_GROWTH * max(typical, 1e-12):
            return self._once("gradients", f"the gradient norm is {norm / typical:.0f} times its early value: "
                                           f"training is probably unstable; consider a lower optim.lr (now {lr:g})")
        return None

    def check_loss(self, mean_loss: float) -> str | None:
        self.intervals += 1
        if mean_loss != 0.0:
            return None
        self.zero_intervals += 1
        return self._once("loss", "the loss is exactly 0: the batches teach nothing (a single cluster, or a loss "
                                  "weight of 0?)")

    def end_of_epoch(self, epoch: int) -> str | None:
        """A reason to stop when every interval of the epoch had a loss of exactly 0."""
        pointless = self.intervals > 0 and self.zero_intervals == self.intervals
        self.intervals = self.zero_intervals = 0
        if pointless:
            return (f"the loss was exactly 0 for the whole of epoch {epoch}: nothing is learnt; look at the clusters "
                    "of this epoch (cluster.eps) and the loss weights")
        return None
