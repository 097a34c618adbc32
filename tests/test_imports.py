"""Import hygiene: the core needs only torch, numpy and scipy (no UI, plotting or optional backends)."""

import json
import subprocess
import sys
from pathlib import Path

CORE = ["knn", "jaccard", "dbscan", "pseudo_labelling", "oae", "cmlr", "memory", "evaluation", "rerank",
        "diagnostics", "clusters"]
FORBIDDEN = ["typer", "textual", "rich", "faiss", "sklearn", "matplotlib"]


def imported_after(statement: str) -> list[str]:
    code = (f"import sys, json\n{statement}\n"
            f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_probe_detects_a_forbidden_import():
    assert imported_after("import rich") == ["rich"]


def test_core_imports_stay_light():
    """One interpreter (importing torch takes seconds): the package, every core module, and the
    public API."""
    statement = "\n".join(
        ["import oaecmlr"] + [f"import oaecmlr.{name}" for name in CORE] + [
            "from oaecmlr import jaccard_distance, dbscan, pseudo_labels, oae, cmlr, evaluate_rank, re_rank",
            "assert all(callable(f) for f in (jaccard_distance, dbscan, pseudo_labels, oae, cmlr, evaluate_rank,"
            " re_rank))",
            "import importlib",
            f"assert all(importlib.import_module('oaecmlr.' + n).__name__ == 'oaecmlr.' + n for n in {CORE!r})",
        ])
    assert imported_after(statement) == []
