"""The real CUHK03 subset loads as a subset of CUHK03-NP labeled (skipped when it is absent)."""

from __future__ import annotations

import warnings

import pytest
from realpaths import REAL_CUHK03

from oaecmlr.data.datasets import load_dataset
from oaecmlr.data.records import DatasetNote


@pytest.mark.skipif(not REAL_CUHK03.is_dir(), reason=f"real data absent: {REAL_CUHK03}")
def test_real_cuhk03_is_a_subset_of_cuhk03_np():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_dataset("cuhk03", REAL_CUHK03)
    assert [w.category for w in caught] == [DatasetNote]  # a note, no count warning
    assert "is a subset of CUHK03-NP labeled: train 7,239 images / 743 ids, query 451 / 100, gallery 487 / 100" \
        in str(caught[0].message)
    assert splits.variant == "labeled" and splits.root == str(REAL_CUHK03)
    stats = splits.stats()
    assert (stats["train"]["images"], stats["train"]["ids"], stats["train"]["cams"]) == (7239, 743, 2)
    assert (stats["query"]["images"], stats["query"]["ids"]) == (451, 100)
    assert (stats["gallery"]["images"], stats["gallery"]["ids"]) == (487, 100)
    assert {r.camid for r in splits.query} == {0} and {r.camid for r in splits.gallery} == {1}
