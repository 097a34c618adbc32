"""The `unit` tier (the fast tier: no end-to-end run, no real data):
every test in this folder, by its folder (tests/tiers.py)."""

from tiers import marks_its_folder

pytest_collection_modifyitems = marks_its_folder("unit", __file__)
