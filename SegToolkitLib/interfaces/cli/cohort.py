"""``segtoolkit cohort run|status|report``: one task over a whole cohort on a Dask cluster, resumable, with QC."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ...cohort.choices import FORMATS, TASKS
from ...methods.deep.backends import BACKENDS
from .atlas import add_atlas_method_arguments, registration_options

SUMMARY_SECONDS = 30.0  # a summary line this often in log output


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cohort", help="run a task over a cohort (Dask cluster, resumable) with measurements and automatic QC",
        description="Run predict, atlas, grow, snake or measure over every case of a folder or CSV manifest. "
                    "Outputs (labels/, measurements.parquet/.csv, qc.csv, report.html, run.json) go to OUTDIR; "
                    "running the same command again does only what is missing. See docs/cohort.md.")
    commands = parser.add_subparsers(dest="cohort_command", metavar="ACTION")
    commands.required = True
    _add_run(commands)
    status = commands.add_parser("status", help="how far a cohort run is",
                                 description="Show how many cases are done, failed, missing and flagged.")
    status.add_argument("outdir", type=Path, metavar="OUTDIR")
    status.set_defaults(func=run_status)
    rebuild = commands.add_parser("report", help="rebuild qc.csv and report.html (e.g. after review)",
                                  description="Recompute the QC from the case records (optionally with other "
                                              "thresholds) and rewrite qc.csv and report.html, keeping the "
                                              "'reviewed' column people filled in qc.csv.")
    rebuild.add_argument("outdir", type=Path, metavar="OUTDIR")
    rebuild.add_argument("--qc", action="append", default=[], metavar="NAME=VALUE",
                         help="change a QC threshold (repeatable; names in docs/cohort.md)")
    rebuild.set_defaults(func=run_report)


def _add_run(commands) -> None:
    parser = commands.add_parser(
        "run", help="run a task over a cohort",
        description="INPUT: a folder (NIfTI/NRRD/MHA files, DICOM series found recursively) or a CSV manifest "
                    "(columns case, image[, image_0001...][, seeds][, reference][, labels][, group]).")
    parser.add_argument("input", type=Path, metavar="INPUT", help="folder of images or CSV manifest")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    parser.add_argument("--task", choices=TASKS, required=True, help="what to do with each case")
    parser.add_argument("--format", dest="output_format", choices=FORMATS, default="nii.gz",
                        help="label map format in OUTDIR/labels (default nii.gz; seg.nrrd keeps names and colours; dcm "
                             "writes a DICOM SEG of each case's DICOM series)")
    engine = parser.add_mutually_exclusive_group()
    engine.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask cluster (tcp://HOST:8786)")
    engine.add_argument("--workers", type=int, metavar="N",
                        help="worker processes of the local cluster (default: half the CPU cores)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed cases again (by default they are "
                        "retried only when their input files changed)")
    parser.add_argument("--modality", choices=("auto", "CT", "MR"), default="auto",
                        help="for the intensity check (default auto: the model's, else CT when most images are in HU)")
    parser.add_argument("--qc", action="append", default=[], metavar="NAME=VALUE",
                        help="set a QC threshold (repeatable; names and defaults in docs/cohort.md)")
    deep = parser.add_argument_group("predict")
    deep.add_argument("-m", "--model", type=Path, metavar="MODEL",
                      help="any model predict takes: a model folder, an nnU-Net folder or zip, a store model name")
    deep.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                      help="mirroring test-time augmentation (default: the model's choice)")
    deep.add_argument("--uncertainty", choices=("entropy", "disagreement"),
                      help="measure uncertainty for QC (disagreement = TTA passes disagreeing; needs --tta)")
    deep.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    deep.add_argument("--backend", choices=BACKENDS, default="auto",
                      help="inference backend (default auto, as for predict)")
    atlas = parser.add_argument_group("atlas")
    atlas.add_argument("--atlas", nargs=2, action="append", default=[], metavar=("IMAGE", "LABELS"), type=Path,
                       help="an atlas image and its label map (repeatable)")
    add_atlas_method_arguments(atlas)  # the atlas command's defaults: chosen per atlas and target (auto)
    classic = parser.add_argument_group("grow and snake (seeds from the manifest's seeds column)")
    classic.add_argument("--method", choices=("connected", "confidence"), default="connected",
                         help="grow: growing method (default connected)")
    classic.add_argument("--lower", type=float, help="grow: lowest value grown into")
    classic.add_argument("--upper", type=float, help="grow: highest value grown into")
    classic.add_argument("--radius", type=float, metavar="MM", help="snake: seed bubble radius")
    classic.add_argument("--iterations", type=int, default=2000, help="snake: maximum iterations (default 2000)")
    classic.add_argument("--snake-model", choices=("geodesic", "chan-vese"), default="geodesic",
                         help="snake: contour model (default geodesic)")
    parser.add_argument("--labels", type=Path, metavar="NAMES.json", help="label names (measure, atlas)")
    parser.set_defaults(func=run_run)


def task_options(args: argparse.Namespace) -> dict:
    """The options of the chosen task only (what run.json records and a resumed run must repeat)."""
    if args.task == "predict":
        return {"model": _model_spec(args.model), "tta": args.tta,
                "uncertainty": args.uncertainty, "device": args.device, "backend": args.backend}
    if args.task == "atlas":
        return {"atlases": [[str(i.resolve()), str(labels.resolve())] for i, labels in args.atlas],
                "labels_json": str(args.labels.resolve()) if args.labels else None, "fusion": args.fusion,
                "registration": dataclasses.asdict(registration_options(args))}
    if args.task == "grow":
        return {"method": args.method, "lower": args.lower, "upper": args.upper}
    if args.task == "snake":
        return {"radius": args.radius, "iterations": args.iterations, "snake_model": args.snake_model}
    return {"labels_json": str(args.labels.resolve()) if args.labels else None}


def _model_spec(model: Path | None) -> str | None:
    """A model path made absolute (workers may run elsewhere); a store name as it is."""
    if model is None:
        return None
    return str(model.resolve()) if model.exists() else str(model)


def run_run(args: argparse.Namespace) -> int:
    from ...cohort import QcThresholds, run_cohort

    thresholds = QcThresholds.from_settings(texts=args.qc)
    with progress_display("cohort") as progress:
        result = run_cohort(args.input, args.output, args.task, task_options(args), scheduler=args.scheduler,
                            workers=args.workers, output_format=args.output_format, modality=args.modality,
                            thresholds=thresholds, retry_failed=args.retry_failed, progress=progress)
    print(f"{result.outdir}: {result.total} cases, {result.done} done, {result.failed} failed, {result.flagged} "
          f"flagged for review ({result.ran} run now, {result.seconds:.1f} s); see {result.files['report']}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ...cohort import cohort_status

    state = cohort_status(args.outdir)
    print(f"{state['outdir']}: task {state['task']}, {state['total']} cases: {state['done']} done, {state['failed']} "
          f"failed, {state['missing']} not finished; {state['flagged']} flagged for review ({state['reviewed']} "
          f"reviewed){'; a run is in progress' if state['running'] else ''}; last run finished {state['last_run']}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ...cohort import rebuild_report

    files = rebuild_report(args.outdir, args.qc)
    print(f"wrote {files['qc']} and {files['report']}")
    return 0


class progress_display:  # noqa: N801 - used like a function in a with statement
    """A progress bar on a terminal; otherwise a log line per case and a summary every SUMMARY_SECONDS."""

    def __init__(self, description: str) -> None:
        self.terminal = sys.stderr.isatty()
        self.start = time.monotonic()
        self.last_summary = self.start
        self.bar = None
        if self.terminal:
            from ...progress import ConsoleProgress

            self.bar = ConsoleProgress(description)

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is not None:
            self.bar(fraction, message)
            return
        now = time.monotonic()
        print(f"segtoolkit cohort: {message}", flush=True)
        if now - self.last_summary >= SUMMARY_SECONDS or fraction >= 1.0:
            elapsed = now - self.start
            left = elapsed * (1 - fraction) / fraction if fraction > 0 else float("nan")
            print(f"segtoolkit cohort: {100 * fraction:.0f}% finished, {elapsed:.0f} s elapsed, about {left:.0f} s "
                  "left", flush=True)
            self.last_summary = now

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
