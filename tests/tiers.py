"""The test tiers are folders: `tests/unit`, `tests/e2e` and `tests/realdata`. Each folder's
conftest.py marks every test in it with the tier's marker, so `-m e2e` selects by folder and a test
never lands in the fast tier because someone forgot a marker."""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "e2e", "realdata")  # the order `python -m pytest` runs them in (tests/conftest.py)


def marks_its_folder(tier: str, conftest: str):
    """The `pytest_collection_modifyitems` hook of the conftest.py at `conftest`: mark every test
    under its folder with `tier`, before tests/conftest.py sorts the tiers."""
    folder, mark = Path(conftest).resolve().parent, getattr(pytest.mark, tier)

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(items):
        for item in items:
            if folder in Path(item.path).resolve().parents:
                item.add_marker(mark)

    return pytest_collection_modifyitems
