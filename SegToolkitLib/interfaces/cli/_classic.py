"""Arguments and helpers shared by the ``threshold``, ``grow`` and ``snake`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...geometry import parse_point
from ...io import LabelMap, LabelTable, check_output_path, read_scalar_image, write_label_map


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="input image (NIfTI, NRRD, MHA, DICOM folder, PNG, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output label map (.nii.gz, .nrrd, .mha or .seg.nrrd)")


def add_seed_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--seed", action="append", default=[], metavar="X,Y,Z", help=help)
    coordinates = parser.add_mutually_exclusive_group()
    coordinates.add_argument("--ijk", action="store_true", help="seeds are voxel indices i,j,k (0-based)")
    coordinates.add_argument("--ras", action="store_true", help="seeds are RAS millimetres (as Slicer shows them)")


def read_input(args: argparse.Namespace) -> sitk.Image:
    """Check the output path first (nothing is computed for an unwritable output), then read the image."""
    check_output_path(args.output, [args.image])
    return read_scalar_image(args.image)


def parse_points(texts: Sequence[str], image: sitk.Image, what: str = "seed") -> list[tuple[float, ...]]:
    return [parse_point(text, image.GetDimension(), what) for text in texts]


def write_result(image: sitk.Image, output: Path, name: str) -> None:
    """Write a label image atomically; label names go into ``.seg.nrrd`` headers."""
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v != 0]
    table = LabelTable()
    for value in values:
        table.add(value, name if len(values) == 1 else f"{name} {value}")
    write_label_map(LabelMap(image, table), output)
