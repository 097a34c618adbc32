"""The preset TOML files (`oaecmlr run PRESET`), package data read with importlib.resources."""
