"""Reading the small JSON files SegToolkit uses (label tables, dataset descriptions, plans, model packages).

A JSON file can be broken in two ways: its text is not JSON (:func:`read_json` says so), or it is JSON of the
wrong shape, e.g. a list where an object belongs or a word where a number belongs. Code that interprets a
document runs inside :func:`interpreting`, which turns the ``KeyError``/``TypeError``/``ValueError`` such a
document causes into one :class:`InputError` naming the file, instead of a traceback from deep inside.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

from ..errors import InputError


def read_json(path: Path, problem: str = "not valid JSON", advice: str = "", name: Path | str | None = None):
    """Parse a JSON file; a broken one raises :class:`InputError` as ``NAME: PROBLEM (detail); ADVICE``."""
    suffix = f"; {advice}" if advice else ""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"{name or path}: {problem} ({str(error)[:200]}){suffix}") from None
    except OSError as error:
        raise InputError(f"{name or path}: cannot read ({error.strerror or error}){suffix}") from None


@contextlib.contextmanager
def interpreting(path: Path | str, what: str, advice: str = "") -> Iterator[None]:
    """Run the interpretation of the JSON document ``path``; a wrongly shaped document becomes an
    :class:`InputError` ``PATH: malformed WHAT (detail); ADVICE``."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as error:
        suffix = f"; {advice}" if advice else ""
        raise InputError(f"{path}: malformed {what} ({describe_shape_error(error)}){suffix}") from None


def describe_shape_error(error: Exception) -> str:
    """A short description of what was wrong in a document."""
    if isinstance(error, KeyError):
        return f"entry {error.args[0]!r} is missing"
    text = " ".join(str(error).split())[:160]
    return text or type(error).__name__


def require(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` (reported by :func:`interpreting`) unless ``condition`` holds."""
    if not condition:
        raise ValueError(message)
