"""``segtoolkit models list | info NAME | fetch NAME | import PATH [--name N] | remove NAME``: the model store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...progress import ConsoleProgress
from .common import add_format_argument, format_rows


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="the model store: list, download and import ready models (TotalSegmentator, nnU-Net)",
        description="Public models of the shipped catalog (TotalSegmentator's open tasks) and your own trained or "
                    "imported models, kept under $SEGTOOLKIT_HOME (default: a per-user data folder). Downloads "
                    "resume, are verified (SHA-256 from the catalog, or recorded at the first download) and use "
                    "the proxy settings of the environment. Offline: carry the file in and 'import' it.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="catalog and store models")
    add_format_argument(listing)
    listing.set_defaults(func=run_list)
    info = actions.add_parser("info", help="address, size, licence, checksum and classes of a model")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print the full description as JSON")
    info.set_defaults(func=run_info)
    fetch = actions.add_parser("fetch", help="download a catalog model into the store")
    fetch.add_argument("name")
    fetch.add_argument("--accept-licence", action="store_true",
                       help="accept a non-commercial licence without being asked (scripts)")
    fetch.add_argument("--force", action="store_true", help="download again even when it is in the store")
    fetch.set_defaults(func=run_fetch)
    importing = actions.add_parser("import", help="import model folders or zips carried in by hand")
    importing.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                           help="SegToolkit model folder, nnU-Net trained/dataset folder or export zip; several "
                                "nnU-Net datasets (e.g. TotalSegmentator's five zips) become one task")
    importing.add_argument("--name", help="store name (default: the folder or zip name; a catalog name such as "
                                          "'total' gives a TotalSegmentator zip its task's classes)")
    importing.add_argument("--force", action="store_true", help="replace a model of that name")
    importing.set_defaults(func=run_import)
    remove = actions.add_parser("remove", help="delete a model from the store")
    remove.add_argument("name")
    remove.set_defaults(func=run_remove)


def run_list(args: argparse.Namespace) -> int:
    from ...methods.deep.store import list_models, models_folder

    rows = list_models()
    print(format_rows(rows, args.format, ["name", "installed", "modality", "classes", "size_mb", "source", "title"],
                      {"store": str(models_folder()), "models": rows}), end="")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ...methods.deep.store import model_info

    info = model_info(args.name)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key in ("name", "title", "installed", "path", "format", "source", "modality", "licence", "imported",
                "size_mb"):
        if info.get(key) not in (None, ""):
            print(f"{key}: {info[key]}")
    for file in info.get("files", []):
        print(f"file: {file['url']} (about {file['size_mb_approx']} MB)")
        print(f"  sha256: {file['sha256'] or '-'} ({file['sha256_source']})")
    classes = info.get("classes") or {}
    print(f"classes ({len(classes)}): " + ", ".join(f"{v} {n}" for v, n in sorted(classes.items())))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from ...errors import InputError
    from ...methods.deep.catalog import CATALOG
    from ...methods.deep.store import fetch, installed

    entry = CATALOG.get(args.name)
    if entry is not None and not installed(args.name):
        print(f"{args.name}: licence: {entry['licence']}")
        if entry["non_commercial"] and not args.accept_licence:
            raise InputError(f"{args.name}: its licence allows non-commercial use only; add --accept-licence to "
                             "accept it")
    with ConsoleProgress(f"fetch {args.name}") as bar:
        path = fetch(args.name, progress=bar, force=args.force)
    print(f"{args.name}: in the store at {path}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ...methods.deep.store import import_model

    with ConsoleProgress(f"import {args.paths[0].name}") as bar:
        path = import_model(args.paths, args.name, progress=bar, force=args.force)
    print(f"{path.name}: imported into the store at {path}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ...methods.deep.store import remove_model

    path = remove_model(args.name)
    print(f"{args.name}: removed ({path})")
    return 0
