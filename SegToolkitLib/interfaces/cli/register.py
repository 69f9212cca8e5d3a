"""``segtoolkit register``: register a moving image onto a fixed image and save the transform."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...methods.atlas.registration import INITIALISATIONS, METRICS, PRESETS, TRANSFORM_TYPES
from ...methods.atlas.strategy import AUTO
from .common import add_format_argument, format_rows


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "register", help="register a moving image onto a fixed image (rigid, affine, deformable)",
        description="Find the transform that maps the fixed image's points onto the moving image: initialisation, "
                    "then rigid, affine and optionally a deformable stage (B-spline 'deformable' or "
                    "'diffeomorphic' demons). The transform (one composite) is saved for ITK and 3D Slicer; "
                    "per-stage times and metric values are printed.")
    add_registration_arguments(parser)
    parser.add_argument("fixed", type=Path, help="fixed (reference) image: the result lives on its grid")
    parser.add_argument("moving", type=Path, help="moving image, brought onto the fixed image")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="transform file (.tfm, .txt, .mat or .h5; diffeomorphic needs .h5)")
    parser.add_argument("--resampled", type=Path, metavar="OUT", help="also write the moving image resampled "
                        "onto the fixed grid")
    parser.add_argument("--fixed-mask", type=Path, metavar="M", help="only fixed-image voxels inside this mask count")
    parser.add_argument("--moving-mask", type=Path, metavar="M", help="only moving-image voxels inside this mask count")
    add_format_argument(parser)
    parser.set_defaults(func=run)


def add_registration_arguments(parser: argparse.ArgumentParser, default_transform: str = "affine") -> None:
    """Options shared by ``register`` and ``atlas`` (``atlas`` passes ``auto``: settings chosen per atlas)."""
    auto = (AUTO,) if default_transform == AUTO else ()
    parser.add_argument("--transform", choices=(*auto, *TRANSFORM_TYPES), default=default_transform,
                        help=f"last stage to run (default: {default_transform}); 'deformable' = B-spline free-form "
                             "deformation, 'diffeomorphic' = demons (same modality only)")
    parser.add_argument("--preset", choices=PRESETS, default="default", help="speed/accuracy trade-off")
    parser.add_argument("--metric", choices=(*auto, *METRICS), default=auto[0] if auto else "mi",
                        help="mi = Mattes mutual information (any modality); correlation (same modality)" +
                             ("; default auto: mi for the same subject or space, both between subjects (the one "
                              "whose labels fit the target's intensities better is kept)" if auto else
                              " (default: mi)"))
    parser.add_argument("--init", choices=(*auto, *INITIALISATIONS), default=auto[0] if auto else "geometry",
                        help="initial alignment: geometric centres, centres of mass (moments), image axes and "
                             "centres (axes: same planning, different scanner pose), or none (the images are "
                             "already in one physical space)" + ("; default auto: none for the same subject or "
                                                                 "space, geometry otherwise" if auto else
                                                                 " (default: geometry)"))


def run(args: argparse.Namespace) -> int:
    from ...io import check_output_path, read_image, read_scalar_image, write_image
    from ...methods.atlas.registration import check_transform_path, resample_image, save_transform
    from ...methods.atlas.registration import register as register_images
    from ...progress import ConsoleProgress

    inputs = [args.fixed, args.moving] + [mask for mask in (args.fixed_mask, args.moving_mask) if mask]
    check_transform_path(args.output, args.transform, inputs)
    if args.resampled is not None:
        check_output_path(args.resampled, inputs + [args.output])
    fixed = read_scalar_image(args.fixed)
    moving = read_scalar_image(args.moving)
    fixed_mask = read_image(args.fixed_mask) if args.fixed_mask else None
    moving_mask = read_image(args.moving_mask) if args.moving_mask else None
    with ConsoleProgress("register") as progress:
        result = register_images(fixed, moving, args.transform, args.preset, args.metric, args.init, fixed_mask,
                                 moving_mask, progress=progress, fixed_name=str(args.fixed),
                                 moving_name=str(args.moving))
    resampled = resample_image(moving, fixed, result.transform) if args.resampled is not None else None
    written: list[Path] = []
    try:  # both outputs or neither: a transform without the image it was asked with is a half-finished result
        if resampled is not None:
            written.append(write_image(resampled, args.resampled))
        save_transform(result.transform, args.output)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    rows = [{"stage": stage.name, "seconds": round(stage.seconds, 2), "metric": stage.metric_value,
             "iterations": stage.iterations} for stage in result.stages]
    print(format_rows(rows, args.format, document={"transform": str(args.output), "stages": rows}), end="")
    return 0
