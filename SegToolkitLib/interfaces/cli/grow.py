"""``segtoolkit grow``: region growing from seed points (connected, confidence or competitive)."""

from __future__ import annotations

import argparse

from ...errors import InputError
from ._classic import add_image_arguments, add_seed_arguments, parse_points, print_summary, read_input, write_result

SEED_HELP = ("seed point X,Y,Z (LPS mm; X,Y for 2D images; write --seed=X,Y,Z when X is negative); repeatable. "
             "With --method competitive, LABEL:X,Y,Z gives a seed of label LABEL (plain points belong to label 1)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "grow", help="grow regions from seed points (connected threshold, confidence, competitive)",
        description="Grow a region from seed points. 'connected' keeps voxels in an intensity range (derived from "
                    "the seed neighbourhood unless --lower/--upper are given); 'confidence' re-estimates the range "
                    "from the grown region; 'competitive' grows several labels at once until they meet (like "
                    "Slicer's Grow from seeds) and needs seeds of two labels, e.g. --seed and --background-seed.")
    add_image_arguments(parser)
    add_seed_arguments(parser, SEED_HELP)
    parser.add_argument("--background-seed", action="append", default=[], metavar="X,Y,Z",
                        help="background seed for --method competitive (repeatable)")
    parser.add_argument("--method", choices=("connected", "confidence", "competitive"), default="connected",
                        help="growing method (default: connected)")
    parser.add_argument("--geometry", choices=("auto", "3d", "slices"), default="auto",
                        help="connected: grow in 3D (range from the seed neighbourhood, refined once from the grown "
                             "region) or per 2D slice with slice-to-slice propagation (local Otsu bound, convex "
                             "slices); auto (default) picks slices when the slice spacing is > 3x the in-plane "
                             "spacing and >= 6 mm (e.g. cine cardiac MRI)")
    parser.add_argument("--lower", type=float, help="lowest value grown into (connected)")
    parser.add_argument("--upper", type=float, help="highest value grown into (connected)")
    parser.add_argument("--seeds", dest="seed_map", metavar="LABELMAP",
                        help="label map of seeds on the image grid (competitive): each label grows from its voxels")
    parser.add_argument("--mask", metavar="MASK", help="grow only inside the non-zero voxels of this image")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...io import check_output_path
    from ...io.images import read_mask
    from ...methods.classic import grow

    image = read_input(args)
    extra = [Path(p) for p in (args.seed_map, args.mask) if p]
    check_output_path(args.output, [args.image, *extra])
    plain, labelled = split_labelled_seeds(args.seed, image, args.method)
    seed_map = read_mask(args.seed_map, image) if args.seed_map else None  # a DICOM SEG is placed on the image
    mask = read_mask(args.mask, image) if args.mask else None
    details: dict = {}
    result = grow(image, plain, args.method, background_seeds=parse_points(args.background_seed, image,
                                                                            "background seed"),
                  labelled_seeds=labelled or None, seed_map=seed_map, mask=mask, lower=args.lower, upper=args.upper,
                  geometry=args.geometry, ijk=args.ijk, ras=args.ras, details=details)
    write_result(result, args.output, "grown region", args)
    print_summary("grow", result, image, plain, args, details)
    return 0


def split_labelled_seeds(texts, image, method: str):
    """Plain ``X,Y,Z`` points and ``LABEL:X,Y,Z`` points (competitive only) grouped by label."""
    plain, labelled = [], {}
    for text in texts:
        if ":" in text:
            if method != "competitive":
                raise InputError(f"seed {text!r}: LABEL:X,Y,Z seeds need --method competitive")
            label_text, point_text = text.split(":", 1)
            try:
                label = int(label_text)
            except ValueError:
                raise InputError(f"seed {text!r}: the label before ':' must be a whole number") from None
            if label < 0:
                raise InputError(f"seed {text!r}: label must be 0 (background) or positive")
            labelled.setdefault(label, []).extend(parse_points([point_text], image))
        else:
            plain.extend(parse_points([text], image))
    return plain, labelled
