"""The training health checks in isolation: one cluster, exploding weights, a loss stuck at exactly 0."""

from __future__ import annotations


def test_health_findings_in_isolation():
    import numpy as np

    from oaecmlr.engine.health import Watch, clustering_findings

    warnings, fatal = clustering_findings(np.array([0] * 90 + [1] * 5 + [-1] * 5), 0.6, 4)
    assert fatal is None and "one cluster holds 95%" in warnings[0]
    warnings, fatal = clustering_findings(np.array([-1] * 99 + [0]), 0.6, 4)
    assert "all 1 clustered images into one cluster" in fatal
    watch = Watch()
    assert watch.check_weights(10.0, 1e-3) == (None, None)
    warning, fatal = watch.check_weights(10.0 * 200, 1e-3)
    assert "grew 200-fold" in warning and fatal is None
    assert watch.check_weights(10.0 * 300, 1e-3) == (None, None)  # warned once
    assert "exploded" in watch.check_weights(float("inf"), 1e-3)[1]
    assert watch.check_loss(0.0) is not None and watch.check_loss(0.0) is None
    assert "exactly 0 for the whole of epoch 3" in watch.end_of_epoch(3)
    assert watch.check_loss(1.0) is None and watch.end_of_epoch(4) is None
