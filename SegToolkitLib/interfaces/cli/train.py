"""``segtoolkit train DATA -o MODEL_DIR``: train a segmentation network (resumes an interrupted run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...errors import InputError
from ...progress import ConsoleProgress
from .common import check_ignore_label, check_output_folder_apart

DATA_LAYOUT = """dataset folder layout (DATA):
  DATA/images/<case>.nii.gz        the images (.nii.gz, .nii, .nrrd, .mha); extra channels as <case>_0001.nii.gz
  DATA/labels/<case>.nii.gz        the label map of each case: 0 = background, 1, 2... = structures, on the
                                   same voxel grid (size, spacing, origin, direction) as its image
  DATA/dataset.json                label names: {"labels": {"1": "liver", "2": "spleen"}}; optional "modality"
                                   ("CT" selects CT intensity normalisation) and "ignore_label" (default 255:
                                   voxels with that value are unannotated)
nnU-Net's raw layout is accepted as it is: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json.
Hold cases out for testing with --exclude CASE1,CASE2; one case in five (--fold) is used for validation."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a deep segmentation model on a dataset folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a network on a dataset folder into MODEL_DIR (model.json + model.safetensors + "
                    "training_curve.png).\nRun the same command again to resume after an interruption; a finished "
                    "model is only replaced with --overwrite.",
        epilog=DATA_LAYOUT)
    parser.add_argument("data", type=Path, metavar="DATA", help="dataset folder (layout below)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL_DIR", help="model folder to write")
    parser.add_argument("--plan", type=Path, metavar="PLAN.json",
                        help="plan from 'segtoolkit plan' (default: plan now)")
    parser.add_argument("--network", default="dynunet", choices=("dynunet", "resenc", "dilated", "swinunetr"),
                        help="network (default dynunet: U-Net with deep supervision)")
    parser.add_argument("--fold", type=int, default=0, help="held-out validation fold 0..4 (default 0)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="number of epochs (default: the plan's)")
    length.add_argument("--time-budget", type=float, metavar="MINUTES", help="train for this many minutes")
    parser.add_argument("--iterations-per-epoch", type=int, help="steps per epoch (default: the plan's)")
    parser.add_argument("--init", type=Path, metavar="MODEL_DIR", help="start from this model's weights")
    parser.add_argument("--freeze-encoder", action="store_true", help="with --init: keep the encoder fixed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    parser.add_argument("--ignore-label", type=int, help="label value of unannotated voxels (default 255)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--exclude", action="append", default=[], metavar="CASE[,CASE...]",
                        help="hold these cases out of training and validation (case names as in labels/, without "
                             "extension; repeat the option or separate names with commas)")
    parser.add_argument("--overwrite", action="store_true",
                        help="train again and replace a finished model in MODEL_DIR")
    parser.add_argument("--no-int8", action="store_true",
                        help="3D models: skip adding the checked int8 network for fast CPU prediction (it takes "
                        "1-7 minutes after training, outside the time budget)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.deep import require_deep

    require_deep()
    from ...methods.deep.dataset import load_dataset
    from ...methods.deep.planning import load_plan
    from ...methods.deep.training import TrainingOptions, check_model_folder, train

    for name, value in (("--epochs", args.epochs), ("--time-budget", args.time_budget),
                        ("--iterations-per-epoch", args.iterations_per_epoch)):
        if value is not None and not 0 < value < float("inf"):
            raise InputError(f"{name} {value}: must be a positive number")
    check_ignore_label(args.ignore_label)
    check_output_folder_apart(args.output, [args.data], "model")
    check_model_folder(args.output, args.overwrite, not args.no_int8)
    plan = load_plan(args.plan) if args.plan else None
    excluded = tuple(name.strip() for item in args.exclude for name in item.split(",") if name.strip())
    dataset = load_dataset(args.data, args.ignore_label, exclude=excluded)
    options = TrainingOptions(network=args.network, fold=args.fold, epochs=args.epochs,
                              time_budget_minutes=args.time_budget, iterations_per_epoch=args.iterations_per_epoch,
                              init=args.init, freeze_encoder=args.freeze_encoder, device=args.device, seed=args.seed,
                              quantize=not args.no_int8, overwrite=args.overwrite, exclude=excluded,
                              log=None if sys.stdout.isatty() else _print_line)
    with ConsoleProgress("train") as bar:
        summary = train(dataset, args.output, plan, options, progress=bar)
    print(f"{args.output}: {summary['epochs']} epochs, {summary['iterations']} iterations in "
          f"{summary['seconds']:.0f} s; validation Dice {summary['final_validation_dice']:.3f}; {summary['int8']}"
          + (f" ({summary['note']})" if summary.get("note") else ""))
    return 0


def _print_line(line: str) -> None:
    """A log line for non-terminal output (a file, a pipe, CI): flushed at once so the log is never silent."""
    print(line, flush=True)
