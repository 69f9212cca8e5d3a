"""Arguments and helpers shared by the ``threshold``, ``grow`` and ``snake`` commands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...geometry import parse_point
from ...io import LabelMap, LabelTable, check_output_path, read_scalar_image, write_label_map
from .common import add_label_output_arguments, check_label_output, write_label_output


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="input image (NIfTI, NRRD, MHA, DICOM folder, PNG, ...)")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output label map (.nii.gz, .nrrd, .mha, .seg.nrrd, DICOM SEG .dcm or .rtstruct.dcm)")
    add_label_output_arguments(parser)


def add_seed_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--seed", action="append", default=[], metavar="X,Y,Z", help=help)
    coordinates = parser.add_mutually_exclusive_group()
    coordinates.add_argument("--ijk", action="store_true", help="seeds are voxel indices i,j,k (0-based)")
    coordinates.add_argument("--ras", action="store_true", help="seeds are RAS millimetres (as Slicer shows them)")


def read_input(args: argparse.Namespace) -> sitk.Image:
    """Check the output path first (nothing is computed for an unwritable output), then read the image."""
    check_output_path(args.output, [args.image])
    check_label_output(args, args.output, args.image)
    # --series picks the input series of a DICOM folder too, so the SEG references the series that was segmented
    return read_scalar_image(args.image, args.dicom_series if Path(args.image).is_dir() else None)


def parse_points(texts: Sequence[str], image: sitk.Image, what: str = "seed") -> list[tuple[float, ...]]:
    return [parse_point(text, image.GetDimension(), what) for text in texts]


def write_result(image: sitk.Image, output: Path, name: str, args: argparse.Namespace | None = None) -> None:
    """Write a label image atomically; label names go into ``.seg.nrrd`` and DICOM headers."""
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(image)) if v != 0]
    table = LabelTable()
    for value in values:
        table.add(value, name if len(values) == 1 else f"{name} {value}")
    if args is None:
        write_label_map(LabelMap(image, table), output)
    else:
        write_label_output(LabelMap(image, table), args, output, args.image, args.command)


def print_summary(command: str, result: sitk.Image, image: sitk.Image, seeds: Sequence[Sequence[float]],
                  args: argparse.Namespace, details: dict) -> None:
    """What was segmented (size, intensity range, seed values, the snake's feature choice) on stdout; warnings
    (seeds unlike their surroundings, a result cut off by the scan's edge) on stderr."""
    import sys

    from ...measurement.boundary import CUT_OFF_WARNING, labels_touching_edge
    from ...methods.classic._inputs import seed_indices
    from ...methods.classic.feature_maps import seed_warnings

    indices = seed_indices(image, seeds, ijk=args.ijk, ras=args.ras) if seeds else []
    values = sitk.GetArrayViewFromImage(image)
    parts = [f"{command}: {args.output}: {size_text(result)}"]
    if details.get("lower") is not None and details.get("upper") is not None:
        parts.append(f"intensity range {details['lower']:.4g} to {details['upper']:.4g}")
    elif details.get("geometry") == "slices":
        parts.append("per-slice threshold (local Otsu)")
    if details.get("intensity_range"):
        parts.append("intensity range {:.4g} to {:.4g}".format(*details["intensity_range"]))
    if indices:
        parts.append("seed intensity " + ", ".join(f"{float(values[tuple(reversed(i))]):.4g}" for i in indices))
    if details.get("choice"):
        parts.append(f"feature: {details['choice']}")
    if "iterations" in details:
        parts.append(f"{details['iterations']} iterations" + ("" if details.get("converged") else
                                                                " (stopped before converging)"))
    print("; ".join(parts))
    for warning in [*seed_warnings(image, indices), *details.get("warnings", [])]:
        print(f"segtoolkit: warning: {warning}", file=sys.stderr)
    if labels_touching_edge(result):
        print(f"segtoolkit: warning: the result {CUT_OFF_WARNING}", file=sys.stderr)


def size_text(mask: sitk.Image) -> str:
    """Volume (3D, mL) or area (2D, mm² and cm²) of the non-zero voxels, with their count."""
    count = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    size = count * float(np.prod(mask.GetSpacing()))
    if mask.GetDimension() == 2:
        return f"area {size:.1f} mm² ({size / 100.0:.2f} cm², {count} pixels)"
    return f"volume {size / 1000.0:.2f} mL ({count} voxels)"
