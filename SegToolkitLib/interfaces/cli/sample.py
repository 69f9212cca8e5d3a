"""``segtoolkit sample``: list, download and import public sample data, or write the built-in phantom."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...io import write_image, write_label_map, write_text_atomic
from ...progress import ConsoleProgress
from ...samples import sample_data
from ...samples.phantom import make_phantom
from ..demo import prepare_output_folder
from .common import add_format_argument, format_rows


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample", help="public sample data (list, fetch, import) and the built-in CT phantom",
        description=f"Sample data. Downloads are checked against the published checksum and kept in the cache "
                    f"folder (${sample_data.CACHE_ENV}, default ~/.cache/segtoolkit).")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    listing = actions.add_parser("list", help="list the known data sets and whether they are cached")
    add_format_argument(listing)
    listing.set_defaults(func=run_list)

    fetch = actions.add_parser("fetch", help="download a data set into the cache (or find it there); print its path")
    fetch.add_argument("name", metavar="NAME", help="data set name (see 'segtoolkit sample list')")
    fetch.set_defaults(func=run_fetch)

    importing = actions.add_parser("import", help="put a file you downloaded yourself into the cache, after "
                                                   "checking its checksum; print its cached path")
    importing.add_argument("name", metavar="NAME", help="data set name (see 'segtoolkit sample list')")
    importing.add_argument("file", metavar="FILE", type=Path, help="the downloaded file")
    importing.set_defaults(func=run_import)

    phantom = actions.add_parser("phantom", help="write the built-in synthetic CT phantom and its true labels",
                                 description="Write phantom.nii.gz (CT in HU), truth.nii.gz and truth.seg.nrrd "
                                             "(true label map) and truth.json (true volumes, seed points in LPS).")
    phantom.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR",
                         help="output folder (created if missing; its parent must exist)")
    phantom.add_argument("--subject", type=int, default=0, help="anatomy variant (0 = the default phantom)")
    phantom.add_argument("--noise-seed", type=int, default=0, help="seed of the image noise")
    phantom.set_defaults(func=run_phantom)


def run_list(args: argparse.Namespace) -> int:
    rows = [{"name": entry.name, "file": entry.file_name,
             "size_mb": round(entry.size_bytes / 1e6, 2) if entry.size_bytes else None,
             "cached": sample_data.is_cached(entry.name), "licence": entry.licence, "url": entry.url,
             "checksum": entry.checksum, "description": entry.description}
            for entry in sample_data.REGISTRY.values()]
    columns = None if args.format != "table" else ["name", "file", "size_mb", "cached", "licence", "description"]
    print(format_rows(rows, args.format, columns), end="" if args.format != "json" else "\n")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    with ConsoleProgress(f"downloading {args.name}") as progress:
        path = sample_data.fetch(args.name, progress=progress)
    print(path)
    return 0


def run_import(args: argparse.Namespace) -> int:
    with ConsoleProgress(f"importing {args.name}") as progress:
        path = sample_data.import_file(args.name, args.file, progress=progress)
    print(path)
    return 0


def run_phantom(args: argparse.Namespace) -> int:
    folder = prepare_output_folder(args.output)
    phantom = make_phantom(subject=args.subject, noise_seed=args.noise_seed)
    written = [write_image(phantom.image, folder / "phantom.nii.gz"),
               write_label_map(phantom.labels, folder / "truth.nii.gz"),
               write_label_map(phantom.labels, folder / "truth.seg.nrrd")]
    truth = {
        "subject": phantom.subject, "noise_seed": args.noise_seed, "coordinate_system": "LPS",
        "labels": {str(label.value): {"name": label.name, "nominal_hu": phantom.nominal_hu[label.value],
                                      "volume_ml": phantom.truth_volumes_ml[label.value],
                                      "analytic_volume_ml": phantom.analytic_volumes_ml[label.value],
                                      "seed_lps_mm": list(phantom.seeds[label.value])}
                   for label in phantom.labels.labels},
    }
    written.append(write_text_atomic(folder / "truth.json", json.dumps(truth, indent=2) + "\n"))
    for path in written:
        print(path)
    return 0
