"""`oaecmlr show`: one run's status, config changes, evaluations and per-epoch clustering."""

from __future__ import annotations

from rich.table import Table

from oaecmlr.cli.common import cell, console, escape, print_json, warn
from oaecmlr.config import Config, ConfigError, config_from_dict, read_toml
from oaecmlr.formatting import duration, epoch_text, pct
from oaecmlr.store.runs import RunDir, find_run, planned_epochs, read_meta, summarize_run


def run_details(name: str, runs_dir: str | None) -> dict:
    run = find_run(name, runs_dir)
    summary = summarize_run(run, warn=warn)
    details = summary.to_json()
    status = run.read_status()  # checked; its warnings came with the summary
    details.update(pid=status.get("pid"), host=status.get("host"), **read_meta(run, warn))
    details["config"] = _config_of(run).to_dict() if run.config.exists() else {}
    details["epochs"] = planned_epochs(run, details["epochs"])
    return details


def _config_of(run: RunDir) -> Config:
    try:
        return config_from_dict(read_toml(run.config))
    except ConfigError as exc:
        warn(f"{exc}; the built-in defaults are shown instead of {run.name}'s settings")
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
    settings = table("setting", "value", title="config (keys that differ from the built-in defaults; "
                                                 "--format json has all)")
    for key, value in changed.items():
        settings.add_row(escape(key), escape(cell(value)))
    console.print(settings)
    evaluations = table("epoch", "mAP", "R1", "R5", "R10", "mINP", title="evaluations")
    for e in details["evaluations"]:
        evaluations.add_row(str(e["epoch"]), pct(e["mAP"]), pct(e["rank1"]), pct(e["rank5"]), pct(e["rank10"]),
                            pct(e["mINP"]))
    console.print(evaluations)
    clusters = table("epoch", "clusters", "x-cam", "outliers", "after OAE", "assigned", "OAE prec", "purity", "NMI",
                     "CMLR H", "time (s)", title="clustering")
    for c in details["clusters"]:
        clusters.add_row(str(c["epoch"]), str(c["clusters"]), pct(c.get("cross_camera")), str(c["outliers_before"]),
                         str(c["outliers_after"]), str(c["oae_assigned"]), pct(c.get("oae_precision")),
                         pct(c.get("purity")), pct(c.get("nmi")), f"{c.get('cmlr_entropy', 0):.3f}",
                         f"{sum(c.get('timings', {}).values()):.1f}")
    console.print(clusters)
    method = table("epoch", "OAE pair", "OAE maj", "ceiling", "assigned", "same cam", "mass clean", "mass mislab",
                   "AUROC", "KL", "mislab", title="OAE and CMLR against ground truth (%; AUROC and KL in nats as "
                   "numbers)")
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


def table(*headers: str, title: str) -> Table:
    """A table whose headers are never cut: each word of a header on its own line, no rules, one
    space between columns, so that even the widest (eleven columns) fits 80 columns."""
    out = Table(title=title, title_justify="left", box=None, padding=(0, 1, 0, 0), header_style="bold underline")
    for header in headers:
        out.add_column("\n".join(header.split()), no_wrap=True)
    return out


def _flat(mapping: dict) -> dict:
    return {f"{s}.{k}": v for s, values in mapping.items() for k, v in values.items()}
