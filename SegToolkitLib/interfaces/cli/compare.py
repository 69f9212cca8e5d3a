"""``segtoolkit compare``: Dice, Jaccard, HD95, ASSD and volume differences of a prediction against a reference."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import LabelTable, check_output_path, check_same_grid, read_label_map
from ...io.images import is_dicom_label_file
from ...measurement.evaluation import columns_for, compare
from .common import add_format_argument, add_output_argument, emit, format_rows, warn_if_unlabelled

SCHEMA = "segtoolkit.comparison"
SCHEMA_VERSION = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare a predicted label map with a reference (Dice, HD95, ASSD, volumes)",
        description="Per-label agreement of PRED with REF (see docs/measurements.md for the definitions and the "
                    "behaviour when a label is empty). A last row averages the labels present in the reference. "
                    "Volume differences are signed (PRED minus REF); 2D maps report areas in mm².")
    parser.add_argument("prediction", type=Path, metavar="PRED", help="predicted label map")
    parser.add_argument("reference", type=Path, metavar="REF", help="reference (ground-truth) label map")
    parser.add_argument("--resample", action="store_true",
                        help="resample PRED onto REF's grid (nearest neighbour) when the grids differ")
    parser.add_argument("--labels", type=Path, metavar="NAMES.json",
                        help="label names; named labels are compared even when absent from both maps")
    parser.add_argument("--mask", type=Path, metavar="MASK",
                        help="score only inside the non-zero voxels of this image (on REF's grid)")
    parser.add_argument("--slices", metavar="K,K,...|annotated",
                        help="score only these slices (0-based k indices, e.g. 3,4,7) or 'annotated': the slices "
                             "where REF has any label (sparse annotations)")
    add_format_argument(parser)
    add_output_argument(parser, help="write the result to this file instead of printing it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = [args.prediction, args.reference] + ([args.labels] if args.labels else []) + \
        ([args.mask] if args.mask else [])
    if args.output is not None:
        check_output_path(args.output, inputs)
    names = LabelTable.from_json(args.labels) if args.labels else None
    # a DICOM SEG (or RTSTRUCT) is placed on the other label map's grid by its frame positions
    if is_dicom_label_file(args.reference) and not is_dicom_label_file(args.prediction):
        prediction = read_label_map(args.prediction, names)
        reference = read_label_map(args.reference, names, reference=prediction.image)
    elif is_dicom_label_file(args.reference) and is_dicom_label_file(args.prediction):
        from ...io.dicom_seg import seg_grid

        grid = seg_grid([args.reference, args.prediction])  # both SEGs on one grid holding all their frames
        reference = read_label_map(args.reference, names, reference=grid)
        prediction = read_label_map(args.prediction, names, reference=grid)
    else:
        reference = read_label_map(args.reference, names)
        prediction = read_label_map(args.prediction, names, reference=reference.image)
    region = scoring_region(args, reference.image)
    warn_if_unlabelled([prediction.image, reference.image], [args.prediction, args.reference],
                       "its labels all score as missed or as false positives")
    rows = compare(prediction, reference, resample=args.resample, region=region)
    document = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "prediction": str(args.prediction),
                "reference": str(args.reference), "resample": bool(args.resample),
                "mask": str(args.mask) if args.mask else None, "slices": args.slices, "labels": rows}
    columns = list(columns_for(reference.image.GetDimension()))
    emit(format_rows(rows, args.format, columns, document), args.output, inputs)
    return 0


def scoring_region(args: argparse.Namespace, reference: sitk.Image) -> np.ndarray | None:
    """The voxels to score (z, y, x bool array) from --mask and --slices; None for the whole grid."""
    from ...io.images import read_mask

    region = None
    if args.mask:
        mask = read_mask(args.mask, reference)
        check_same_grid(mask, reference, f"scoring mask {args.mask}", "reference")
        region = sitk.GetArrayFromImage(mask) != 0
    if args.slices:
        region = _slice_region(args.slices, reference) if region is None else \
            region & _slice_region(args.slices, reference)
    return region


def _slice_region(text: str, reference: sitk.Image) -> np.ndarray:
    array = sitk.GetArrayViewFromImage(reference)
    if reference.GetDimension() != 3:
        raise InputError("--slices needs 3D label maps (a 2D map is a single slice)")
    region = np.zeros(array.shape, dtype=bool)
    if text.strip().lower() == "annotated":
        region[np.flatnonzero(array.reshape(array.shape[0], -1).any(axis=1))] = True
        return region
    try:
        slices = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise InputError(f"--slices {text!r}: give whole slice numbers separated by commas (e.g. 3,4,7) or "
                         "'annotated'") from None
    outside = [k for k in slices if not 0 <= k < array.shape[0]]
    if not slices or outside:
        raise InputError(f"--slices {text!r}: slice numbers must lie in 0..{array.shape[0] - 1} (0-based k)")
    region[slices] = True
    return region
