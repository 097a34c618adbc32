"""Run the OAE / CMLR ablation on a dataset preset and print the table.

    python experiments/ablations/run.py --data-root data/cuhk03 --pretrained mobilenet_v2-b0353104.pth --seeds 0,1,2
    python experiments/ablations/run.py --variants camera-ablation ...   # the camera-aware ablation
    python experiments/ablations/run.py --group 'bn 64=a-s0,a-s1' --group 'bn 0=b-s0' --runs-dir runs  # any runs

Each variant is `oaecmlr run PRESET --config experiments/ablations/VARIANT.toml --seed S` (the
supervised one is `oaecmlr pretrain`). Finished runs are reused, so an interrupted ablation
continues where it stopped. The table gives mean ± std over seeds of the final and best mAP / R1,
and the clustering diagnostics of the last epoch that explain them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from oaecmlr.store.compare import mean_std, run_record
from oaecmlr.store.runs import run_dir, summarize_run

HERE = Path(__file__).resolve().parent
VARIANTS = ("baseline", "oae", "cmlr", "both", "supervised")
CAMERA_VARIANTS = ("baseline", "cajaccard", "camnorm", "proxies", "camera", "camera-full", "supervised")


def train(variant: str, seed: int, args) -> str:
    name = f"{args.prefix}-{variant}-s{seed}"
    run = run_dir(name, args.runs_dir)
    if finished(name, args.runs_dir):
        return name
    command = "pretrain" if variant == "supervised" else "run"
    cmd = [sys.executable, "-m", "oaecmlr.cli.app", command, args.preset, "--config", str(HERE / f"{variant}.toml"),
           "--seed", str(seed), "--name", name, "--runs-dir", args.runs_dir]
    cmd += ["--data-root", args.data_root] if args.data_root else []
    cmd += ["--pretrained", args.pretrained] if args.pretrained else []
    for item in args.set or []:
        cmd += ["--set", item]
    if run.exists():  # an interrupted run: continue it
        cmd = [sys.executable, "-m", "oaecmlr.cli.app", "resume", name, "--runs-dir", args.runs_dir]
    print(f"== {name}", flush=True)
    subprocess.run(cmd, check=True)
    return name


def finished(name: str, runs_dir: str, say: bool = False) -> bool:
    run = run_dir(name, runs_dir)
    if not run.exists():
        return False
    if not summarize_run(run).finished:
        if say:
            print(f"(left out {name}: not finished)", file=sys.stderr)
        return False
    return True


def row(variant: str, names: list[str], runs_dir: str) -> dict:
    summaries = [run_record(run_dir(n, runs_dir)).summary for n in names]
    last_clusters = [s.latest_clusters for s in summaries if s.latest_clusters is not None]
    train_images = summaries[0].start.data["train"]["images"]

    def stat(values):
        return mean_std([v for v in values if v is not None])

    return {
        "variant": variant, "seeds": len(names),
        "epoch0_mAP": stat([s.evaluations[0].mAP for s in summaries]),
        "final_mAP": stat([s.final.mAP for s in summaries]), "final_R1": stat([s.final.rank1 for s in summaries]),
        "best_mAP": stat([s.best.mAP for s in summaries]), "best_R1": stat([s.best.rank1 for s in summaries]),
        "purity": stat([c.purity for c in last_clusters]), "nmi": stat([c.nmi for c in last_clusters]),
        "oae_precision": stat([c.oae_precision for c in last_clusters]),
        "oae_assigned": stat([c.oae_assigned for c in last_clusters]),
        "trained_on": stat([1 - c.outliers_after / train_images for c in last_clusters]),
        "cross_camera": stat([c.cross_camera for c in last_clusters]),
    }


METHOD = (("purity", True), ("oae_pairwise_precision", True), ("oae_precision", True), ("oae_ceiling", True),
          ("oae_assigned_share", True), ("oae_same_camera", True), ("cmlr_mass_clean", True),
          ("cmlr_mass_mislabelled", True), ("cmlr_auroc", False), ("cmlr_kl", False), ("cmlr_mislabelled", True))


def method_row(variant: str, names: list[str], runs_dir: str) -> dict:
    """Each diagnostic at the last epoch (mean ± std over seeds) and its path over the epochs (the
    seeds' mean at the first, middle and last clustering)."""
    summaries = [run_record(run_dir(n, runs_dir)).summary for n in names]
    out = {"variant": variant, "seeds": len(names)}
    for key, _ in METHOD:
        last = [getattr(s.latest_clusters, key) for s in summaries if s.latest_clusters is not None]
        out[key] = mean_std([v for v in last if v is not None])
        paths = [[getattr(c, key) for c in s.clusters] for s in summaries]
        length = min((len(p) for p in paths), default=0)
        if length and all(v is not None for p in paths for v in p[:length]):
            marks = sorted({0, (length - 1) // 2, length - 1})
            out[f"{key}_path"] = [(m + 1, sum(p[m] for p in paths) / len(paths)) for m in marks]
    return out


def method_table(rows: list[dict]) -> str:
    """Markdown: a row per diagnostic, a column per variant; 'last epoch (e1 -> mid -> last)'."""
    lines = ["| diagnostic | " + " | ".join(r["variant"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for key, percent in METHOD:
        cells = []
        for r in rows:
            value = r[key]
            text = fmt(value, percent) if percent or value is None else f"{value['mean']:.2f} ± {value['std']:.2f}"
            path = r.get(f"{key}_path")
            if path and text != "-":
                scale = 100 if percent else 1
                text += " (" + " → ".join(f"e{e} {scale * v:.{0 if percent else 2}f}" for e, v in path) + ")"
            cells.append(text)
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt(value, percent=True, seeds=None) -> str:
    if value is None:
        return "-"
    scale = 100 if percent else 1
    partial = f" (n={value['n']})" if seeds and value["n"] < seeds else ""  # older runs lack a diagnostic
    return f"{scale * value['mean']:.1f} ± {scale * value['std']:.1f}{partial}"


def table(rows: list[dict]) -> str:
    header = ("| variant | seeds | epoch-0 mAP | final mAP | final R1 | best mAP | best R1 | purity | NMI "
              "| OAE precision | OAE assigned | trained on | multi-camera clusters |")
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seeds']} | {fmt(r['epoch0_mAP'])} | {fmt(r['final_mAP'])} | "
                     f"{fmt(r['final_R1'])} | {fmt(r['best_mAP'])} | {fmt(r['best_R1'])} | {fmt(r['purity'])} | "
                     f"{fmt(r['nmi'])} | {fmt(r['oae_precision'])} | {fmt(r['oae_assigned'], False)} | "
                     f"{fmt(r['trained_on'])} | {fmt(r['cross_camera'], seeds=r['seeds'])} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cuhk03")
    parser.add_argument("--data-root")
    parser.add_argument("--pretrained")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated variants (TOML files here), or `camera-ablation` for the whole "
                             "camera-aware ablation")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--prefix", default="ablation")
    parser.add_argument("--set", action="append", help="extra overrides for every run, e.g. data.holdout_ids=100")
    parser.add_argument("--table-only", action="store_true", help="summarise finished runs, train nothing")
    parser.add_argument("--group", action="append", metavar="LABEL=RUN,RUN",
                        help="table these finished runs as one row (repeatable); trains nothing")
    parser.add_argument("--diagnostics", action="store_true",
                        help="with --group: also the OAE and CMLR diagnostics, last epoch and over the epochs")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, method_rows = [], []
    if args.group:
        for group in args.group:
            label, _, names = group.partition("=")
            kept = [n for n in names.split(",") if n and finished(n, args.runs_dir, say=True)]
            if kept:
                rows.append(row(label, kept, args.runs_dir))
                method_rows.append(method_row(label, kept, args.runs_dir))
        print(table(rows))
        if args.diagnostics:
            print()
            print(method_table(method_rows))
        return
    variants = CAMERA_VARIANTS if args.variants == "camera-ablation" else args.variants.split(",")
    for variant in variants:
        if args.table_only:
            names = [n for n in (f"{args.prefix}-{variant}-s{s}" for s in seeds) if finished(n, args.runs_dir, say=True)]
        else:
            names = [train(variant, seed, args) for seed in seeds]
        if names:
            rows.append(row(variant, names, args.runs_dir))
    print(table(rows))


if __name__ == "__main__":
    main()
