"""`compare --plot`: mAP, R1 and cluster counts per epoch of several runs, three panels in one PNG."""

from __future__ import annotations

from pathlib import Path

from oaecmlr.cli.errors import CliError


def plot_runs(records: list[dict], path: str | Path) -> Path:
    """Write the PNG of run records (`store.compare.run_record`); matplotlib is imported here only."""
    try:
        import matplotlib
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'oaecmlr[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CliError(f"--plot writes a PNG; give a file name ending in .png, not {path.name}")
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), dpi=110, constrained_layout=True)
    panels = (("mAP (%)", "mAP"), ("rank-1 (%)", "rank1"))
    markers = "os^Dv<>p*h"
    for i, r in enumerate(records):  # a marker per run keeps overlapping curves apart
        style = {"marker": markers[i % len(markers)], "linewidth": 2, "markersize": 6, "alpha": 0.85, "label": r["name"]}
        for ax, (_, key) in zip(axes, panels):
            points = [(e["epoch"], 100 * e[key]) for e in r["evaluations"] if e.get(key) is not None]
            if points:
                ax.plot(*zip(*points), **style)
        clusters = [(c["epoch"], c["clusters"]) for c in r["clusters"] if c.get("clusters") is not None]
        if clusters:
            axes[2].plot(*zip(*clusters), **style)
    for ax, title in zip(axes, [p[0] for p in panels] + ["clusters"]):
        ax.set_title(title, fontsize=13)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[2].yaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes[0].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[2].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=10, frameon=False)
    fig.suptitle("run comparison", fontsize=14)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
