"""`oaecmlr runs`: one line per run, a table for people and JSON for programs, filtered by `--where`.

The table keeps run names whole: on a narrow terminal it drops the other columns first, those
of least value first, the metrics last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich import box
from rich.table import Table

from oaecmlr import formatting
from oaecmlr.cli.common import cell, console, err_console, escape, print_json, warn
from oaecmlr.errors import CliError
from oaecmlr.formatting import clock, duration, epoch_text, pct, shorten
from oaecmlr.store.compare import NOT_CONFIG, config_diff, read_config
from oaecmlr.store.runs import RunMeta, list_runs, planned_epochs, read_meta, runs_root, summarize_run
from oaecmlr.store.summary import RunSummary

STATUS_STYLE = {"running": "bold green", "starting": "green", "stale": "yellow", "failed": "red",
                "stopped": "magenta", "finished": ""}
WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|!=|>|<|=)\s*(\S+)\s*$")
METRIC_KEYS = {"map": "mAP", "r1": "rank1", "rank1": "rank1", "r5": "rank5", "rank5": "rank5", "r10": "rank10",
               "rank10": "rank10", "minp": "mINP"}


def run_row(summary: RunSummary, meta: dict | None = None) -> dict:
    """One line of `oaecmlr runs`: numbers as fractions, times as unix seconds."""
    best = summary.best
    elapsed = summary.elapsed_until(formatting.now())
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
    if metric and isinstance(wanted, str):
        raise CliError(f"--where {text!r}: {key} is a number (a fraction, e.g. '{key}>0.2'), not {raw!r}")

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
            kind = "a number" if isinstance(value, (int, float)) else "text"
            raise CliError(f"--where {text!r}: {key} is {kind} and {raw!r} is not; compare it with {kind}") from None

    return keep


@dataclass
class Column:
    header: str
    priority: int  # lower is dropped last
    justify: str = "left"


def show_runs(runs_dir: str | None, fmt: str, where: list[str] | None = None, params: bool = True) -> None:
    filters = [parse_where(w) for w in where or []]
    entries = []
    for run in list_runs(runs_dir, warn=warn):
        row = run_row(summarize_run(run, warn=warn, history=False), read_meta(run, warn))
        config = {k: v for k, v in read_config(run, warn).items() if k not in NOT_CONFIG}
        row["epochs"] = planned_epochs(run, row["epochs"])
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
        note = RunMeta.from_dict(row).text()
        rows.append([row["name"], row["status"], epoch_text(row["epoch"], row["epochs"]), pct(row["best_mAP"]),
                     pct(row["best_rank1"]), *(cell(config.get(k)) for k in diff_keys), pct(row["cross_camera"], 0),
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


def fit(columns: list[Column], rows: list[list[str]], width: int):
    """Drop the columns of lowest priority until the table fits `width` (two spaces between
    columns): names stay whole, so that they can be told apart and copied; only a name longer
    than the whole width is shortened (in the middle)."""
    keep = list(range(len(columns)))

    def needed(indices):
        widths = [max(len(c) for c in [*(r[i] for r in rows), columns[i].header]) for i in indices]
        return sum(widths) + 2 * (len(widths) - 1)

    while needed(keep) > width and len(keep) > 1:
        keep.remove(max(keep[1:], key=lambda i: (columns[i].priority, i)))
    out_rows = [[shorten(r[i], width) if i == 0 else r[i] for i in keep] for r in rows]
    return [columns[i] for i in keep], out_rows
