"""``segtoolkit info IMAGE|DICOM_DIR``: what an image is (size, spacing, geometry, extent, intensities) before use.

For a DICOM folder it lists the series (size, spacing, orientation, modality, UID, and any problem that would stop
reading it); with one image series, or ``--series UID``, it then describes that series like an image file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .common import format_rows


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="describe an image or the series of a DICOM folder (size, spacing, extent, intensities)",
        description="Print an image's size, spacing, origin, direction, extent in LPS and RAS millimetres, "
                    "intensity range and what kind of image it looks like (like 'c3d -info'). For a DICOM folder, "
                    "list its series first; --series UID picks one.")
    parser.add_argument("path", type=Path, metavar="IMAGE|DICOM_DIR", help="image file, DICOM SEG, or DICOM folder")
    parser.add_argument("--series", metavar="UID", help="describe this series of a DICOM folder")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="default: readable text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...errors import InputError

    document: dict = {"path": str(args.path)}
    if args.path.is_dir():
        series = _series_rows(args.path)
        document["series"] = series
        images = [row for row in series if row["readable"] != "not an image"]
        if args.series is None and len(images) != 1:
            _print(document, args.format, hint=f"{len(images)} image series: pick one with --series UID"
                   if images else "no image series in this folder")
            return 0
        if args.series is not None and not any(row["uid"] == args.series for row in series):
            raise InputError(f"{args.path}: no DICOM series with SeriesInstanceUID {args.series}; the folder holds "
                             f"{', '.join(row['uid'] for row in series) or 'none'}")
        chosen = next(row for row in series if row["uid"] == (args.series or images[0]["uid"]))
        if chosen["readable"] != "yes":  # show the listing, then say why this series cannot be read
            _print(document, args.format)
            raise InputError(f"{args.path}: series {chosen['uid'] or '(no UID)'} cannot be read: "
                             f"{chosen['readable'][4:]}")
        document["image"] = {"modality": chosen["modality"], **describe_image(args.path, chosen["uid"])}
    elif not args.path.exists():
        raise InputError(f"{args.path}: file or folder not found")
    elif args.series is not None:
        raise InputError(f"{args.path}: --series picks a series of a DICOM folder; this is a single file")
    else:
        document["image"] = describe_image(args.path, None)
    _print(document, args.format)
    return 0


def describe_image(path: Path, series_uid: str | None) -> dict:
    """Geometry, extent and intensity summary of an image (or of a DICOM series / SEG)."""
    import SimpleITK as sitk

    from ...geometry import lps_to_ras, physical_bounds
    from ...io import read_image
    from ...io.dicom_seg import is_dicom_seg
    from ...io.dicom_series import describe_orientation

    image = read_image(path, series_uid)
    dimension = image.GetDimension()
    info: dict = {
        "pixel_type": image.GetPixelIDTypeAsString(),
        "components": image.GetNumberOfComponentsPerPixel(),
        "dimension": dimension,
        "size": list(image.GetSize()),
        "spacing_mm": [round(v, 6) for v in image.GetSpacing()],
        "origin_lps_mm": [round(v, 4) for v in image.GetOrigin()],
        "origin_ras_mm": [round(v, 4) for v in lps_to_ras(image.GetOrigin())],
        "direction": [[round(v, 6) for v in row] for row in np.array(image.GetDirection()).reshape(dimension,
                                                                                                  dimension)],
    }
    if dimension == 3:
        info["orientation"] = describe_orientation(image.GetDirection())
    bounds = physical_bounds(image)
    info["extent_lps_mm"] = [[round(lo, 3), round(hi, 3)] for lo, hi in bounds]
    ras = [(-hi, -lo) if axis < 2 else (lo, hi) for axis, (lo, hi) in enumerate(bounds)]
    info["extent_ras_mm"] = [[round(lo, 3), round(hi, 3)] for lo, hi in ras]
    info["voxel_volume_mm3"] = round(float(np.prod(image.GetSpacing())), 6)
    array = sitk.GetArrayViewFromImage(image)
    finite = array[np.isfinite(array)] if np.issubdtype(array.dtype, np.floating) else array
    if finite.size:
        info["intensity_min"], info["intensity_max"] = float(finite.min()), float(finite.max())
        info["intensity_mean"] = round(float(finite.mean()), 4)
    info["kind"] = _kind_hint(array, finite)
    if path.is_file() and is_dicom_seg(path):
        info["segments"] = _seg_segments(path)
    return info


def _seg_segments(path: Path) -> list[str]:
    """'number: label (coded type)' of each segment of a DICOM SEG."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    described = []
    for item in ds.get("SegmentSequence") or []:
        coded = item.get("SegmentedPropertyTypeCodeSequence") or [None]
        meaning = f" ({coded[0].CodeMeaning} {coded[0].CodingSchemeDesignator} {coded[0].CodeValue})" \
            if coded[0] is not None else ""
        described.append(f"{item.SegmentNumber}: {item.get('SegmentLabel', '')}{meaning}")
    return described


def _kind_hint(array: np.ndarray, finite: np.ndarray) -> str:
    """What the voxel values suggest: a label map, a mask, CT (Hounsfield units) or another intensity image."""
    if not finite.size:
        return "empty"
    integer = np.issubdtype(array.dtype, np.integer) or bool(np.all(finite == np.round(finite)))
    low, high = float(finite.min()), float(finite.max())
    if integer and low >= 0:
        values = np.unique(finite) if finite.size <= 50_000_000 else np.unique(finite[::7])
        if len(values) <= 2 and high <= 1:
            return "binary mask (0/1)"
        if len(values) <= 256 and high < 1000:
            return f"label map? ({len(values) - (1 if low == 0 else 0)} values > 0) or a low-range intensity image"
    if integer and low <= -900 and high >= 100:
        return "CT-like (values look like Hounsfield units: air near -1000)"
    return "intensity image (MR, ultrasound or another modality; values are not Hounsfield units)"


def _series_rows(folder: Path) -> list[dict]:
    from ...errors import InputError
    from ...io.dicom_series import check_geometry, describe_orientation, scan_folder

    rows = []
    for series in scan_folder(folder):
        row = {"uid": series.uid, "modality": series.modality, "description": series.description,
               "number": series.number, "files": len(series.datasets)}
        if not series.is_image:
            row.update(readable="not an image")
            rows.append(row)
            continue
        try:
            geometry = check_geometry(series)
            row.update(size=list(geometry.size), spacing_mm=[round(v, 4) for v in geometry.spacing],
                       orientation=describe_orientation(geometry.direction), readable="yes")
        except InputError as error:
            row.update(readable=f"no: {str(error).split(': ', 1)[-1]}")
        rows.append(row)
    if not rows:
        raise InputError(f"{folder}: folder holds no DICOM files")
    return rows


def _print(document: dict, fmt: str, hint: str | None = None) -> None:
    if fmt == "json":
        print(json.dumps(document, indent=2))
        return
    if "series" in document:
        columns = ["uid", "modality", "description", "files", "size", "spacing_mm", "orientation", "readable"]
        print(format_rows(document["series"], "table", columns), end="")
    if hint:
        print(hint)
    image = document.get("image")
    if image:
        width = max(len(key) for key in image)
        for key, value in image.items():
            if key == "segments":
                print("\n".join([f"{key.ljust(width)}  {value[0]}"] + [" " * (width + 2) + v for v in value[1:]]))
                continue
            print(f"{key.ljust(width)}  {_text(value)}")


def _text(value) -> str:
    if isinstance(value, list):
        return " ".join(_text(v) if not isinstance(v, list) else "[" + _text(v) + "]" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
