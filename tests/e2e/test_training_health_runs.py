"""Real runs that learn nothing fail saying what to change: exploding weights, one cluster, a NaN."""

from __future__ import annotations

import pytest
from enginefixtures import events_of, main_in_process, tiny_config, tiny_sets

from oaecmlr.engine.launch import start_run
from oaecmlr.errors import RunFailed

main = main_in_process


def test_exploding_weights_fail_the_run_with_what_to_change(tmp_path):
    config = tiny_config("run.epochs=3")
    config.optim.lr = 1e6  # beyond what the command line accepts (optim.lr <= 10): the health check still acts
    with pytest.raises(RunFailed, match=r"weights exploded.*lower optim.lr \(now 1e\+06\)"):
        start_run(config, "boom", str(tmp_path), preset="demo")
    assert events_of(tmp_path / "boom")[-1]["event"] == "failure"


def test_a_single_cluster_fails_the_run_with_what_to_change(tmp_path):
    with pytest.raises(RunFailed, match=r"one cluster.*lower cluster.eps \(now 0.99\)"):
        start_run(tiny_config("cluster.eps=0.99", "cluster.camera_norm=none"), "one", str(tmp_path), preset="demo")


def test_a_sweep_whose_runs_all_fail_exits_non_zero(tmp_path, monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "sweep", "demo", "--grid", "cluster.eps=0.99", "--set", "cluster.camera_norm=none",
                        "--seeds", "1",
                        "--runs-dir", tmp_path, *tiny_sets())
    assert code == 1 and "1 failed" in err


def test_a_nan_before_any_checkpoint_does_not_claim_one_was_kept(tmp_path, monkeypatch):
    from oaecmlr.core.memory import ClusterMemory

    original = ClusterMemory.forward
    monkeypatch.setattr(ClusterMemory, "forward", lambda self, *a, **k: original(self, *a, **k) * float("nan"))
    with pytest.raises(RunFailed, match="there is no checkpoint yet") as failure:
        start_run(tiny_config(), "early", str(tmp_path), preset="demo")
    assert "kept" not in str(failure.value)
