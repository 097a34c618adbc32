"""Test tiers run in order: fast unit tests first, then synthetic end-to-end runs (`e2e`), then the
real-data tier (`realdata`, skipped when ../shared/data is absent)."""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    def tier(item) -> int:
        if item.get_closest_marker("realdata"):
            return 2
        if item.get_closest_marker("e2e"):
            return 1
        return 0

    items.sort(key=tier)  # stable: file order is kept within a tier
