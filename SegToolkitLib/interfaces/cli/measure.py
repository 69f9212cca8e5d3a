"""``segtoolkit measure``: volumes, diameters, RECIST, centroid and intensity statistics of each label."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io import LabelTable, check_output_path, read_label_map, read_scalar_image
from ...measurement.shape import measure
from .common import add_format_argument, add_output_argument, emit, format_rows

# The readable table shows the headline columns; CSV and JSON carry every column.
TABLE_COLUMNS_3D = ["label", "name", "present", "volume_ml", "surface_area_mm2", "feret_diameter_mm",
                    "recist_long_mm", "recist_short_mm", "recist_slice", "ellipsoid_volume_ml"]
TABLE_COLUMNS_2D = ["label", "name", "present", "area_mm2", "perimeter_mm", "feret_diameter_mm",
                    "recist_long_mm", "recist_short_mm"]
TABLE_INTENSITY_COLUMNS = ["intensity_mean", "intensity_sd"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "measure", help="measure each label: volume, surface, diameters, RECIST, centroid, intensities",
        description="Measure every label of a label map (see docs/measurements.md for the columns and the JSON "
                    "schema). Centroids are given in LPS and RAS millimetres.")
    parser.add_argument("label_map", type=Path, metavar="LABELMAP", help="label map (NIfTI, NRRD, .seg.nrrd, ...)")
    parser.add_argument("--image", type=Path, help="intensity image on the same grid, for intensity statistics")
    parser.add_argument("--labels", type=Path, metavar="NAMES.json",
                        help="label names; named labels without voxels are reported as absent")
    add_format_argument(parser)
    add_output_argument(parser, help="write the result to this file instead of printing it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = [args.label_map] + ([args.image] if args.image else []) + ([args.labels] if args.labels else [])
    if args.output is not None:
        check_output_path(args.output, inputs)
    names = LabelTable.from_json(args.labels) if args.labels else None
    label_map = read_label_map(args.label_map, names)
    image = read_scalar_image(args.image) if args.image else None
    result = measure(label_map, image)
    result.sources = {"label_map": str(args.label_map), "image": str(args.image) if args.image else None}
    if args.format == "json":
        text = result.to_json()
    else:
        columns = result.columns() if args.format == "csv" else _table_columns(result.dimension, image is not None)
        text = format_rows(result.rows(), args.format, columns)
    emit(text, args.output, inputs)
    return 0


def _table_columns(dimension: int, with_intensity: bool) -> list[str]:
    columns = TABLE_COLUMNS_3D if dimension == 3 else TABLE_COLUMNS_2D
    return columns + (TABLE_INTENSITY_COLUMNS if with_intensity else [])
