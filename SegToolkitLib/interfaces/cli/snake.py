"""``segtoolkit snake``: an active contour (geodesic or Chan-Vese level set) from seed bubbles or a mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._classic import add_image_arguments, add_seed_arguments, parse_points, read_input, write_result


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
    parser.add_argument("--feature", choices=("edge", "region"), default="edge",
                        help="geodesic model: stop at edges (default) or grow within the seed's intensity range")
    parser.add_argument("--expansion", type=float, default=None,
                        help="balloon force; negative shrinks (default 1 for a free geodesic contour, 0 for "
                             "chan-vese and for a contour started on a fitted ellipse)")
    parser.add_argument("--shape", choices=("auto", "ellipse", "free"), default="auto",
                        help="shape prior: ellipse, free, or auto (default: ellipse for a 2D click inside a bright "
                             "elliptical ridge, free otherwise)")
    parser.add_argument("--smoothness", type=float, default=0.3, help="curvature force (default 0.3)")
    parser.add_argument("--edge-attraction", type=float, default=1.0, help="pull towards edges (default 1)")
    parser.add_argument("--iterations", type=int, default=2000, help="maximum number of iterations (default 2000)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...io import check_output_path, read_image
    from ...methods.classic import snake
    from ...progress import ConsoleProgress

    image = read_input(args)
    if args.init:
        check_output_path(args.output, [args.image, Path(args.init)])
    initial = read_image(args.init) if args.init else None
    with ConsoleProgress("snake") as progress:
        result = snake(image, parse_points(args.seed, image), initial, iterations=args.iterations,
                       progress=progress, model=args.model, feature=args.feature, expansion=args.expansion,
                       smoothness=args.smoothness, edge_attraction=args.edge_attraction, radius_mm=args.radius,
                       shape=args.shape, ijk=args.ijk, ras=args.ras)
    write_result(result, args.output, "snake")
    return 0
