"""``segtoolkit plan DATA -o PLAN.json``: fingerprint a training dataset and write the self-configured plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io import check_output_path
from ...progress import ConsoleProgress
from .common import check_ignore_label


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="self-configure deep training for a dataset (spacing, normalisation, patch, network)",
        description="Fingerprint a dataset folder (images/ labels/ dataset.json, or nnU-Net imagesTr/ labelsTr/) "
                    "and write the training plan as editable JSON.")
    parser.add_argument("data", type=Path, metavar="DATA", help="dataset folder")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="PLAN.json", help="plan file to write")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="device the plan is sized for (default cpu: small patches)")
    parser.add_argument("--configuration", choices=("2d", "3d"), help="force 2D or 3D (default: chosen from the data)")
    parser.add_argument("--memory-gb", type=float, help="training memory budget in GB (default 3 on CPU, 8 on CUDA)")
    parser.add_argument("--ignore-label", type=int, help="label value of unannotated voxels (default: dataset.json "
                        "or 255)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.deep import require_deep

    require_deep()
    from ...methods.deep.dataset import load_dataset
    from ...methods.deep.planning import check_memory_budget, plan_dataset, save_plan

    check_memory_budget(args.memory_gb, args.device)
    check_ignore_label(args.ignore_label)
    check_output_path(args.output, [args.data, args.data / "dataset.json"])
    dataset = load_dataset(args.data, args.ignore_label)
    # never over one of the dataset's own files (its dataset.json, an image or label map), before any work
    check_output_path(args.output, [path for case in dataset.cases for path in (*case.images, case.label)])
    with ConsoleProgress("plan") as bar:
        plan = plan_dataset(dataset, args.device, args.configuration, args.memory_gb, progress=bar)
    save_plan(plan, args.output)
    print(f"{args.output}: {plan['configuration']} plan, patch {'x'.join(map(str, plan['patch_size']))}, batch "
          f"{plan['batch_size']}, {describe_resampling(plan)}, {len(plan['network']['strides'])} stages, about "
          f"{plan['memory_estimate_gb']} GB to train")
    return 0


def describe_resampling(plan: dict) -> str:
    """'spacing 0.8, 0.8, keep mm' or, when the plan resamples to a common size, 'size 195x131 voxels (...)'."""
    if plan.get("target_size"):
        size = "x".join("keep" if s is None else str(s) for s in plan["target_size"])
        return f"size {size} voxels (the field of view follows the object)"
    spacing = ", ".join("keep" if s is None else f"{s:.3g}" for s in plan["target_spacing"])
    return f"spacing {spacing} mm"
