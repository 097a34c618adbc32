"""What `show` and `doctor` print: tables for people, JSON for programs."""

from __future__ import annotations

import importlib.util
import os
import platform

import torch
from rich.table import Table

from oaecmlr.cli.common import console, pct, print_json
from oaecmlr.engine.config import read_toml
from oaecmlr.store.runs import find_run, run_summary, runs_root


def run_details(name: str, runs_dir: str | None) -> dict:
    run = find_run(name, runs_dir)
    summary = run_summary(run)
    summary["config"] = read_toml(run.config) if run.config.exists() else {}
    return summary


def show_run(name: str, runs_dir: str | None, fmt: str) -> None:
    details = run_details(name, runs_dir)
    if fmt == "json":
        print_json(details)
        return
    best = details["best"] or {}
    console.print(f"[bold]{details['name']}[/]  {details['status']}  dataset {details['dataset']}  "
                  f"epoch {details['epoch']}/{details['epochs']}  best mAP {pct(best.get('mAP'))} "
                  f"R1 {pct(best.get('rank1'))} (epoch {best.get('epoch', '-')})")
    if details.get("failure"):
        console.print(f"[red]failure:[/] {details['failure'].get('error')}")
    evaluations = Table("epoch", "mAP", "R1", "R5", "R10", "mINP", title="evaluations")
    for e in details["evaluations"]:
        evaluations.add_row(str(e["epoch"]), pct(e["mAP"]), pct(e["rank1"]), pct(e["rank5"]), pct(e["rank10"]), pct(e["mINP"]))
    console.print(evaluations)
    clusters = Table("epoch", "clusters", "outliers", "after OAE", "assigned", "OAE prec", "purity", "NMI",
                     "CMLR H", "seconds", title="clustering")
    for c in details["clusters"]:
        clusters.add_row(str(c["epoch"]), str(c["clusters"]), str(c["outliers_before"]), str(c["outliers_after"]),
                         str(c["oae_assigned"]), pct(c.get("oae_precision")), pct(c.get("purity")), pct(c.get("nmi")),
                         f"{c.get('cmlr_entropy', 0):.3f}", f"{sum(c.get('timings', {}).values()):.1f}")
    console.print(clusters)


def doctor_report(runs_dir: str | None) -> bool:
    """Print each dependency as ok or missing with its fix; True when nothing required is missing."""
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
    check("faiss GPU", faiss_gpu, "installed" if faiss_gpu else "missing (torch kNN on CUDA is used)", "pip install 'oaecmlr[gpu]'")
    from oaecmlr.knn import resolve_backend
    check("kNN auto backend", True, resolve_backend("auto", torch.device("cuda" if cuda else "cpu")))
    for module, extra in (("textual", "tui"), ("matplotlib", "plot"), ("pynvml", "gpu")):
        present = importlib.util.find_spec(module) is not None
        check(module, present, "installed" if present else "missing", f"pip install 'oaecmlr[{extra}]'")
    root = runs_root(runs_dir)
    writable = root.exists() and os.access(root, os.W_OK) or not root.exists() and os.access(root.resolve().parent, os.W_OK)
    check("runs folder", writable, str(root.resolve()), "pass --runs-dir or set OAECMLR_RUNS to a writable folder", True)

    table = Table("check", "status", "detail", "fix")
    for name, ok, detail, fix, required in rows:
        status = "[green]ok[/]" if ok else ("[red]missing[/]" if required else "[yellow]missing[/]")
        table.add_row(name, status, detail, "" if ok else fix)
    console.print(table)
    return all(ok for _, ok, _, _, required in rows if required)
