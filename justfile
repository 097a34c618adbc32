# Recipes mirror the README's two commands.

# Install and run the built-in demo (synthetic data, 2 CPU cores, a few minutes).
demo:
    pip install torch==2.13.0 && pip install -e '.[tui,plot,faiss]' && oaecmlr run demo

# Install and run the test suite: fast unit tests first, then the end-to-end and real-data tiers.
test:
    pip install torch==2.13.0 && pip install -e '.[dev]' && python -m pytest -x -q

# Fast unit tests only.
unit:
    python -m pytest -q tests/unit

# Benchmarks print their figures and ratios to a baseline measured in the same run.
bench:
    python benchmarks/bench_pseudo_labels.py

lint:
    ruff check .
