"""``segtoolkit snake``: an active contour (geodesic or Chan-Vese level set) from seed bubbles or a mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import InputError
from ._classic import add_image_arguments, add_seed_arguments, parse_points, print_summary, read_input, write_result


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "snake", help="active contour (snake) from seed points or an initial mask",
        description="Evolve an active contour from seed bubbles (or an initial mask) until it stops. The feature "
                    "image (edge map or intensity-range probability) is derived from the seed neighbourhood. By "
                    "default (--shape auto) a click on a 2D image inside a closed bright elliptical ridge (a fetal "
                    "skull, a vessel wall) starts from an ellipse fitted robustly to that ridge and keeps the "
                    "contour elliptical; elsewhere the contour is free and inflates from a seed bubble.")
    add_image_arguments(parser)
    add_seed_arguments(parser, "seed point X,Y,Z (LPS mm; X,Y for 2D images) where a bubble starts; repeatable")
    parser.add_argument("--radius", type=float, metavar="MM", help="seed bubble radius in mm (default 2 mm)")
    parser.add_argument("--init", metavar="MASK", help="start from this mask (same grid) instead of bubbles")
    parser.add_argument("--model", choices=("geodesic", "chan-vese"), default="geodesic",
                        help="geodesic (edge/region driven, default) or chan-vese (intensity competition)")
    parser.add_argument("--feature", choices=("auto", "edge", "region"), default="auto",
                        help="geodesic model: stop at edges, or grow within the intensity range that region growing "
                             "derives from the seeds (region probability); auto (default) picks region for 3D "
                             "volumes (CT, MRI) and homogeneous 2D neighbourhoods, edges for textured 2D images "
                             "(ultrasound) and for a click inside a bright elliptical ridge")
    parser.add_argument("--lower", type=float, help="region feature: lowest intensity inside (with --upper)")
    parser.add_argument("--upper", type=float, help="region feature: highest intensity inside (with --lower)")
    parser.add_argument("--expansion", type=float, default=None,
                        help="balloon force; negative shrinks (default 1 for a free geodesic contour, 0 for "
                             "chan-vese and for a contour started on a fitted ellipse)")
    parser.add_argument("--shape", choices=("auto", "ellipse", "free"), default="auto",
                        help="shape prior: ellipse, free, or auto (default: ellipse for a 2D click inside a bright "
                             "elliptical ridge, free otherwise)")
    parser.add_argument("--smoothness", type=float, default=None,
                        help="curvature force in mm (default 0.6 for a region contour in 3D, 2.5 within the slices "
                             "of a thick-slice stack, 0.3 otherwise)")
    parser.add_argument("--edge-attraction", type=float, default=1.0, help="pull towards edges (default 1)")
    parser.add_argument("--iterations", type=int, default=2000, help="maximum number of iterations (default 2000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...io import check_output_path
    from ...io.images import read_mask
    from ...methods.classic import snake
    from ...progress import ConsoleProgress

    image = read_input(args)
    if args.init:
        check_output_path(args.output, [args.image, Path(args.init)])
    initial = read_mask(args.init, image) if args.init else None  # a DICOM SEG is placed on the image
    seeds = parse_points(args.seed, image)
    details: dict = {}
    with ConsoleProgress("snake") as progress:
        result = snake(image, seeds, initial, iterations=args.iterations,
                       progress=progress, model=args.model, feature=args.feature, expansion=args.expansion,
                       smoothness=args.smoothness, edge_attraction=args.edge_attraction, radius_mm=args.radius,
                       shape=args.shape, ijk=args.ijk, ras=args.ras, details=details,
                       intensity_range=intensity_range(args))
    write_result(result, args.output, "snake", args)
    print_summary("snake", result, image, seeds, args, details)
    return 0


def intensity_range(args: argparse.Namespace) -> tuple[float, float] | None:
    """--lower/--upper as the region feature's range (both or neither)."""
    if args.lower is None and args.upper is None:
        return None
    if args.lower is None or args.upper is None:
        raise InputError("snake: give both --lower and --upper (or neither: the range then comes from the seeds)")
    return args.lower, args.upper
