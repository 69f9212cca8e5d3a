"""Builds the ``segtoolkit`` argument parser from the command modules and runs a command.

Each command module in this package has ``register(subparsers)``, which adds its sub-parser and sets
``func=run`` (``run(args) -> int``). User mistakes surface as :class:`SegToolkitError` and become a one-line
``segtoolkit: error: ...`` on stderr with exit code 2; nothing else is printed. As a safety net, an
:class:`OSError` no check foresaw is also one line (exit 2), and any other exception is reported in one line as an
internal error to report (exit 1), except an ITK exception on an input and a library's own report of a full or
read-only disk (one line, exit 2); ``-v`` adds the traceback. A failed run removes the empty output folders it
created. File names that are not valid UTF-8 are refused before
any work (ITK would abort the process on them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

from ... import __version__
from ...errors import SegToolkitError

# Order = order in ``segtoolkit --help``: segmentation methods, then measuring, then the demo.
COMMAND_MODULES = (
    "threshold",
    "grow",
    "snake",
    "register",
    "atlas",
    "plan",
    "train",
    "predict",
    "quantize",
    "models",
    "measure",
    "compare",
    "info",
    "cohort",
    "sample",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="segtoolkit",
        description="Medical image segmentation: classic, atlas and deep methods, measurements and evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"segtoolkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debugging messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``segtoolkit`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="segtoolkit: %(levelname)s: %(message)s")
    absent = _absent_paths(args)
    code = _run_command(args)
    if code != 0:  # a failed run leaves no empty output folder it created (demo, phantom, train, predict...)
        remove_new_empty_folders(absent)
    return code


def _absent_paths(args: argparse.Namespace) -> list[Path]:
    paths = []
    for value in vars(args).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, Path) and not os.path.lexists(item):
                paths.append(item)
    return paths


def remove_new_empty_folders(paths: Sequence[Path]) -> None:
    """Remove those of ``paths`` (absent before the run) that are now empty folders; rmdir never removes a file
    or a folder with anything in it."""
    for path in paths:
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()


def _run_command(args: argparse.Namespace) -> int:
    """Run the chosen command; every failure becomes one line on stderr and an exit code."""
    try:
        check_path_arguments(args)
        return int(args.func(args) or 0)
    except SegToolkitError as error:
        print(f"segtoolkit: error: {_printable(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("segtoolkit: interrupted; unfinished outputs were not written (train keeps its last checkpoint: "
              "run it again to resume)", file=sys.stderr)
        return 130
    except MemoryError:
        print("segtoolkit: error: not enough memory for this input; try a smaller region or image",
              file=sys.stderr)
        return 2
    except OSError as error:
        # the system refused a file operation that no check foresaw (permissions, a full disk, a vanished file)
        return _last_resort(args, f"{_os_error_text(error)} (run with -v for the details)", 2)
    except RuntimeError as error:
        if not is_itk_error(error):
            return _last_resort(args, f"internal error {type(error).__name__}: {str(error)[:300]}; please report it "
                                      "with the output of the same command run with -v", 1)
        # ITK refused an input that no check foresaw (an unreadable file inside a dataset, a degenerate image)
        return _last_resort(args, f"the image library could not handle an input ({itk_error_text(error)}); check "
                                  "that the input files are complete images of a supported type (run with -v for "
                                  "the details)", 2)
    except Exception as error:  # noqa: BLE001 - a bug: say so in one line, -v shows the traceback
        storage = storage_failure(error)
        if storage is not None:  # a library (safetensors, HDF5...) wrapped the system's refusal in its own type
            return _last_resort(args, f"{storage} (run with -v for the details)", 2)
        return _last_resort(args, f"internal error {type(error).__name__}: {str(error)[:300]}; please report it "
                                  "with the output of the same command run with -v", 1)


def check_path_arguments(args: argparse.Namespace) -> None:
    """Refuse, up front, file names that are not valid UTF-8 (ITK aborts the whole process on them) and paths
    that are neither a file nor a folder (a FIFO or a device: reading one blocks forever or never ends)."""
    from ...io.atomic import check_not_special_file, check_path_text

    for name, value in vars(args).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, Path) or (isinstance(item, str) and name in _STRING_PATH_ARGUMENTS):
                role = f"{name.replace('_', '-')} argument"
                check_path_text(item, role)
                check_not_special_file(item, role)


# options declared without type=Path that still name files
_STRING_PATH_ARGUMENTS = ("seed_map", "mask", "init", "model")


# what libraries that wrap the system's error in their own exception type say on a full or read-only disk
_STORAGE_FAILURES = (
    (("no space left on device", "os error 28", "errno 28"), "the disk is full; free space and run again"),
    (("disk quota exceeded", "os error 122", "errno 122"), "the disk quota is exceeded; free space and run again"),
    (("read-only file system", "os error 30", "errno 30"), "the file system is read-only; choose another folder"),
)


def storage_failure(error: BaseException) -> str | None:
    """One line for an exception that reports a full, over-quota or read-only disk; None for anything else."""
    text = str(error).lower()
    for needles, advice in _STORAGE_FAILURES:
        if any(needle in text for needle in needles):
            return f"cannot write the output ({advice}); nothing was saved"
    return None


def is_itk_error(error: BaseException) -> bool:
    """Whether ``error`` is an exception raised inside ITK / SimpleITK."""
    return isinstance(error, RuntimeError) and ("itk::ERROR" in str(error) or "sitk::ERROR" in str(error))


def itk_error_text(error: BaseException) -> str:
    """The informative part of an ITK exception (its last ``ERROR:`` line, without source file and address)."""
    lines = [line.strip() for line in str(error).splitlines() if "ERROR" in line] or [str(error).strip()]
    text = lines[-1].split("ERROR:", 1)[-1]
    text = text.split("): ", 1)[-1] if text.lstrip().startswith(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")) else text
    return " ".join(text.split())[:240]


def _os_error_text(error: OSError) -> str:
    where = error.filename if error.filename is not None else ""
    where = os.fsdecode(where) if isinstance(where, bytes) else str(where)
    text = error.strerror or str(error)
    return f"{where}: {text}" if where else text


def _last_resort(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "verbose", False):
        traceback.print_exc()
    print(f"segtoolkit: error: {_printable(' '.join(message.split()))}", file=sys.stderr)
    return code


def _printable(text: str) -> str:
    """``text`` with undecodable file-name bytes shown as escapes (printing them would raise)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
