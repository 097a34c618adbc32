"""`oaecmlr compare`: renders `store.compare` (the logic) as Rich tables, Markdown, CSV, LaTeX or JSON."""

from __future__ import annotations

import sys

from rich.panel import Panel

from oaecmlr.cli.common import console, err_console, escape, print_json
from oaecmlr.cli.tables import Section, csv_text, latex, markdown, rich_table
from oaecmlr.errors import RunError
from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.compare import Comparison, RunRecord, RunRow, compare, run_record
from oaecmlr.store.runs import find_run

METRICS = (("mAP", "mAP"), ("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("mINP", "mINP"))
METRIC_HEADER = ["run", "status", "mAP", "R1", "R5", "R10", "mINP", "best epoch", "final mAP", "time to best",
                 "epochs"]
SEED_HEADER = ["seeds", "runs", "mAP", "R1", "R5", "R10", "mINP", "final mAP"]
CSV_HEADER = ["run", "status", "dataset", *(f"best_{m}" for m, _ in METRICS), "best_epoch", "final_mAP",
              "final_rank1", "time_to_best_s", "epoch", "epochs"]


def load_records(names: list[str], runs_dir: str | None) -> list[RunRecord]:
    if len(names) < 2:
        raise RunError("compare needs at least two runs, e.g. oaecmlr compare RUN_A RUN_B")
    runs = [find_run(n, runs_dir) for n in names]  # a run listed twice is compared with itself (all deltas 0)
    return [run_record(r, warn=lambda m: err_console.print(f"[yellow]warning:[/] {escape(m)}", highlight=False,
                                                          soft_wrap=True))
            for r in runs]


def metric_values(run: RunRow) -> list:
    """A run's metric row as raw values (fractions, seconds): the CSV row, formatted for tables."""
    best, final = run.best, run.final
    scores = [getattr(best.metrics, m) if best else None for m, _ in METRICS]
    return [run.name, run.status, run.dataset, *scores, best.epoch if best else None,
            final.metrics.mAP if final else None, final.metrics.rank1 if final else None, run.time_to_best_s,
            run.epoch, run.epochs]


def _cells(values: list) -> list[str]:
    name, status, _, *metrics, best_epoch, final_map, _, to_best, epoch, epochs = values
    return [name, status, *map(pct, metrics), str(best_epoch if best_epoch is not None else "-"), pct(final_map),
            duration(to_best), epoch_text(epoch, epochs)]


def _mean_std(stats: dict | None) -> str:
    return "-" if not stats else f"{100 * stats['mean']:.1f}±{100 * stats['std']:.1f}"


def seed_rows(result: Comparison) -> list[list[str]]:
    return [[",".join(map(str, group["seeds"])), ", ".join(group["runs"]),
             *(_mean_std(group[f"best_{m}"]) for m, _ in METRICS), _mean_std(group["final_mAP"])]
            for group in result.seed_groups]


def _cluster_cell(c: dict | None) -> str:
    if c is None:
        return "-"
    return f"{c['clusters']} / {c['outliers']} / {pct(c['cross_camera'], 0)}"


# store.compare.METHOD_DIAGNOSTICS as shown (docs/method.md sections 3 and 4).
METHOD_LABELS = {
    "oae_pairwise_precision": "OAE pairwise precision (%)", "oae_precision": "OAE majority precision (%)",
    "oae_ceiling": "OAE ceiling (%)", "oae_assigned_share": "outliers assigned (%)",
    "oae_same_camera": "OAE same-camera pairs (%)", "cmlr_mass_clean": "target mass on right id, clean (%)",
    "cmlr_mass_mislabelled": "target mass on right id, mislabelled (%)", "cmlr_auroc": "AUROC of 1 - q[y]",
    "cmlr_kl": "KL(target || model), nats", "cmlr_mislabelled": "mislabelled samples (%)",
}


def _diagnostic(clusters: dict | None, key: str) -> str:
    value = (clusters or {}).get(key)
    if value is None:
        return "-"
    return f"{value:.3f}" if key in ("cmlr_auroc", "cmlr_kl") else pct(value)


def _signed(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.1f}"


def sections(result: Comparison) -> list[Section]:
    names = [r.name for r in result.runs]
    metric = Section("best and final metrics (%)", METRIC_HEADER, [_cells(metric_values(r)) for r in result.runs])
    deltas = []
    for entry in result.deltas:
        row = [str(entry["epoch"])]
        for i, name in enumerate(names):
            e = entry["runs"].get(name)
            if e is None:
                row.append("-")
                continue
            text = f"{pct(e['mAP'])} / {pct(e['rank1'])}"
            if i and e["delta_mAP"] is not None:
                text += f" (Δ {_signed(e['delta_mAP'])} / {_signed(e['delta_rank1'])})"
            row.append(text)
        deltas.append(row)
    clusters = [[str(entry["epoch"]), *(_cluster_cell(entry["runs"].get(n)) for n in names)]
                for entry in result.clusters]
    diff = [[key, *(str(values.get(n)) for n in names)] for key, values in result.config_diff.items()]
    method = [[label, *(_diagnostic(r.last_clusters, key) for r in result.runs)]
              for key, label in METHOD_LABELS.items()
              if any((r.last_clusters or {}).get(key) is not None for r in result.runs)]
    method_section = [Section("OAE and CMLR at the last clustering, against ground truth", ["diagnostic", *names],
                              method)] if method else []
    seeds = [Section("mean ± std over seeds (%, best unless final)", SEED_HEADER, seed_rows(result))] \
        if result.seed_groups else []
    return [metric, *seeds,
            Section(f"mAP / R1 (%) per evaluation, Δ vs {names[0]}", ["epoch", *names], deltas),
            Section("clusters / outliers after OAE / clusters spanning cameras (%) per epoch", ["epoch", *names],
                    clusters),
            *method_section,
            Section("config diff (differing keys only)", ["key", *names], diff or [["(identical)", *[""] * len(names)]])]


def render(result: Comparison, fmt: str) -> None:
    """Print a comparison in `fmt`: table, json, md, csv or latex."""
    warnings = result.warnings
    if fmt == "json":
        print_json(result.to_json())
        return
    parts = sections(result)
    if fmt == "table":
        if warnings:
            console.print(Panel(escape("\n".join(warnings)), title="warning: these runs are not directly comparable",
                                border_style="red", title_align="left", expand=False), highlight=False)
        for part in parts:
            console.print(rich_table(part), highlight=False)
        return
    if fmt == "md":
        text = "".join(f"> **warning:** {w}\n" for w in warnings) + ("\n" if warnings else "")
        sys.stdout.write(text + "\n".join(markdown(p) for p in parts))
        return
    for w in warnings:  # csv and latex stay parseable: warnings go to stderr
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if fmt == "csv":
        rows = [metric_values(r) for r in result.runs]
        for group in result.seed_groups:
            label = "+".join(group["runs"])
            for stat in ("mean", "std"):
                rows.append([f"{stat} of {label}", "", "", *(_stat(group[f"best_{m}"], stat) for m, _ in METRICS),
                             None, _stat(group["final_mAP"], stat), _stat(group["final_rank1"], stat), None, None,
                             None])
        rows = [[round(v, 6) if isinstance(v, float) else v for v in row] for row in rows]
        sys.stdout.write(csv_text(CSV_HEADER, rows))
    else:
        table = parts[0]
        table.footer = [[f"mean ± std, seeds {row[0]}", "", *row[2:7], "", row[7], "", ""] for row in seed_rows(result)]
        sys.stdout.write(latex(table))


def _stat(stats: dict | None, key: str) -> float | None:
    return None if not stats else stats[key]


def compare_command(names: list[str], runs_dir: str | None, fmt: str, plot: str | None) -> None:
    records = load_records(names, runs_dir)
    result = compare(records)
    if plot:
        from oaecmlr.cli.plot import plot_runs

        plot_runs(records, plot)
    render(result, fmt)
    if plot:
        err_console.print(f"plot written to {plot}")
