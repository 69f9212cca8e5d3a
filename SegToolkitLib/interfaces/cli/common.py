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
