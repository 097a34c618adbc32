"""The folder layout is the architecture (docs/architecture.md), and these tests hold it:
- who may import whom, read from the source (ast) of every module;
- the core needs only torch, numpy and scipy; config, store, the CLI's start-up and the dashboard
  need no torch (checked in fresh interpreters);
- the names config checks (architectures, kNN backends, datasets, ...) are the implementations' own;
- a core module is a module: `import oaecmlr.core.oae as m` gives the module, not the function;
- the hyper-parameters of the core's public functions, the memories, `extract_features` and
  `apply_plan` are keyword-only.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"oaecmlr": ROOT / "oaecmlr", "oaecmlr_tui": ROOT / "tui"}
STDLIB = set(sys.stdlib_module_names)

# Layer -> the oaecmlr layers and third-party packages its modules may import at module level.
RULES = {
    "oaecmlr": ({"oaecmlr"}, set()),  # the package __init__: lazy re-exports only (checked below)
    "oaecmlr.errors": (set(), set()),
    "oaecmlr.formatting": (set(), set()),
    "oaecmlr.tempfiles": (set(), set()),
    "oaecmlr.core": ({"oaecmlr.core"}, {"torch", "numpy", "scipy"}),
    "oaecmlr.config": ({"oaecmlr.config", "oaecmlr.errors"}, set()),
    "oaecmlr.store": ({"oaecmlr.store", "oaecmlr.config", "oaecmlr.errors", "oaecmlr.tempfiles", "oaecmlr.formatting"},
                      set()),
    "oaecmlr.data": ({"oaecmlr.data", "oaecmlr.errors", "oaecmlr.tempfiles"}, {"torch", "numpy", "PIL"}),
    "oaecmlr.models": ({"oaecmlr.models", "oaecmlr.errors"}, {"torch"}),
    "oaecmlr.engine": ({"oaecmlr.engine", "oaecmlr.core", "oaecmlr.data", "oaecmlr.models", "oaecmlr.config",
                        "oaecmlr.store", "oaecmlr.errors", "oaecmlr.tempfiles"}, {"torch", "numpy", "scipy"}),
    "oaecmlr.cli": ({"oaecmlr", "oaecmlr.cli", "oaecmlr.config", "oaecmlr.store", "oaecmlr.errors", "oaecmlr.tempfiles",
                     "oaecmlr.formatting"}, {"typer", "rich"}),
    "oaecmlr_tui": ({"oaecmlr_tui", "oaecmlr.config", "oaecmlr.store", "oaecmlr.errors", "oaecmlr.formatting"},
                    {"textual", "rich"}),
}
# CLI modules that serve one command each and may load the engine (app.py imports them lazily).
ENGINE_FACING_CLI = {
    "oaecmlr.cli.evaluate": ({"oaecmlr.engine", "oaecmlr.models", "oaecmlr.data"}, {"torch"}),
    "oaecmlr.cli.visrank": (set(), {"torch", "numpy", "PIL"}),
    "oaecmlr.cli.datacheck": ({"oaecmlr.data"}, set()),
}
# Never, not even inside a function: the core and the store do not reach up.
NEVER = {"oaecmlr.core": ("oaecmlr.engine", "oaecmlr.store", "oaecmlr.cli", "oaecmlr_tui", "oaecmlr.config"),
         "oaecmlr.store": ("oaecmlr.engine", "oaecmlr.cli", "oaecmlr_tui", "torch"),
         "oaecmlr.config": ("oaecmlr.engine", "oaecmlr.store", "oaecmlr.cli", "oaecmlr_tui", "torch"),
         "oaecmlr.engine": ("oaecmlr.cli", "oaecmlr_tui"),
         "oaecmlr.data": ("oaecmlr.engine", "oaecmlr.store", "oaecmlr.cli", "oaecmlr_tui")}


def modules():
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join((package, *parts)), path


def imports(name: str, path: Path):
    """(imported module, at module level?) for every import statement of a module."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            if target == "__future__":
                continue
            if node.module is None:  # `from . import actions`: each name is a module
                for alias in node.names:
                    yield f"{target}.{alias.name}", id(node) in top
            else:
                yield target, id(node) in top


def layer(name: str) -> str:
    if name in ENGINE_FACING_CLI:
        return name
    candidates = [prefix for prefix in RULES if name == prefix or name.startswith(prefix + ".")]
    return max(candidates, key=len)


def within(target: str, prefixes) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def test_every_module_keeps_to_its_layer():
    broken = []
    for name, path in modules():
        lay = layer(name)
        allowed, third_party = ENGINE_FACING_CLI.get(name, (set(), set()))
        allowed = allowed | RULES[layer(name) if lay not in ENGINE_FACING_CLI else "oaecmlr.cli"][0]
        third_party = third_party | RULES[lay if lay in RULES else "oaecmlr.cli"][1]
        for target, top_level in imports(name, path):
            head = target.split(".")[0]
            for prefix, forbidden in NEVER.items():
                if within(name, [prefix]) and within(target, forbidden):
                    broken.append(f"{name} imports {target} (never allowed)")
            if not top_level:
                continue
            if head in ("oaecmlr", "oaecmlr_tui"):
                if target == "oaecmlr" and lay != "oaecmlr.core":
                    continue  # the package itself: its version and lazy names, no torch
                if not within(target, allowed):
                    broken.append(f"{name} imports {target} at module level")
            elif head not in STDLIB and head not in third_party:
                broken.append(f"{name} imports third-party {target} at module level")
    assert not broken, "\n".join(broken)


def test_the_rules_see_imports():
    """The checker itself: relative imports resolve, and function-level imports are told apart."""
    found = dict(imports("oaecmlr.cli.app", ROOT / "oaecmlr" / "cli" / "app.py"))
    assert found["oaecmlr.cli.common"] is True and found["oaecmlr.cli.train"] is False
    tui = dict(imports("oaecmlr_tui.app", ROOT / "tui" / "app.py"))
    assert "oaecmlr_tui.actions" in tui and "oaecmlr_tui.runs_screen" in tui


def loaded_after(statement: str, watch: list[str]) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(m for m in {watch!r} if m in sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


CORE = sorted(p.stem for p in (ROOT / "oaecmlr" / "core").glob("*.py") if p.stem != "__init__")


def test_the_core_loads_only_torch_numpy_and_scipy():
    statement = "\n".join([f"import oaecmlr.core.{name}" for name in CORE] +
                          ["from oaecmlr import jaccard_distance, dbscan, pseudo_labels, oae, cmlr, evaluate_rank"])
    assert loaded_after(statement, ["typer", "textual", "rich", "faiss", "sklearn", "matplotlib", "oaecmlr.engine",
                                    "oaecmlr.store", "oaecmlr.config"]) == []
    assert loaded_after("import rich", ["rich"]) == ["rich"]  # the probe sees what it looks for


def test_config_store_cli_and_dashboard_load_no_torch():
    statement = "import oaecmlr, oaecmlr.config, oaecmlr.store.compare, oaecmlr.store.runs, oaecmlr.cli.app, " \
                "oaecmlr.cli.listing, oaecmlr.cli.show, oaecmlr.cli.control, oaecmlr.cli.compare_view, " \
                "oaecmlr.cli.train, oaecmlr.cli.sweep"
    assert loaded_after(statement, ["torch", "numpy", "textual"]) == []
    pytest.importorskip("textual")
    assert loaded_after("import oaecmlr_tui.app", ["torch", "numpy"]) == []


def test_core_modules_are_modules_and_the_public_names_functions():
    import oaecmlr

    for name in CORE:
        module = importlib.import_module(f"oaecmlr.core.{name}")
        assert type(module).__name__ == "module" and module.__name__ == f"oaecmlr.core.{name}"
    code = "import oaecmlr.core.oae as m, oaecmlr.core.knn as k; print(type(m).__name__, type(k).__name__)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == \
        ["module", "module"]
    assert oaecmlr.oae is importlib.import_module("oaecmlr.core.oae").oae
    assert callable(oaecmlr.pseudo_labels) and callable(oaecmlr.re_rank)
    with pytest.raises(AttributeError):
        oaecmlr.no_such_function  # noqa: B018


def test_config_names_are_the_implementations_names():
    from oaecmlr.config import settings
    from oaecmlr.core.knn import BACKENDS
    from oaecmlr.core.memory import MODES
    from oaecmlr.data.datasets import DATASETS
    from oaecmlr.engine.placement import MODES as CACHE_MODES
    from oaecmlr.models import ARCHS, POOLINGS

    assert set(settings.ARCHS) == set(ARCHS) and set(settings.POOLINGS) == set(POOLINGS)
    assert settings.KNN_BACKENDS == BACKENDS and settings.MEMORY_MODES == MODES
    assert settings.IMAGE_CACHE == CACHE_MODES
    assert {name: spec.aliases for name, spec in DATASETS.items()} == settings.DATASETS


WATCHING = '''
import functools, sys
sys.path.insert(0, {tests!r})
from runfixtures import make_run
from typer.testing import CliRunner
from oaecmlr.cli.app import app
make_run({root!r}, "a"); make_run({root!r}, "b", sets={{"run.seed": 1}})
runner = CliRunner()
for args in (["--help"], ["runs"], ["show", "a"], ["compare", "a", "b"], ["runs", "--format", "json"]):
    result = runner.invoke(app, [*args, *([] if args == ["--help"] else ["--runs-dir", {root!r}])])
    assert result.exit_code == 0, (args, result.output)
if {tui!r}:
    from oaecmlr_tui import app as dashboard
    mount = dashboard.Dashboard.on_mount
    def on_mount(self):
        mount(self)
        self.set_timer(1.0, self.exit)  # the first screen is drawn, then quit
    dashboard.Dashboard.on_mount = on_mount
    dashboard.Dashboard.run = functools.partialmethod(dashboard.Dashboard.run, headless=True)
    result = runner.invoke(app, ["tui", "--runs-dir", {root!r}])
    assert result.exit_code == 0, result.output
'''


def test_the_watching_commands_run_without_torch(tmp_path):
    """`--help`, `runs`, `show`, `compare` and the dashboard, really run, leave torch unloaded; and
    pydantic, which typer 0.29 loads for every option (+0.3 s: hence `typer<0.29`)."""
    tui = importlib.util.find_spec("textual") is not None
    statement = WATCHING.format(tests=str(ROOT / "tests"), root=str(tmp_path), tui=tui)
    assert loaded_after(statement, ["torch", "numpy", "scipy", "pydantic"]) == []


KEYWORD_ONLY = [("oaecmlr.core.oae", "oae"), ("oaecmlr.core.cmlr", "cmlr"),
                ("oaecmlr.core.pseudo_labelling", "pseudo_labels"), ("oaecmlr.core.memory", "ClusterMemory"),
                ("oaecmlr.core.camera_memory", "CameraProxyMemory"), ("oaecmlr.engine.features", "extract_features"),
                ("oaecmlr.engine.batchnorm", "apply_plan")]


@pytest.mark.parametrize("module, name", KEYWORD_ONLY)
def test_hyper_parameters_are_keyword_only(module, name):
    """Every parameter with a default is keyword-only: two adjacent numbers cannot be swapped silently."""
    import inspect

    function = getattr(importlib.import_module(module), name)
    parameters = inspect.signature(function).parameters.values()
    positional = [p.name for p in parameters if p.default is not p.empty and p.kind is not p.KEYWORD_ONLY]
    assert not positional, f"{module}.{name}: {positional} can be passed by position"


def test_every_test_lives_in_a_tier_folder_that_marks_it():
    """tests/unit, tests/e2e, tests/realdata: the folder is the tier (tests/tiers.py)."""
    from tiers import TIERS

    assert sorted(p.name for p in (ROOT / "tests").glob("test_*.py")) == []
    for tier in TIERS:
        assert f'marks_its_folder("{tier}", __file__)' in (ROOT / "tests" / tier / "conftest.py").read_text()
