"""The `e2e` tier (synthetic end-to-end CPU runs, seconds to minutes each):
every test in this folder, by its folder (tests/tiers.py)."""

from tiers import marks_its_folder

pytest_collection_modifyitems = marks_its_folder("e2e", __file__)
