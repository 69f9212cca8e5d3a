"""``segtoolkit demo``: every segmentation method on the built-in phantom, compared with the phantom's truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...progress import ConsoleProgress
from ..demo import run_demo

DEFAULT_FOLDER = Path("segtoolkit_demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run every method on the built-in CT phantom; write results, measurements and a PNG",
        description="Segment the built-in synthetic CT phantom with every available method. Writes each result "
                    "(NIfTI and .seg.nrrd), the phantom and its truth, measurements.csv, agreement.csv and "
                    "overview.png, and prints the volumes and Dice of each method against the truth.")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_FOLDER, metavar="DIR",
                        help=f"output folder, created if missing (default: ./{DEFAULT_FOLDER})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with ConsoleProgress("demo") as progress:
        demo = run_demo(args.output, progress=progress)
    print(f"{len(demo.results)} results on the phantom; each cell: volume in mL (Dice against the truth)")
    print(demo.table, end="")
    print(f"Wrote {len(demo.files)} files to {demo.output_dir} in {demo.seconds:.1f} s "
          "(overview.png, measurements.csv, agreement.csv, one .nii.gz and .seg.nrrd per result).")
    for line in demo.skipped:
        print(f"segtoolkit: note: {line}", file=sys.stderr)
    for line in demo.failures:
        print(f"segtoolkit: error: {line}", file=sys.stderr)
    return 1 if demo.failures else 0
