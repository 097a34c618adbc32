"""Typed evaluation results (`oaecmlr/store/metrics.py`) keep the layouts files have always held:
the `eval` event's fields, `End.best` and a checkpoint's `best` ({"epoch", "mAP", ...})."""

from __future__ import annotations

import dataclasses

from oaecmlr.store.metrics import Best, Evaluation, Metrics
from oaecmlr.store.schema import End, Eval, parse_event, to_record

METRICS = Metrics(mAP=0.419, rank1=0.508, rank5=0.7, rank10=0.8, mINP=0.12)


def test_an_evaluation_fills_the_eval_event_field_for_field():
    scored = Evaluation(metrics=METRICS, num_query=240, num_gallery=460, skipped_queries=1, rerank=False, seconds=2.5)
    eval_fields = {f.name for f in dataclasses.fields(Eval)} - {"epoch", "time"}
    assert set(scored.to_dict()) == eval_fields
    event = Eval(epoch=2, **scored.to_dict())
    assert parse_event(to_record(event)) == event
    assert Metrics.from_dict(to_record(event)) == METRICS == event.metrics


def test_best_reads_and_writes_the_layout_of_old_checkpoints_and_end_events():
    written_before = {"epoch": 4, "mAP": 0.419, "rank1": 0.508, "rank5": 0.7, "rank10": 0.8, "mINP": 0.12}
    best = Best.from_dict(written_before)
    assert best == Best(epoch=4, metrics=METRICS)
    assert list(best.to_dict().items()) == list(written_before.items())  # same keys, same order
    assert Best.from_dict(None) is None
    end = End(best=best.to_dict())
    assert Best.from_dict(parse_event(to_record(end)).best) == best


def test_a_comparison_is_typed_and_its_json_keeps_the_layout_compare_always_printed(tmp_path):
    from runfixtures import make_run

    from oaecmlr.store.compare import compare, run_record
    from oaecmlr.store.runs import RunDir

    make_run(tmp_path, "a", base_map=0.10)
    make_run(tmp_path, "b", state="running", epochs=4, base_map=0.12)
    comparison = compare([run_record(RunDir(tmp_path / name)) for name in ("a", "b")])
    first = comparison.runs[0]
    summary = run_record(RunDir(tmp_path / "a")).summary
    assert first.best == Best(epoch=summary.best.epoch, metrics=summary.best.metrics)
    assert first.final == Best(epoch=summary.final.epoch, metrics=summary.final.metrics)
    plain = comparison.to_json()
    assert list(plain) == ["runs", "deltas", "clusters", "config_diff", "warnings", "seed_groups"]
    assert list(plain["runs"][0]) == ["name", "status", "dataset", "epoch", "epochs", "best", "final", "time_to_best_s",
                                      "elapsed_s", "world_size", "global_batch", "provenance", "last_clusters"]
    assert plain["runs"][0]["best"] == {"epoch": summary.best.epoch, **{k: getattr(summary.best, k) for k in
                                                                         ("mAP", "rank1", "rank5", "rank10", "mINP")}}
