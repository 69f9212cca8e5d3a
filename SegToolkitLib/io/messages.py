"""Small text helpers shared by the readers' and writers' one-line error messages."""

from __future__ import annotations

from typing import Iterable


def first_line(error: Exception) -> str:
    """The telling line of a library's (often multi-line, ITK-style) error message, at most 200 characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = [line for line in lines if "itk::ERROR" in line or "Exception" in line]
    return (detail or lines or ["unknown error"])[-1][:200]


def format_numbers(values: Iterable[float]) -> str:
    """``(1.5, 2, 3.25)``: a vector (spacing, origin, a point) in an error message."""
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
