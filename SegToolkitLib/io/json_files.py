"""Reading the small JSON files SegToolkit uses (label tables, dataset descriptions, plans, model packages)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def read_json(path: Path, problem: str = "not valid JSON", advice: str = "", name: Path | str | None = None):
    """Parse a JSON file; a broken one raises :class:`InputError` as ``NAME: PROBLEM (detail); ADVICE``."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        suffix = f"; {advice}" if advice else ""
        raise InputError(f"{name or path}: {problem} ({error}){suffix}") from None
