"""Features are extracted in float32 even where training runs in bf16, as the published runs did."""

from __future__ import annotations

import torch


def test_features_are_extracted_in_float32_even_when_training_uses_bf16(tmp_path, monkeypatch):
    from enginefixtures import tiny_config

    from oaecmlr.engine import inference
    from oaecmlr.engine import loop as loop_module
    from oaecmlr.engine.features import extract_features
    from oaecmlr.engine.rundata import load_run_data
    from oaecmlr.engine.train_process import build_loop
    from oaecmlr.store.runs import RunDir

    monkeypatch.setattr(loop_module, "fast_bf16", lambda device: True)  # as on CUDA or an AVX512-BF16 CPU
    monkeypatch.setattr(inference, "fast_bf16", lambda device: True)
    config = tiny_config("train.amp=true", "train.channels_last=false")
    data = load_run_data(config.data)
    loop = build_loop(config, RunDir(tmp_path), data, torch.device("cpu"), None)
    assert loop.amp and not loop.extraction.amp
    size = (config.data.height, config.data.width)
    cpu = torch.device("cpu")
    float32 = extract_features(loop.core, data.query.images, out_size=size, batch_size=config.data.eval_batch,
                               device=cpu, amp=False)
    bf16 = extract_features(loop.core, data.query.images, out_size=size, batch_size=config.data.eval_batch,
                            device=cpu, amp=True)
    assert torch.equal(loop.extract(data.query.images), float32)
    assert not torch.equal(float32, bf16)  # the setting is not moot: bf16 features differ
