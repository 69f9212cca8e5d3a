"""Atomic file output: write to a temporary file next to the target, then rename over it.

An interrupted run (Ctrl-C, crash, full disk) therefore never leaves a truncated output behind, and an
existing output is only replaced by a complete new one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import OutputError


def compound_suffix(path: Path | str) -> str:
    """The full extension of a file name, lower case: ``.nii.gz``, ``.seg.nrrd``, ``.nrrd``..."""
    name = Path(path).name.lower()
    for suffix in (".seg.nrrd", ".nii.gz", ".tar.gz"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def check_output_path(path: Path | str, inputs: Sequence[Path | str] = ()) -> Path:
    """Check that ``path`` can be written: its folder exists and it is not one of the ``inputs``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for the output")
    if not path.parent.exists() and str(path.parent) not in ("", "."):
        raise OutputError(f"{path}: output folder {path.parent} does not exist; create it first")
    for source in inputs:
        with contextlib.suppress(OSError):
            if Path(source).resolve() == path.resolve():
                raise OutputError(f"{path}: output path is the same as an input; choose another output name")
    return path


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path with the same extension as ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    check_output_path(path)
    suffix = compound_suffix(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}",
                                        dir=str(path.parent) if str(path.parent) else ".")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the output the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
