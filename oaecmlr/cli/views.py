"""What `runs`, `show`, `stop` and `doctor` print: tables for people, JSON for programs."""

from __future__ import annotations

import importlib.util
import os
import platform
import time
from datetime import datetime

import torch
from rich import box
from rich.markup import escape
from rich.table import Table

from oaecmlr.cli.common import console, err_console, pct, print_json
from oaecmlr.engine.config import read_toml
from oaecmlr.store.runs import find_run, list_runs, request_stop, run_summary, runs_root

STATUS_STYLE = {"running": "bold green", "stale": "yellow", "failed": "red", "stopped": "magenta", "finished": ""}


def run_row(summary: dict) -> dict:
    """One line of `oaecmlr runs`: numbers as fractions, times as unix seconds."""
    best = summary["best"] or {}
    elapsed = summary["elapsed"]
    if summary["status"] == "running" and summary["started"]:
        elapsed = time.time() - summary["started"]
    return {"name": summary["name"], "dataset": summary["dataset"], "status": summary["status"],
            "epoch": summary["epoch"], "epochs": summary["epochs"], "best_mAP": best.get("mAP"),
            "best_rank1": best.get("rank1"), "best_epoch": best.get("epoch"),
            "clusters": summary["clusters"][-1]["clusters"] if summary["clusters"] else None,
            "started": summary["started"], "elapsed": elapsed}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def clock(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%m-%d %H:%M") if timestamp else "-"


def show_runs(runs_dir: str | None, fmt: str) -> None:
    rows = [run_row(run_summary(run)) for run in list_runs(runs_dir)]
    if fmt == "json":
        print_json(rows)
        return
    if not rows:
        err_console.print(f"no runs in {runs_root(runs_dir).resolve()}; start one with `oaecmlr run demo`")
        return
    table = Table("name", "dataset", "status", "epoch", "mAP", "R1", "clusters", "started", "elapsed",
                  title=f"runs in {runs_root(runs_dir)} (best mAP and R1, %)", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, collapse_padding=True)
    for column in table.columns:
        column.no_wrap = True
    for r in rows:
        table.add_row(r["name"], r["dataset"] or "-", r["status"], f"{r['epoch']}/{r['epochs'] or '?'}",
                      pct(r["best_mAP"]), pct(r["best_rank1"]), str(r["clusters"] or "-"), clock(r["started"]),
                      duration(r["elapsed"]), style=STATUS_STYLE.get(r["status"], ""))
    console.print(table)


def stop_run(name: str, runs_dir: str | None) -> None:
    console.print(escape(request_stop(find_run(name, runs_dir))), highlight=False)


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
        console.print(f"[red]failure:[/] {escape(str(details['failure'].get('error')))}")
    evaluations = Table("epoch", "mAP", "R1", "R5", "R10", "mINP", title="evaluations")
    for e in details["evaluations"]:
        evaluations.add_row(str(e["epoch"]), pct(e["mAP"]), pct(e["rank1"]), pct(e["rank5"]), pct(e["rank10"]), pct(e["mINP"]))
    console.print(evaluations)
    clusters = Table("epoch", "clusters", "x-cam", "outliers", "after OAE", "assigned", "OAE prec", "purity", "NMI",
                     "CMLR H", "seconds", title="clustering")
    for c in details["clusters"]:
        clusters.add_row(str(c["epoch"]), str(c["clusters"]), pct(c.get("cross_camera")), str(c["outliers_before"]),
                         str(c["outliers_after"]),
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
    existing = next(p for p in [root.resolve(), *root.resolve().parents] if p.exists())  # where mkdir would start
    writable = existing.is_dir() and os.access(existing, os.W_OK)
    check("runs folder", writable, str(root.resolve()), "pass --runs-dir or set OAECMLR_RUNS to a writable folder", True)

    table = Table("check", "status", "detail", "fix")
    for name, ok, detail, fix, required in rows:
        status = "[green]ok[/]" if ok else ("[red]missing[/]" if required else "[yellow]missing[/]")
        table.add_row(name, status, escape(detail), "" if ok else escape(fix))
    console.print(table)
    return all(ok for _, ok, _, _, required in rows if required)
