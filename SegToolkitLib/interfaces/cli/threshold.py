"""``segtoolkit threshold``: intensity range, Otsu or hysteresis thresholding with clean-up."""

from __future__ import annotations

import argparse

from ._classic import add_image_arguments, add_seed_arguments, parse_points, read_input, write_result


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "threshold", help="threshold an image (range, Otsu, hysteresis) and clean the mask up",
        description="Threshold an image by an intensity range, Otsu's method or hysteresis, then optionally keep "
                    "the largest component or the one at a seed, fill holes and drop small islands.")
    add_image_arguments(parser)
    parser.add_argument("--lower", type=float, help="lowest value kept")
    parser.add_argument("--upper", type=float, help="highest value kept")
    parser.add_argument("--otsu", action="store_true", help="Otsu's threshold (bright class) instead of a range")
    parser.add_argument("--classes", type=int, default=2,
                        help="with --otsu: number of classes (more than 2 gives a label image 0..N-1)")
    parser.add_argument("--hysteresis", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="keep voxels above LOW connected to voxels above HIGH")
    parser.add_argument("--largest", action="store_true", help="keep only the largest connected component")
    add_seed_arguments(parser, "keep only the component containing this point (LPS mm; repeatable)")
    parser.add_argument("--fill-holes", action="store_true", help="fill enclosed holes")
    parser.add_argument("--min-island-ml", type=float, default=0.0, metavar="V",
                        help="drop components smaller than V millilitres")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...methods.classic import threshold

    image = read_input(args)
    result = threshold(image, args.lower, args.upper, otsu_classes=args.classes if args.otsu else None,
                       hysteresis_range=tuple(args.hysteresis) if args.hysteresis else None, largest=args.largest,
                       seeds=parse_points(args.seed, image), fill=args.fill_holes,
                       min_island_ml=args.min_island_ml, ijk=args.ijk, ras=args.ras)
    write_result(result, args.output, "threshold", args)
    return 0
