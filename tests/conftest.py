"""Test tiers run in order: fast unit tests first (`tests/unit`), then synthetic end-to-end runs
(`tests/e2e`), then the real-data tier (`tests/realdata`, skipped when ../shared/data is absent).
Each folder's conftest.py marks its tests (tests/tiers.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from tiers import TIERS

# CI replays the same examples on every run (no database, derandomised), so a rare case can never
# fail one day and pass the next; local runs draw new examples and keep failures in .hypothesis/.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config, items):
    """Run the tiers in order; a test outside the tier folders is an error, not a silent member of one."""
    def tier(item) -> int:
        marked = [index for index, name in enumerate(TIERS) if item.get_closest_marker(name)]
        if not marked:
            raise pytest.UsageError(f"{item.nodeid}: put the test in tests/unit, tests/e2e or tests/realdata "
                                    "(its folder is its tier)")
        return max(marked)

    items.sort(key=tier)  # stable: file order is kept within a tier
