"""``segtoolkit compare``: Dice, Jaccard, HD95, ASSD and volume differences of a prediction against a reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...io import LabelTable, check_output_path, read_label_map
from ...measurement.evaluation import COLUMNS, compare
from .common import add_format_argument, add_output_argument, emit, format_rows

SCHEMA = "segtoolkit.comparison"
SCHEMA_VERSION = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="compare a predicted label map with a reference (Dice, HD95, ASSD, volumes)",
        description="Per-label agreement of PRED with REF (see docs/measurements.md for the definitions and the "
                    "behaviour when a label is empty). A last row averages the labels not empty in both.")
    parser.add_argument("prediction", type=Path, metavar="PRED", help="predicted label map")
    parser.add_argument("reference", type=Path, metavar="REF", help="reference (ground-truth) label map")
    parser.add_argument("--resample", action="store_true",
                        help="resample PRED onto REF's grid (nearest neighbour) when the grids differ")
    parser.add_argument("--labels", type=Path, metavar="NAMES.json",
                        help="label names; named labels are compared even when absent from both maps")
    add_format_argument(parser)
    add_output_argument(parser, help="write the result to this file instead of printing it")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    inputs = [args.prediction, args.reference] + ([args.labels] if args.labels else [])
    if args.output is not None:
        check_output_path(args.output, inputs)
    names = LabelTable.from_json(args.labels) if args.labels else None
    prediction = read_label_map(args.prediction, names)
    reference = read_label_map(args.reference, names)
    rows = compare(prediction, reference, resample=args.resample)
    document = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "prediction": str(args.prediction),
                "reference": str(args.reference), "resample": bool(args.resample), "labels": rows}
    emit(format_rows(rows, args.format, list(COLUMNS), document), args.output, inputs)
    return 0
