"""What `runs`, `show`, `stop`, `note` and `doctor` print: tables for people, JSON for programs.

The runs table always keeps the metrics and the part of each name that tells runs apart: on a
narrow terminal it drops low-value columns first, then shortens names in the middle.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import time
from dataclasses import dataclass

from rich import box
from rich.table import Table

from oaecmlr.cli.common import console, err_console, escape, print_json
from oaecmlr.config import Config, ConfigError, config_from_dict, read_toml
from oaecmlr.errors import CliError
from oaecmlr.formatting import clock, duration, epoch_text, pct, shorten
from oaecmlr.store.compare import NOT_CONFIG, config_diff, read_config
from oaecmlr.store.runs import (
    RunDir,
    find_run,
    list_runs,
    read_meta,
    request_stop,
    runs_root,
    summarize_run,
    write_meta,
)
from oaecmlr.store.summary import RunSummary

STATUS_STYLE = {"running": "bold green", "starting": "green", "stale": "yellow", "failed": "red",
                "stopped": "magenta", "finished": ""}
WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<|=)\s*(\S+)\s*$")
METRIC_KEYS = {"map": "mAP", "r1": "rank1", "rank1": "rank1", "r5": "rank5", "rank5": "rank5", "r10": "rank10",
               "rank10": "rank10", "minp": "mINP"}


def run_row(summary: RunSummary, meta: dict | None = None) -> dict:
    """One line of `oaecmlr runs`: numbers as fractions, times as unix seconds."""
    best = summary.best
    elapsed = summary.elapsed
    if summary.status == "running" and summary.started and summary.resumes == 0:
        elapsed = time.time() - summary.started
    meta = meta or {}
    return {"name": summary.name, "dataset": summary.dataset, "status": summary.status, "epoch": summary.epoch,
            "epochs": summary.epochs, "best_mAP": best.mAP if best else None,
            "best_rank1": best.rank1 if best else None, "best_epoch": best.epoch if best else None,
            "clusters": summary.latest_clusters.clusters if summary.latest_clusters else None,
            "cross_camera": summary.latest_clusters.cross_camera if summary.latest_clusters else None,
            "started": summary.started, "elapsed": elapsed, "note": meta.get("note", ""), "tags": meta.get("tags", [])}


def parse_where(text: str):
    """`mAP>0.2`, `R1>=0.5`, `status=finished`, `oae.rho=0`, `tag=baseline`: a predicate on (row, config)."""
    match = WHERE.match(text)
    if not match:
        raise CliError(f"--where expects KEY OP VALUE, e.g. 'mAP>0.2', 'status=finished' or 'oae.rho=0'; got {text!r}")
    key, op, raw = match.groups()
    op = "==" if op == "=" else op
    metric = METRIC_KEYS.get(key.lower())

    def value_of(row: dict, config: dict):
        if metric:
            return row[f"best_{metric}"] if metric in ("mAP", "rank1") else None
        if key in ("status", "dataset", "name", "epoch"):
            return row[key]
        if key == "tag":
            return row["tags"]
        if key not in config:
            raise CliError(f"--where: {key!r} is neither a metric (mAP, R1), status, dataset, name, epoch, tag "
                           "nor a config key such as oae.rho")
        return config[key]

    def number(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    wanted = number(raw)

    def keep(row: dict, config: dict) -> bool:
        value = value_of(row, config)
        if key == "tag":
            return (raw in value) == (op == "==")
        if value is None:
            return False
        value = number(str(value).lower() if isinstance(value, bool) else value)
        target = str(wanted).lower() if isinstance(value, str) else wanted
        try:
            return {"==": value == target, "!=": value != target, ">": value > target, "<": value < target,
                    ">=": value >= target, "<=": value <= target}[op]
        except TypeError:
            raise CliError(f"--where {text!r}: cannot compare {value!r} with {raw!r}") from None

    return keep


@dataclass
class Column:
    header: str
    priority: int  # lower is dropped last
    justify: str = "left"


def show_runs(runs_dir: str | None, fmt: str, where: list[str] | None = None, params: bool = True) -> None:
    filters = [parse_where(w) for w in where or []]
    entries = []
    for run in list_runs(runs_dir, warn=_warn):
        row = run_row(summarize_run(run, warn=_warn, history=False), read_meta(run, _warn))
        config = {k: v for k, v in read_config(run, _warn).items() if k not in NOT_CONFIG}
        if all(keep(row, config) for keep in filters):
            entries.append((row, config))
    if fmt == "json":
        print_json([row for row, _ in entries])
        return
    if not entries:
        where_text = f" matching {' and '.join(where)}" if where else ""
        err_console.print(escape(f"no runs{where_text} in {runs_root(runs_dir).resolve()}; "
                                 "start one with `oaecmlr run demo`"), highlight=False)
        return
    diff = config_diff([config for _, config in entries], [row["name"] for row, _ in entries]) if params else {}
    diff_keys = [k for k in diff if len(entries) > 1][:6]
    columns = [Column("name", 0), Column("status", 1), Column("epoch", 1, "right"), Column("mAP", 0, "right"),
               Column("R1", 0, "right"), *(Column(k, 3) for k in diff_keys), Column("x-cam", 4, "right"),
               Column("clusters", 5, "right"), Column("elapsed", 4, "right"), Column("dataset", 6),
               Column("started", 7), Column("note", 8)]
    rows = []
    for row, config in entries:
        note = " ".join([*(f"#{t}" for t in row["tags"]), row["note"]]).strip()
        rows.append([row["name"], row["status"], epoch_text(row["epoch"], row["epochs"]), pct(row["best_mAP"]),
                     pct(row["best_rank1"]), *(_cell(config.get(k)) for k in diff_keys), pct(row["cross_camera"], 0),
                     str(row["clusters"] or "-"), duration(row["elapsed"]), row["dataset"] or "-",
                     clock(row["started"]), note or "-"])
    columns, rows = fit(columns, rows, console.width)
    table = Table(*(c.header for c in columns), title=f"runs in {runs_root(runs_dir)} (best mAP and R1, %)",
                  box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True, title_justify="left")
    for column, spec in zip(table.columns, columns):
        column.no_wrap, column.justify = True, spec.justify
    for (row, _), cells in zip(entries, rows):
        table.add_row(*map(escape, cells), style=STATUS_STYLE.get(row["status"], ""))
    console.print(table)


def _cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "-" if value is None else str(value)


def fit(columns: list[Column], rows: list[list[str]], width: int, min_name: int = 12):
    """Drop the lowest-priority columns until the table fits `width`, then shorten the names (in
    the middle). Two spaces separate columns."""
    keep = list(range(len(columns)))

    def needed(indices, name_width=None):
        widths = []
        for i in indices:
            cells = [r[i] for r in rows] + [columns[i].header]
            w = max(len(c) for c in cells)
            widths.append(min(w, name_width) if i == 0 and name_width else w)
        return sum(widths) + 2 * (len(widths) - 1)

    while needed(keep, min_name) > width:
        droppable = [i for i in keep if columns[i].priority > 1]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    spare = width - needed([i for i in keep if i != 0]) - 2
    name_width = max(min_name, spare)
    out_rows = [[shorten(r[i], name_width) if i == 0 else r[i] for i in keep] for r in rows]
    return [columns[i] for i in keep], out_rows


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def stop_run(name: str, runs_dir: str | None) -> None:
    console.print(escape(request_stop(find_run(name, runs_dir))), highlight=False)


def note_run(name: str, runs_dir: str | None, text: str | None, tags: list[str], untag: list[str]) -> None:
    run = find_run(name, runs_dir)
    meta = read_meta(run, _warn)
    if text is not None:
        meta["note"] = text
    meta["tags"] = sorted((set(meta.get("tags", [])) | set(tags)) - set(untag))
    write_meta(run, meta)
    console.print(escape(f"{run.name}: note {meta.get('note', '')!r}, tags {', '.join(meta['tags']) or '-'}"),
                  highlight=False)


def run_details(name: str, runs_dir: str | None) -> dict:
    run = find_run(name, runs_dir)
    summary = summarize_run(run, warn=_warn)
    details = summary.to_json()
    status = run.read_status()  # checked; its warnings came with the summary
    details.update(pid=status.get("pid"), host=status.get("host"), **read_meta(run, _warn))
    details["config"] = _config_of(run).to_dict() if run.config.exists() else {}
    return details


def _config_of(run: RunDir) -> Config:
    try:
        return config_from_dict(read_toml(run.config))
    except ConfigError as exc:
        _warn(f"{exc}; the built-in defaults are shown instead of {run.name}'s settings")
        return Config()


def show_run(name: str, runs_dir: str | None, fmt: str) -> None:
    details = run_details(name, runs_dir)
    if fmt == "json":
        print_json(details)
        return
    best = details["best"] or {}
    console.print(escape(f"{details['name']}  {details['status']}  dataset {details['dataset']}  epoch "
                         f"{epoch_text(details['epoch'], details['epochs'])}  best mAP {pct(best.get('mAP'))} "
                         f"R1 {pct(best.get('rank1'))} (epoch {best.get('epoch', '-')})  "
                         f"elapsed {duration(details['elapsed'])}"), highlight=False)
    if details.get("note") or details.get("tags"):
        console.print(escape(f"note: {details.get('note', '')}  tags: {', '.join(details.get('tags', [])) or '-'}"),
                      highlight=False)
    if details.get("failure"):
        console.print(f"[red]failure:[/] {escape(str(details['failure'].get('error')))}", highlight=False)
    for warning in details["warnings"]:
        console.print(f"[yellow]warning:[/] {escape(warning['message'])} (epoch {warning.get('epoch')})", highlight=False)
    provenance = details["provenance"]
    if provenance:
        console.print(escape("provenance: " + ", ".join(f"{k} {v}" for k, v in provenance.items())), highlight=False)
    defaults = Config().flat()
    changed = {k: v for k, v in _flat(details["config"]).items() if defaults.get(k) != v}
    settings = Table("setting", "value", title="config (keys that differ from the built-in defaults; "
                                                 "--format json has all)", title_justify="left")
    for key, value in changed.items():
        settings.add_row(escape(key), escape(_cell(value)))
    console.print(settings)
    evaluations = Table("epoch", "mAP", "R1", "R5", "R10", "mINP", title="evaluations", title_justify="left")
    for e in details["evaluations"]:
        evaluations.add_row(str(e["epoch"]), pct(e["mAP"]), pct(e["rank1"]), pct(e["rank5"]), pct(e["rank10"]),
                            pct(e["mINP"]))
    console.print(evaluations)
    clusters = Table("epoch", "clusters", "x-cam", "outliers", "after OAE", "assigned", "OAE prec", "purity", "NMI",
                     "CMLR H", "seconds", title="clustering", title_justify="left")
    for c in details["clusters"]:
        clusters.add_row(str(c["epoch"]), str(c["clusters"]), pct(c.get("cross_camera")), str(c["outliers_before"]),
                         str(c["outliers_after"]), str(c["oae_assigned"]), pct(c.get("oae_precision")),
                         pct(c.get("purity")), pct(c.get("nmi")), f"{c.get('cmlr_entropy', 0):.3f}",
                         f"{sum(c.get('timings', {}).values()):.1f}")
    console.print(clusters)
    method = Table("epoch", "OAE pair", "OAE maj", "ceiling", "assigned", "same cam", "mass clean", "mass mislab",
                   "AUROC", "KL", "mislab", title="OAE and CMLR against ground truth (%; AUROC and KL in nats as "
                   "numbers)", title_justify="left")
    for c in details["clusters"]:
        if c.get("oae_ceiling") is None and c.get("cmlr_kl") is None:
            continue

        def number(key: str, c: dict = c) -> str:
            return "-" if c.get(key) is None else f"{c[key]:.2f}"

        method.add_row(str(c["epoch"]), *(pct(c.get(k)) for k in ("oae_pairwise_precision", "oae_precision",
                                                                   "oae_ceiling", "oae_assigned_share", "oae_same_camera",
                                                                   "cmlr_mass_clean", "cmlr_mass_mislabelled")),
                       number("cmlr_auroc"), number("cmlr_kl"), pct(c.get("cmlr_mislabelled")))
    if method.row_count:
        console.print(method)


def _flat(mapping: dict) -> dict:
    return {f"{s}.{k}": v for s, values in mapping.items() for k, v in values.items()}


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
