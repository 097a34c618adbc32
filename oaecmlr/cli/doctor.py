"""`oaecmlr doctor`: each dependency as ok or missing, with its fix."""

from __future__ import annotations

import importlib.util
import os
import platform

from rich.table import Table

from oaecmlr.cli.common import console, escape
from oaecmlr.store.runs import runs_root


def doctor_report(runs_dir: str | None) -> bool:
    """Print each dependency as ok or missing with its fix; True when nothing required is missing."""
    import torch

    rows = []

    def check(name: str, ok: bool, detail: str, fix: str = "", required: bool = False):
        rows.append((name, ok, detail, fix, required))

    check("python", True, platform.python_version())
    check("torch", True, f"{torch.__version__} ({torch.get_num_threads()} CPU threads)", required=True)
    cuda = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    check("cuda", cuda, ", ".join(f"{i}: {n}" for i, n in enumerate(names)) or "no CUDA device",
          "install a CUDA build of torch on a GPU machine; --gpus cpu works without it")
    faiss = importlib.util.find_spec("faiss") is not None
    faiss_gpu = False
    if faiss:
        import faiss as faiss_module
        faiss_gpu = hasattr(faiss_module, "StandardGpuResources")
    check("faiss (CPU kNN)", faiss, "installed" if faiss else "missing (torch kNN is used)", "pip install 'oaecmlr[faiss]'")
    check("faiss GPU", faiss_gpu, "installed" if faiss_gpu else "missing (torch kNN on CUDA is used)",
          "pip install 'oaecmlr[gpu]'")
    from oaecmlr.core.knn import resolve_backend
    check("kNN auto backend", True, resolve_backend("auto", torch.device("cuda" if cuda else "cpu")))
    for module, extra in (("textual", "tui"), ("matplotlib", "plot"), ("pynvml", "gpu"), ("psutil", "tui")):
        present = importlib.util.find_spec(module) is not None
        check(module, present, "installed" if present else "missing", f"pip install 'oaecmlr[{extra}]'")
    root = runs_root(runs_dir)
    existing = next(p for p in [root.resolve(), *root.resolve().parents] if p.exists())  # where mkdir would start
    writable = existing.is_dir() and os.access(existing, os.W_OK)
    check("runs folder", writable, str(root.resolve()), "pass --runs-dir or set OAECMLR_RUNS to a writable folder", True)

    table = Table("check", "status", "detail", "fix")
    for name, ok, detail, fix, required in rows:
        status = "[green]ok[/]" if ok else ("[red]missing[/]" if required else "[yellow]missing[/]")
        table.add_row(name, status, escape(detail), "" if ok else escape(fix))
    console.print(table)
    return all(ok for _, ok, _, _, required in rows if required)
