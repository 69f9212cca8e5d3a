"""Argument helpers shared by the ``segtoolkit`` commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ...io import check_output_path, write_text_atomic


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="output format (default: a readable table)")


def add_output_argument(parser: argparse.ArgumentParser, required: bool = False, help: str = "output file") -> None:
    parser.add_argument("-o", "--output", type=Path, required=required, help=help)


def emit(text: str, output: Path | None, inputs: Sequence[Path] = ()) -> None:
    """Print ``text`` or write it atomically to ``output``."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    check_output_path(output, inputs)
    write_text_atomic(output, text if text.endswith("\n") else text + "\n")


def warn(message: str) -> None:
    """A one-line warning on stderr: the run goes on, but the user must know (never a silent surprise)."""
    print(f"segtoolkit: warning: {' '.join(message.split())}", file=sys.stderr)


def warn_if_unlabelled(images: Sequence, names: Sequence[Path | str], consequence: str) -> list[bool]:
    """Warn for each label map (SimpleITK image) whose voxels are all 0; returns which ones are empty."""
    import numpy as np
    import SimpleITK as sitk

    empty = [not np.any(sitk.GetArrayViewFromImage(image)) for image in images]
    for is_empty, name in zip(empty, names):
        if is_empty:
            warn(f"{name}: holds no labels (every voxel is 0); {consequence}")
    return empty


def check_ignore_label(value: int | None) -> None:
    """--ignore-label must be a label value a label map can hold: 1..65535 (0 is the background)."""
    from ...errors import InputError

    if value is not None and not 0 < value <= 65535:
        raise InputError(f"--ignore-label {value}: must be a label value from 1 to 65535 (0 is the background)")


def check_output_folder_apart(output: Path, inputs: Sequence[Path], what: str) -> None:
    """An output folder must not be an input folder or lie inside one: writing there would mix the outputs with
    the inputs (and the next run would read them as inputs)."""
    from ...errors import OutputError

    target = Path(output).resolve()
    for source in inputs:
        source = Path(source).resolve()
        if target == source or source in target.parents:
            raise OutputError(f"{output}: the {what} folder must be apart from the input folder {source}; "
                              "choose another output folder")


def format_rows(rows: list[dict], fmt: str, columns: list[str] | None = None, document: dict | None = None) -> str:
    """Render a list of flat dicts as an aligned table, CSV, or JSON (``document`` wraps the rows for JSON)."""
    if fmt == "json":
        return json.dumps(document if document is not None else rows, indent=2)
    columns = columns or _columns(rows)
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    if fmt == "csv":
        import csv
        import io

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(cells)
        return buffer.getvalue()
    widths = [max([len(column)] + [len(row[i]) for row in cells]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(value.rjust(width) if _numeric(value) else value.ljust(width)
                        for value, width in zip(row, widths)) for row in cells]
    return "\n".join(lines) + "\n"


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    return columns


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{value:.2f}" if abs(value) < 1e5 else \
            f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return str(value)


def _numeric(text: str) -> bool:
    try:
        float(text.split()[0]) if text else None
        return bool(text)
    except ValueError:
        return False


# ---- label-map outputs as DICOM SEG / RTSTRUCT (shared by every command that writes a label map) ---------------

LABEL_FORMATS = ("auto", "dicom-seg", "dicom-rtstruct")


def add_label_output_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that make a label-writing command write DICOM SEG or RTSTRUCT (see docs/dicom.md)."""
    group = parser.add_argument_group(
        "DICOM output", "-o NAME.dcm writes a DICOM SEG, -o NAME.rtstruct.dcm an RTSTRUCT, referencing the DICOM "
                        "series that was segmented (the input folder, or --dicom-reference)")
    group.add_argument("--format", dest="label_format", choices=LABEL_FORMATS, default="auto",
                       help="output format: auto (from the output name, default), dicom-seg or dicom-rtstruct")
    group.add_argument("--dicom-reference", type=Path, metavar="SERIES_DIR",
                       help="DICOM series the label map was made from, when the input is not that DICOM folder "
                            "(its grid must be the label map's)")
    group.add_argument("--series", dest="dicom_series", metavar="UID",
                       help="SeriesInstanceUID of the series to read from a DICOM folder input (and to reference) "
                            "when the folder holds several (see 'segtoolkit info DIR')")
    group.add_argument("--seg-type", choices=("binary", "labelmap"), default="binary",
                       help="DICOM SEG type: binary (default; read by most viewers) or labelmap (DICOM 2024c)")
    group.add_argument("--dicom-compress", action="store_true",
                       help="compress the SEG pixel data (RLE lossless; needs --seg-type labelmap)")


def label_output_kind(args: argparse.Namespace, output: Path) -> str | None:
    """'seg', 'rtstruct' or None (an ordinary label map file) for ``output``, checking --format fits the name."""
    from ...errors import OutputError
    from ...io.atomic import compound_suffix
    from ...io.rtstruct import is_rtstruct_name

    fmt = getattr(args, "label_format", "auto")
    dicom_name = compound_suffix(output) == ".dcm"
    if fmt != "auto" and not dicom_name:
        raise OutputError(f"{output}: --format {fmt} writes a DICOM file; name the output NAME.dcm")
    if fmt == "dicom-rtstruct" or (fmt == "auto" and is_rtstruct_name(output)):
        return "rtstruct"
    return "seg" if dicom_name else None


def check_label_output(args: argparse.Namespace, output: Path, source: Path | None) -> None:
    """Before any work: a DICOM output needs a reference series (the input folder or --dicom-reference)."""
    from ...errors import OutputError

    kind = label_output_kind(args, output)
    reference = getattr(args, "dicom_reference", None)
    if kind is None:
        return
    if reference is None and not (source is not None and Path(source).is_dir()):
        what = "an RTSTRUCT" if kind == "rtstruct" else "a DICOM SEG"
        raise OutputError(f"{output}: {what} must reference the DICOM series it segments, and the input "
                          f"{source} is not a DICOM folder: give that series' folder with --dicom-reference DIR")
    if reference is not None and not Path(reference).is_dir():
        raise OutputError(f"{reference}: --dicom-reference must be the folder that holds the DICOM series")
    from ...io.dicom_seg import check_reference_series

    check_reference_series(Path(reference or source), getattr(args, "dicom_series", None), output)


def write_label_output(label_map, args: argparse.Namespace, output: Path, source: Path | None, method: str,
                       model_name: str | None = None, model_hash: str | None = None) -> Path:
    """Write a label map as the command's options ask: DICOM SEG, RTSTRUCT, or the format of the file name."""
    from ...io import write_label_map
    from ...io.dicom_seg import DicomOutput, write_dicom_seg
    from ...io.rtstruct import write_rtstruct

    kind = label_output_kind(args, output)
    if kind is None:
        return write_label_map(label_map, output)
    check_label_output(args, output, source)
    reference = getattr(args, "dicom_reference", None) or Path(source)
    options = DicomOutput(reference=reference, series_uid=getattr(args, "dicom_series", None),
                          seg_type=getattr(args, "seg_type", "binary"), method=method, model_name=model_name,
                          model_hash=model_hash, compress=getattr(args, "dicom_compress", False))
    if kind == "rtstruct":
        return write_rtstruct(label_map, output, options)
    return write_dicom_seg(label_map, output, options)


def label_output_suffix(args: argparse.Namespace, default: str) -> str:
    """File extension for outputs named by the command itself (one per input in an output folder)."""
    fmt = getattr(args, "label_format", "auto")
    return {"dicom-seg": ".dcm", "dicom-rtstruct": ".rtstruct.dcm"}.get(fmt, default)
