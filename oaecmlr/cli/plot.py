"""`compare --plot`: mAP and R1 per evaluation, clusters and cross-camera share per epoch.

Runs that differ only in their seed are drawn as one line (the mean) in a band (± one sample
standard deviation). Lines are labelled with run names; the settings that tell them apart are a
table under the plot. The file type follows the name: .png, .pdf or .svg. matplotlib is imported
here only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from oaecmlr.errors import CliError
from oaecmlr.store.compare import NOT_CONFIG, RunRecord, config_diff

FORMATS = (".png", ".pdf", ".svg")
MARKERS = "os^Dv<>p*h"


@dataclass(frozen=True)
class Layout:
    """What `compare --plot` draws besides the curves: one (label, runs) per line, labelled with run
    names; the settings that tell the lines apart as a table (header, one row per line); and a title
    made of the dataset and arch when every run shares them."""

    groups: list[tuple[str, list[RunRecord]]]
    table: tuple[list[str], list[list[str]]]
    title: str


def layout_of(records: list[RunRecord]) -> Layout:
    """Runs that differ only in their seed make one line, labelled `a, b (seeds 1,2)`."""
    keyed: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        keyed[tuple(sorted((k, repr(v)) for k, v in r.config.items() if k not in NOT_CONFIG))].append(r)
    members = list(keyed.values())
    firsts = [{k: v for k, v in m[0].config.items() if k not in NOT_CONFIG} for m in members]
    diff = config_diff(firsts, [str(i) for i in range(len(members))])
    labels = []
    for group in members:
        seeds = [str(r.config.get("run.seed")) for r in group]
        labels.append(", ".join(r.name for r in group) + (f" (seeds {','.join(seeds)})" if len(group) > 1 else ""))
    header = ["run", *(key.split(".", 1)[-1] if _unique_leaf(key, diff) else key for key in diff)]
    rows = [[label, *(str(values[str(i)]) for values in diff.values())] for i, label in enumerate(labels)]
    shared = [str(firsts[0][k]) for k in ("data.dataset", "model.arch")
              if members and k in firsts[0] and k not in diff]
    return Layout(list(zip(labels, members)), (header, rows) if diff else (header, []), " · ".join(shared))


def _unique_leaf(key: str, diff: dict) -> bool:
    leaf = key.split(".", 1)[-1]
    return sum(k.split(".", 1)[-1] == leaf for k in diff) == 1


def _series(values_per_run: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """Epochs every run of a group has, with the mean and sample std there."""
    epochs = sorted(set.intersection(*(set(v) for v in values_per_run))) if values_per_run else []
    means, stds = [], []
    for epoch in epochs:
        points = [v[epoch] for v in values_per_run]
        mean = sum(points) / len(points)
        means.append(mean)
        stds.append((sum((p - mean) ** 2 for p in points) / (len(points) - 1)) ** 0.5 if len(points) > 1 else 0.0)
    return epochs, means, stds


def plot_runs(records: list[RunRecord], path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise CliError(f"--plot writes {', '.join(FORMATS)}; give a file name ending in one of them, not {path.name}")
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'oaecmlr[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = layout_of(records)
    groups, title = layout.groups, layout.title
    header, rows = layout.table
    table_height = 0.3 * (len(rows) + 1) + 0.3 if rows else 0.0
    fig = plt.figure(figsize=(20, 5.2 + 0.5 + table_height), dpi=110, layout="constrained")
    grid = fig.add_gridspec(3 if rows else 2, 4, height_ratios=[5.2, 0.5, table_height][:3 if rows else 2])
    axes = [fig.add_subplot(grid[0, i]) for i in range(4)]
    panels = [("mAP (%)", lambda r: {e.epoch: 100 * e.mAP for e in r.summary.evaluations}),
              ("rank-1 (%)", lambda r: {e.epoch: 100 * e.rank1 for e in r.summary.evaluations}),
              ("clusters", lambda r: {c.epoch: c.clusters for c in r.summary.clusters}),
              ("clusters spanning cameras (%)", lambda r: {c.epoch: 100 * c.cross_camera for c in r.summary.clusters
                                                           if c.cross_camera is not None})]
    for i, (label, members) in enumerate(groups):  # a marker per group keeps overlapping curves apart
        for ax, (_, values) in zip(axes, panels):
            epochs, means, stds = _series([values(r) for r in members])
            if not epochs:
                continue
            line, = ax.plot(epochs, means, marker=MARKERS[i % len(MARKERS)], linewidth=2, markersize=6, alpha=0.9,
                            label=label)
            if len(members) > 1:
                ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                                color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, (panel_title, _) in zip(axes, panels):
        ax.set_title(panel_title, fontsize=13)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = [], []
    for ax in axes:  # the first panel that has every group
        handles, labels = ax.get_legend_handles_labels()
        if len(handles) == len(groups):
            break
    if handles:
        legend_ax = fig.add_subplot(grid[1, :])
        legend_ax.axis("off")
        legend_ax.legend(handles, labels, loc="center", ncol=min(4, len(labels)), fontsize=10, frameon=False)
    if rows:  # the settings that tell the lines apart
        table_ax = fig.add_subplot(grid[2, :])
        table_ax.axis("off")
        table = table_ax.table(cellText=rows, colLabels=header, loc="center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(10)
        table.auto_set_column_width(list(range(len(header))))
    bands = " (mean ± std over seeds)" if any(len(m) > 1 for _, m in groups) else ""
    fig.suptitle(f"{title}{bands}" if title else f"run comparison{bands}", fontsize=14)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
