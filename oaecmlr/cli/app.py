"""The `oaecmlr` command line. Each command is a thin wrapper over one library function; known
errors print one line on stderr and exit 1, never a traceback."""

from __future__ import annotations

import os
import sys
from enum import Enum
from typing import Annotated

import typer

from oaecmlr import __version__
from oaecmlr.cli.common import TableOrJson, console, err_console, escape, one_line_warnings, os_error_line

app = typer.Typer(
    name="oaecmlr",
    help="Unsupervised person re-ID with OAE and CMLR: train, watch and compare runs from a terminal.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RunsDir = Annotated[str | None, typer.Option("--runs-dir", help="Runs folder (default: $OAECMLR_RUNS or ./runs).")]


def _version(value: bool) -> None:
    if value:
        console.print(f"oaecmlr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Unsupervised person re-ID with OAE and CMLR."""


Config = Annotated[str | None, typer.Option("--config", "-c", help="A TOML file of settings (sections as in the presets, oaecmlr/presets/*.toml).")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s", help="Override any key, e.g. --set oae.rho=0 --set cmlr.lam=0.")]
DataRoot = Annotated[str | None, typer.Option("--data-root", help="Dataset folder (default: $OAECMLR_DATA or ./data/NAME).")]
Name = Annotated[str | None, typer.Option("--name", "-n", help="Run name (default: DATASET-DATE-TIME).")]
Arch = Annotated[str | None, typer.Option("--arch", help="resnet50, resnet50_ibn_a, resnet18 or mobilenet_v2.")]
Pretrained = Annotated[str | None, typer.Option("--pretrained", help="torchvision-format ImageNet weights (.pth).")]
Init = Annotated[str | None, typer.Option("--init", help="Start from a run (its best.pt) or a checkpoint: UDA stage 2.")]
Epochs = Annotated[int | None, typer.Option("--epochs", help="Number of training epochs.")]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
Gpus = Annotated[str | None, typer.Option("--gpus", help="cpu, 0, or 0,1 (one worker per entry; cpu,cpu for two CPU workers).")]
Detach = Annotated[bool, typer.Option("--detach", "-d", help="Train in the background; print the run name at once.")]


@app.command()
def run(
    dataset: Annotated[str, typer.Argument(metavar="PRESET|DATASET", help="Preset or dataset: demo, cuhk03, market, "
                                           "duke, msmt17, duke2market, market2duke, market2msmt, duke2msmt, manifest, "
                                           "synthetic; PRESET+cam adds the camera-aware pipeline.")],
    config: Config = None, set: Sets = None, data_root: DataRoot = None, runs_dir: RunsDir = None, name: Name = None,
    arch: Arch = None, pretrained: Pretrained = None, init: Init = None, epochs: Epochs = None, seed: Seed = None,
    gpus: Gpus = None, detach: Detach = False,
) -> None:
    """Train a re-ID model without labels (OAE + CMLR on Cluster Contrast).

    Ctrl-C stops after the current iteration with a checkpoint (exit code 130; Ctrl-C again stops
    at once). A closed terminal or pipe does not stop it: its output then goes to the run's log.txt.

    Examples:

        oaecmlr run demo

        oaecmlr run cuhk03 --data-root ~/data/cuhk03-np --arch mobilenet_v2 --pretrained mobilenet_v2_imagenet.pth

        oaecmlr run market --gpus 0,1 --pretrained resnet50-0676ba61.pth --set oae.rho=0 --set cmlr.lam=0
    """
    from oaecmlr.cli.train import option_values, train

    train(target=dataset, config_file=config, sets=set, runs_dir=runs_dir, name=name, detach=detach, supervised=False,
          options=option_values(data_root=data_root, arch=arch, pretrained=pretrained, init=init, epochs=epochs,
                                seed=seed, gpus=gpus))


@app.command()
def pretrain(
    source: Annotated[str, typer.Argument(metavar="PRESET|DATASET", help="Labelled source dataset or preset, e.g. duke, market, cuhk03, demo.")],
    config: Config = None, set: Sets = None, data_root: DataRoot = None, runs_dir: RunsDir = None, name: Name = None,
    arch: Arch = None, pretrained: Pretrained = None, epochs: Epochs = None, seed: Seed = None, gpus: Gpus = None,
    detach: Detach = False,
) -> None:
    """Supervised training with ground-truth ids (label-smoothed CE + triplet): UDA stage 1 and the
    supervised upper bound.

    Examples:

        oaecmlr pretrain duke --pretrained resnet50-0676ba61.pth --name duke-source

        oaecmlr run duke2market --init duke-source
    """
    from oaecmlr.cli.train import option_values, train

    train(target=source, config_file=config, sets=set, runs_dir=runs_dir, name=name, detach=detach, supervised=True,
          options=option_values(data_root=data_root, arch=arch, pretrained=pretrained, epochs=epochs, seed=seed,
                                gpus=gpus))


@app.command()
def resume(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name or folder.")],
    runs_dir: RunsDir = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Train to this many epochs in total.")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Workers to continue on (default: the run's own); "
                                             "the global batch and its BatchNorm groups stay the same.")] = None,
    detach: Detach = False,
) -> None:
    """Continue a stopped, failed or killed run from its last checkpoint.

    A run that never finished its first epoch has no checkpoint: it starts over from epoch 0
    in the same folder (its earlier events move to events.discarded.jsonl). A finished run
    resumes only to more epochs (--epochs); its history so far is kept as it is.

    Examples:

        oaecmlr resume market-20261126-101500

        oaecmlr resume market-20261126-101500 --gpus 0 --epochs 60
    """
    from oaecmlr.cli.train import resume as resume_command

    resume_command(run_name=run_name, runs_dir=runs_dir, epochs=epochs, detach=detach, gpus=gpus)


@app.command()
def show(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name or folder.")],
    runs_dir: RunsDir = None,
    format: Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")] = TableOrJson.table,
) -> None:
    """A run's config, status, evaluations and per-epoch cluster statistics.

    Examples:

        oaecmlr show demo-20261126-101500

        oaecmlr show demo-20261126-101500 --format json | jq .best.mAP
    """
    from oaecmlr.cli.show import show_run

    show_run(run_name, runs_dir, format.value)


@app.command("runs")
def runs_list(
    runs_dir: RunsDir = None,
    format: Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")] = TableOrJson.table,
    where: Annotated[list[str] | None, typer.Option("--where", "-w", help="Keep runs where KEY OP VALUE holds: a "
                                                    "metric (mAP, R1), status, dataset, tag or config key; repeatable.")] = None,
    params: Annotated[bool, typer.Option("--params/--no-params", help="Columns for the config keys that differ "
                                          "between the listed runs.")] = True,
) -> None:
    """All runs: status (running, finished, failed, stopped or stale), epoch, best mAP and R1, the
    settings that differ between them, cross-camera cluster share, clusters, times, notes.

    Examples:

        oaecmlr runs

        oaecmlr runs --where 'mAP>0.2' --where status=finished

        oaecmlr runs --where tag=baseline --format json | jq '.[].name'
    """
    from oaecmlr.cli.listing import show_runs

    show_runs(runs_dir, format.value, where, params)


@app.command()
def note(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name or folder.")],
    text: Annotated[str | None, typer.Argument(help="A free-text note (replaces the previous one).")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Add a tag (repeatable).")] = None,
    untag: Annotated[list[str] | None, typer.Option("--untag", help="Remove a tag (repeatable).")] = None,
    runs_dir: RunsDir = None,
) -> None:
    """Attach a note and tags to a run (shown by `runs`, `show` and the dashboard; filter with
    `runs --where tag=NAME`). The run's events are not touched.

    Examples:

        oaecmlr note demo-a "baseline before the sampler change" --tag baseline

        oaecmlr note demo-a --untag baseline
    """
    from oaecmlr.cli.control import note_run

    note_run(run_name, runs_dir, text, tag or [], untag or [])


class CompareFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    md = "md"
    latex = "latex"


@app.command("compare")
def compare_cmd(
    run_names: Annotated[list[str], typer.Argument(metavar="RUN_A RUN_B [RUN_C ...]", help="Two or more runs; the first is the reference for the deltas.")],
    runs_dir: RunsDir = None,
    format: Annotated[CompareFormat, typer.Option("--format", "-f", help="table, json, csv (metric table), md or latex (a tabular).")] = CompareFormat.table,
    plot: Annotated[str | None, typer.Option("--plot", help="Also write mAP, R1 and clusters per epoch to this PNG, PDF or SVG file (by its ending; needs matplotlib).")] = None,
) -> None:
    """Compare runs: best and final metrics, deltas per evaluation, clusters per epoch, the config
    diff, comparability warnings, and mean ± std over runs that differ only in their seed.

    Examples:

        oaecmlr compare market-base market-oae-cmlr

        oaecmlr compare run-s1 run-s2 run-s3 --format md > results.md

        oaecmlr compare base oae --plot curves.png
    """
    from oaecmlr.cli.compare_view import compare_command

    compare_command(run_names, runs_dir, format.value, plot)


@app.command()
def stop(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name or folder.")],
    runs_dir: RunsDir = None,
) -> None:
    """Ask a running run to stop: it checkpoints and exits; `oaecmlr resume` continues it.

    It writes the run's STOP file, which the run reads after every iteration, and sends SIGTERM
    (sooner during clustering and evaluation) only to a process that is provably the run's own.

    Example:

        oaecmlr stop market-20261126-101500
    """
    from oaecmlr.cli.control import stop_run

    stop_run(run_name, runs_dir)


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


RunOrFile = Annotated[str, typer.Argument(metavar="RUN|FILE", help="A run name or folder, or a checkpoint file (.pt, "
                                          ".pth, .pth.tar): an existing file is a checkpoint file, anything else a run.")]
WhichCheckpoint = Annotated[Checkpoint | None, typer.Option("--checkpoint", help="A run's best.pt or last.pt (default: best).")]


@app.command("eval")
def eval_cmd(
    target: RunOrFile,
    runs_dir: RunsDir = None,
    checkpoint: WhichCheckpoint = None,
    rerank: Annotated[bool, typer.Option("--rerank", help="k-reciprocal re-ranking of the distances.")] = False,
    format: Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")] = TableOrJson.table,
    visrank: Annotated[str | None, typer.Option("--visrank", help="Write ranked-gallery PNGs (top 10 per query) to this folder.")] = None,
    num: Annotated[int, typer.Option("--num", min=1, help="Queries drawn by --visrank.")] = 20,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or a CUDA index like 0.")] = "auto",
    dataset: Annotated[str | None, typer.Option("--dataset", help="FILE only: the data to score on, e.g. market1501 "
                                                "(default: the dataset an oaecmlr checkpoint names; required for a "
                                                "Cluster Contrast one).")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="FILE only: the dataset folder (default: "
                                                  "$OAECMLR_DATA or ./data/NAME).")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="FILE only: resnet50, resnet50_ibn_a, resnet18 or "
                                             "mobilenet_v2 (default: the checkpoint's own, else resnet50).")] = None,
    height: Annotated[int | None, typer.Option("--height", min=1, help="FILE only: image height (default 256).")] = None,
    width: Annotated[int | None, typer.Option("--width", min=1, help="FILE only: image width (default 128).")] = None,
    pooling: Annotated[str | None, typer.Option("--pooling", help="FILE only: gem or avg (default: what the "
                                                "checkpoint was trained with, else gem).")] = None,
) -> None:
    """Score a run's checkpoint, or a checkpoint file, on a query and gallery (mAP, R1/5/10, mINP),
    optionally re-ranked; no run's events are changed.

    RUN|FILE: an existing file is a checkpoint file (oaecmlr, or a Cluster Contrast model_best.pth.tar),
    scored on the data that --dataset/--data-root name, built as --arch/--height/--width/--pooling say;
    anything else is a run, scored on its own data as its config.toml says.

    Examples:

        oaecmlr eval demo-20261126-101500

        oaecmlr eval demo-20261126-101500 --checkpoint last --rerank --format json

        oaecmlr eval demo-20261126-101500 --visrank ranks/ --num 10

        oaecmlr eval logs/market_resnet50/model_best.pth.tar --dataset market1501 --data-root data/market1501
    """
    from oaecmlr.cli.evaluate import FileOptions, eval_command

    options = FileOptions(dataset, data_root, arch, height, width, pooling)
    eval_command(target, runs_dir, checkpoint.value if checkpoint else None, rerank, format.value, visrank, num,
                 device, options)


@app.command("export")
def export_cmd(
    target: RunOrFile,
    runs_dir: RunsDir = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Folder to write (default: RUN/features-best or "
                                            "-last; features-NAME next to a FILE).")] = None,
    checkpoint: WhichCheckpoint = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or a CUDA index like 0.")] = "auto",
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not empty (the feature files are replaced).")] = False,
    dataset: Annotated[str | None, typer.Option("--dataset", help="FILE only: the data, as for eval.")] = None,
    data_root: Annotated[str | None, typer.Option("--data-root", help="FILE only: the dataset folder.")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="FILE only: as for eval (default: the checkpoint's own, else resnet50).")] = None,
    height: Annotated[int | None, typer.Option("--height", min=1, help="FILE only: image height (default 256).")] = None,
    width: Annotated[int | None, typer.Option("--width", min=1, help="FILE only: image width (default 128).")] = None,
    pooling: Annotated[str | None, typer.Option("--pooling", help="FILE only: gem or avg (default: the checkpoint's).")] = None,
) -> None:
    """Write query and gallery features, ids and cameras as numpy files, as torchreid users expect.

    The files: query_features.npy / gallery_features.npy (float32, N x D, L2-normalised,
    exactly what eval scores), query_pids.npy, query_camids.npy, gallery_pids.npy, gallery_camids.npy
    (int64), query_paths.txt / gallery_paths.txt (one path a line; empty for the synthetic set) and
    meta.json. RUN|FILE is read as for `oaecmlr eval`.

    Examples:

        oaecmlr export demo-20261126-101500

        oaecmlr export demo-20261126-101500 --checkpoint last --out features/ --force

        oaecmlr export logs/model_best.pth.tar --dataset market1501 --data-root data/market1501

        python -c "import numpy as np; q = np.load('features/query_features.npy'); print(q.shape)"
    """
    from oaecmlr.cli.evaluate import FileOptions
    from oaecmlr.cli.export import export_command

    options = FileOptions(dataset, data_root, arch, height, width, pooling)
    export_command(target, runs_dir, out, checkpoint.value if checkpoint else None, device, force, options)


@app.command()
def sweep(
    dataset: Annotated[str, typer.Argument(metavar="PRESET|DATASET", help="Preset or dataset, as for `oaecmlr run`.")],
    grid: Annotated[list[str] | None, typer.Option("--grid", "-g", help="A key and its values, e.g. --grid oae.rho=0,1 (repeatable).")] = None,
    seeds: Annotated[str | None, typer.Option("--seeds", help="Seeds, e.g. 1,2,3 (default: the config's seed).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="Device slots, e.g. 0,1: one run per slot at a time (default: one run at a time).")] = None,
    runs_dir: RunsDir = None, config: Config = None, set: Sets = None, data_root: DataRoot = None,
    arch: Arch = None, pretrained: Pretrained = None, epochs: Epochs = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Start of the run names (default: DATASET).")] = None,
) -> None:
    """Train every combination of the --grid values for each seed, then compare them all with
    mean ± std over seeds. Finished runs are skipped, so re-running a sweep completes it.

    Examples:

        oaecmlr sweep demo --grid oae.rho=0,1 --grid cmlr.lam=0,0.5 --seeds 1,2,3

        oaecmlr sweep market --grid oae.rho=0,1 --seeds 1,2 --gpus 0,1 --pretrained resnet50-0676ba61.pth
    """
    from oaecmlr.cli.sweep import sweep_command
    from oaecmlr.cli.train import option_values, resolve

    def build(extra_sets, seed, gpu):
        resolved = resolve(target=dataset, config_file=config, sets=[*(set or []), *extra_sets], quiet=True,
                           options=option_values(data_root=data_root, arch=arch, pretrained=pretrained, epochs=epochs,
                                                 seed=seed, gpus=gpu))
        return resolved.config, resolved.preset

    ok = sweep_command(dataset, grid or [], seeds, gpus, prefix, runs_dir, build)
    raise typer.Exit(0 if ok else 1)


data_app = typer.Typer(help="Check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="market1501, dukemtmcreid, msmt17, cuhk03, manifest or synthetic.")],
    data_root: DataRoot = None,
    decode: Annotated[bool, typer.Option("--decode", help="Decode every image (no cache) to find broken files.")] = False,
    cuhk03: Annotated[str, typer.Option("--cuhk03", help="cuhk03 only: the CUHK03-NP variant, labeled or detected "
                                        "(as data.cuhk03).")] = "labeled",
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="Accept image paths (symlinks, manifest "
                                                "entries) outside the data root (as data.allow_outside).")] = False,
    format: Annotated[TableOrJson, typer.Option("--format", "-f", help="table or json.")] = TableOrJson.table,
) -> None:
    """Parse a dataset and compare its images, ids and cameras per split with the standard release.

    Examples:

        oaecmlr data check cuhk03 --data-root ~/data/cuhk03-np

        oaecmlr data check market --decode --format json

        oaecmlr data check cuhk03 --data-root data/cuhk03 --cuhk03 detected
    """
    from oaecmlr.cli.datacheck import data_check_command

    ok = data_check_command(dataset, data_root, decode, format.value, cuhk03=cuhk03, allow_outside=allow_outside)
    raise typer.Exit(0 if ok else 1)


@app.command()
def tui(runs_dir: RunsDir = None) -> None:
    """The live dashboard of all runs (needs textual).

    Example:

        oaecmlr tui --runs-dir runs
    """
    import importlib.util

    from oaecmlr.errors import CliError

    if importlib.util.find_spec("textual") is None:
        raise CliError("the dashboard needs textual: pip install 'oaecmlr[tui]'")
    try:
        from oaecmlr_tui.app import run_dashboard
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("oaecmlr_tui"):
            raise
        raise CliError("the dashboard package oaecmlr_tui is not installed: pip install 'oaecmlr[tui]'") from None
    run_dashboard(runs_dir)


@app.command()
def doctor(runs_dir: RunsDir = None) -> None:
    """Check torch, CUDA devices, kNN backends, the dashboard and the runs folder.

    Example:

        oaecmlr doctor
    """
    from oaecmlr.cli.doctor import doctor_report

    ok = doctor_report(runs_dir)
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Entry point: known errors, and the system's (OSError), become one line on stderr and exit code 1."""
    from oaecmlr.errors import OaecmlrError

    one_line_warnings()
    try:
        code = app(standalone_mode=False)  # an Exit inside a command comes back as its code
    except OaecmlrError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # stderr closed early (`oaecmlr runs 2>&1 | head -1`): end quietly, as Rich does
        from oaecmlr.store.processes import detach_console

        detach_console(os.devnull)
        sys.exit(1)
    except OSError as exc:  # the machine's, not a bug: a full disk, a permission, a file where a folder belongs
        err_console.print(f"[red]error:[/] {escape(os_error_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # usage errors: click's, which typer >= 0.26 vendors (no `click` package)
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
