"""Test tiers run in order: fast unit tests first, then synthetic end-to-end runs (`e2e`), then the
real-data tier (`realdata`, skipped when ../shared/data is absent)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI replays the same examples on every run (no database, derandomised), so a rare case can never
# fail one day and pass the next; local runs draw new examples and keep failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    def tier(item) -> int:
        if item.get_closest_marker("realdata"):
            return 2
        if item.get_closest_marker("e2e"):
            return 1
        return 0

    items.sort(key=tier)  # stable: file order is kept within a tier
