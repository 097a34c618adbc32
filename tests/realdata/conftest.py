"""The `realdata` tier (real images and weights from a shared/ folder, skipped when absent):
every test in this folder, by its folder (tests/tiers.py)."""

from tiers import marks_its_folder

pytest_collection_modifyitems = marks_its_folder("realdata", __file__)
