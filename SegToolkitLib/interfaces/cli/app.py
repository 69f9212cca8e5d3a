"""Builds the ``segtoolkit`` argument parser from the command modules and runs a command.

Each command module in this package has ``register(subparsers)``, which adds its sub-parser and sets
``func=run`` (``run(args) -> int``). User mistakes surface as :class:`SegToolkitError` and become a one-line
``segtoolkit: error: ...`` on stderr with exit code 2; nothing else is printed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
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
    "measure",
    "compare",
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
        return int(args.func(args) or 0)
    except SegToolkitError as error:
        print(f"segtoolkit: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("segtoolkit: interrupted; unfinished outputs were not written (train keeps its last checkpoint: "
              "run it again to resume)", file=sys.stderr)
        return 130
    except MemoryError:
        print("segtoolkit: error: not enough memory for this input; try a smaller region or image",
              file=sys.stderr)
        return 2
