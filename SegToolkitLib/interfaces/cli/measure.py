"""``segtoolkit measure``: volumes, diameters, RECIST, centroid and intensity statistics of each label."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io import LabelTable, check_output_path, read_scalar_image
from ...io.images import read_label_layers
from ...measurement.shape import measure_layers
from .common import add_format_argument, add_output_argument, emit, format_rows, warn

# The readable table shows the headline columns; CSV and JSON carry every column.
TABLE_COLUMNS_3D = ["label", "name", "present", "volume_ml", "surface_area_mm2", "feret_diameter_mm",
                    "recist_long_mm", "recist_short_mm", "recist_slice", "ellipsoid_volume_ml", "warning"]
TABLE_COLUMNS_2D = ["label", "name", "present", "area_mm2", "area_cm2", "perimeter_mm", "feret_diameter_mm",
                    "recist_long_mm", "recist_short_mm", "ellipse_semi_major_mm", "ellipse_semi_minor_mm",
                    "ellipse_circumference_mm", "warning"]
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
    parser.add_argument("--dicom-sr", type=Path, metavar="FILE",
                        help="also write a DICOM Structured Report (TID 1500) of the measurements; LABELMAP must "
                             "be a DICOM SEG")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = [args.label_map] + ([args.image] if args.image else []) + ([args.labels] if args.labels else [])
    if args.output is not None:
        check_output_path(args.output, inputs)
    names = LabelTable.from_json(args.labels) if args.labels else None
    if args.dicom_sr is not None:
        check_sr_request(args.label_map, args.dicom_sr, inputs)
    image = read_scalar_image(args.image) if args.image else None
    layers = read_label_layers(args.label_map, names, reference=image)  # DICOM SEG frames placed on the image
    result = measure_layers(layers, image)
    if not any(row.get("present", True) for row in result.rows()):
        warn(f"{args.label_map}: holds no labels (every voxel is 0): there is nothing to measure")
    result.sources = {"label_map": str(args.label_map), "image": str(args.image) if args.image else None}
    if args.format == "json":
        text = result.to_json()
    else:
        columns = result.columns() if args.format == "csv" else _table_columns(result.dimension, image is not None)
        text = format_rows(result.rows(), args.format, columns)
    emit(text, args.output, inputs)
    if args.dicom_sr is not None:
        from ...measurement.dicom_sr import write_measurement_sr

        write_measurement_sr(result, args.label_map, args.dicom_sr)
    return 0


def check_sr_request(label_map: Path, output: Path, inputs: list[Path]) -> None:
    """--dicom-sr references the SEG's segments, so the label map must be a DICOM SEG."""
    from ...errors import InputError
    from ...io.dicom_seg import is_dicom_seg

    check_output_path(output, inputs)
    if not is_dicom_seg(label_map):
        raise InputError(f"{label_map}: --dicom-sr needs the label map as a DICOM SEG, whose segments the report "
                         "references; write one first (e.g. -o seg.dcm with --dicom-reference) and measure that")


def _table_columns(dimension: int, with_intensity: bool) -> list[str]:
    columns = TABLE_COLUMNS_3D if dimension == 3 else TABLE_COLUMNS_2D
    return columns[:-1] + (TABLE_INTENSITY_COLUMNS if with_intensity else []) + columns[-1:]  # warning last
