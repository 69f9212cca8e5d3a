"""``segtoolkit atlas``: segment a target image by registering one or more atlases and fusing their labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...methods.atlas.propagation import INTERPOLATIONS
from ...methods.atlas.strategy import ATLAS_FUSIONS, AUTO, BETWEEN_SUBJECTS_MARGIN_MM
from .common import add_label_output_arguments, check_label_output, write_label_output
from .register import add_registration_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "atlas", help="atlas segmentation: register atlases onto an image, propagate and fuse their labels",
        description="Register each atlas (image + label map) onto the target image, warp its labels onto the "
                    "target grid without mixing labels, and fuse several atlases by majority voting, STAPLE or "
                    "locally weighted voting. By default (auto) each atlas is compared with the target: the same "
                    "subject or space (e.g. another phase of one scan) is registered from its own position up to "
                    "a B-spline; another subject starts at the image centres and is registered rigid + affine "
                    "around its labels, and the fused labels are then adapted to the target's intensities. "
                    "The choices are printed. Label names and colours come from the atlas label maps "
                    "(.seg.nrrd) or --labels.")
    parser.add_argument("target", type=Path, help="image to segment")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output label map (.seg.nrrd keeps names and colours; .nii.gz, .nrrd, .mha)")
    parser.add_argument("--atlas", nargs=2, action="append", required=True, metavar=("IMAGE", "LABELS"),
                        type=Path, help="an atlas image and its label map on the same grid (repeatable)")
    parser.add_argument("--labels", type=Path, metavar="JSON", help="label names/colours for atlas label maps "
                        "that do not carry them")
    add_atlas_method_arguments(parser)
    parser.add_argument("--save-transforms", type=Path, metavar="DIR",
                        help="write each atlas's transform into this existing folder (<atlas name>.h5)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="atlases registered in parallel worker processes (default: 1)")
    add_label_output_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...errors import InputError, OutputError
    from ...io import LabelTable, check_output_path, read_scalar_image
    from ...methods.atlas.multi_atlas import load_atlas, segment_with_atlases
    from ...methods.atlas.registration import check_transform_path, save_transform
    from ...progress import ConsoleProgress

    inputs = [args.target] + [path for pair in args.atlas for path in pair]
    check_output_path(args.output, inputs)
    check_label_output(args, args.output, args.target)
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be at least 1")
    if args.save_transforms is not None and not args.save_transforms.is_dir():
        raise OutputError(f"{args.save_transforms}: --save-transforms folder does not exist; create it first")
    table = LabelTable.from_json(args.labels) if args.labels else None
    target = read_scalar_image(args.target, args.dicom_series if args.target.is_dir() else None)
    atlases = [load_atlas(image, labels, table) for image, labels in args.atlas]
    names = _unique_names([atlas.name for atlas in atlases])
    for atlas, name in zip(atlases, names):
        atlas.name = name
        if args.save_transforms is not None:
            check_transform_path(args.save_transforms / f"{name}.h5", args.transform, inputs)
    options = registration_options(args)
    with ConsoleProgress("atlas") as progress:
        result = segment_with_atlases(target, atlases, args.fusion, options, args.workers, progress,
                                      target_name=str(args.target))
    if args.save_transforms is not None:
        for propagated in result.atlases:
            save_transform(propagated.registration.transform, args.save_transforms / f"{propagated.name}.h5")
    write_label_output(result.label_map, args, args.output, args.target, "atlas")
    for line in result.summary:
        print(line)
    for propagated in result.atlases:
        times = ", ".join(f"{stage.name} {stage.seconds:.1f} s" for stage in propagated.registration.stages)
        print(f"{propagated.name}: {times}")
    print(f"wrote {args.output} ({len(result.atlases)} atlas{'es' if len(result.atlases) > 1 else ''}, "
          f"{result.fusion if len(result.atlases) > 1 else 'no'} fusion)")
    return 0


def add_atlas_method_arguments(parser) -> None:
    """How atlases are registered, warped and fused: options shared by ``atlas`` and ``cohort run --task atlas``."""
    parser.add_argument("--fusion", choices=ATLAS_FUSIONS, default=AUTO,
                        help="how several atlases are combined (default auto: majority voting, adapted to the "
                             "target's intensities between subjects)")
    add_registration_arguments(parser, default_transform=AUTO)
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default="onehot",
                        help="label warping: per-label linear interpolation + argmax (default) or nearest neighbour")
    parser.add_argument("--mask-margin", type=_margin, default=AUTO, metavar="MM",
                        help="register only the region of each atlas's labels dilated by MM mm; 'none': the whole "
                             f"image (default auto: {BETWEEN_SUBJECTS_MARGIN_MM:g} mm between subjects, none "
                             "otherwise)")
    parser.add_argument("--refine", choices=(AUTO, "on", "off"), default=AUTO,
                        help="adapt the fused labels to the target's intensities (default auto: between subjects "
                             "with automatic fusion)")


def registration_options(args: argparse.Namespace):
    """The :class:`RegistrationOptions` of the parsed atlas method options (checked)."""
    from ...errors import InputError
    from ...methods.atlas.multi_atlas import RegistrationOptions

    if isinstance(args.mask_margin, float) and not 0 <= args.mask_margin < float("inf"):  # NaN fails too
        raise InputError(f"--mask-margin {args.mask_margin}: must be a finite number, zero or positive")
    return RegistrationOptions(args.transform, args.preset, args.metric, args.init, args.interpolation,
                               args.mask_margin, args.refine)


def _margin(text: str) -> float | str | None:
    """``--mask-margin``: millimetres, ``auto`` or ``none``."""
    if text.lower() in (AUTO, "none"):
        return text.lower() if text.lower() == AUTO else None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a margin in mm, 'auto' or 'none'") from None


def _unique_names(names: list[str]) -> list[str]:
    """Atlas names without image extensions, numbered where two would collide."""
    stems = [name.split(".")[0] or "atlas" for name in names]
    return [stem if stems.count(stem) == 1 else f"{stem}_{number + 1}" for number, stem in enumerate(stems)]
