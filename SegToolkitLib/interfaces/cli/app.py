"""Builds the ``segtoolkit`` argument parser from the command modules and runs a command.

Each command module in this package has ``register(subparsers)``, which adds its sub-parser and sets
``func=run`` (``run(args) -> int``). User mistakes surface as :class:`SegToolkitError` and become a one-line
``segtoolkit: error: ...`` on stderr with exit code 2; nothing else is printed. As a safety net, an
:class:`OSError` no check foresaw is also one line (exit 2), and any other exception is reported in one line as an
internal error to report (exit 1); ``-v`` adds the traceback. File names that are not valid UTF-8 are refused before
any work (ITK would abort the process on them).
"""

from __future__ import annotations

import argparse
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
    except Exception as error:  # noqa: BLE001 - a bug: say so in one line, -v shows the traceback
        return _last_resort(args, f"internal error {type(error).__name__}: {str(error)[:300]}; please report it "
                                  "with the output of the same command run with -v", 1)


def check_path_arguments(args: argparse.Namespace) -> None:
    """Refuse file names that are not valid UTF-8 up front: ITK aborts the whole process on them."""
    from ...io.atomic import check_path_text

    for name, value in vars(args).items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, Path):
                check_path_text(item, f"{name.replace('_', '-')} argument")


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
