"""The model store: public models from the shipped catalog (:mod:`.catalog`), downloaded with verification, and the
user's own trained or imported models, all under one folder (``segtoolkit models list|info|fetch|import|remove``).

Location: ``$SEGTOOLKIT_HOME`` (default a per-user data folder: ``~/.local/share/segtoolkit`` on Linux,
``~/Library/Application Support/SegToolkit`` on macOS, ``%LOCALAPPDATA%\\SegToolkit`` on Windows)::

    models/NAME/store.json        what the model is (format, source, licence, classes, SHA-256 of every file)
    models/NAME/...               its files: a SegToolkit model folder, or nnU-Net folders with the weights
                                  converted to safetensors + JSON (no pickle is kept or read again)
    checksums.json                the SHA-256 of each downloaded file, recorded at its first download
    downloads/                    partial downloads (resumed on the next try)

Downloads go to a temporary file (resumed with an HTTP range request when a partial one is there), are checked
against the catalog's SHA-256 or the one recorded at the first download, and the model is unpacked and converted in
a staging folder that is renamed into ``models/`` only when complete. Proxies come from the environment
(``https_proxy``, ``no_proxy``...). Without network, the error says how to carry the file in by hand and
``segtoolkit models import`` it (the hospital-firewall route). Every load verifies the files against the SHA-256
recorded in ``store.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path, PurePosixPath

from ... import __version__
from ...errors import InputError, OutputError
from ...io import write_text_atomic
from ...io.json_files import read_json
from ...progress import CancelToken, ProgressCallback, report, scaled
from .backends import file_sha256
from .catalog import CATALOG, task_classes

STORE_JSON = "store.json"
CHECKSUMS = "checksums.json"
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
CHUNK = 1 << 20
TIMEOUT = 60


def store_home() -> Path:
    """The store folder: ``$SEGTOOLKIT_HOME`` or the per-user data folder of this system."""
    if os.environ.get("SEGTOOLKIT_HOME"):
        return Path(os.environ["SEGTOOLKIT_HOME"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "SegToolkit"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "SegToolkit"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "segtoolkit"


def models_folder() -> Path:
    return store_home() / "models"


def check_name(name: str) -> str:
    if not name or name.startswith(".") or not set(name) <= NAME_CHARACTERS or len(name) > 100:
        raise InputError(f"model name {name!r}: use letters, digits, '_', '-' and '.' (not first)")
    return name


def model_path(name: str) -> Path:
    """Where model ``name`` lives in the store (whether or not it is there)."""
    return models_folder() / check_name(name)


def installed(name: str) -> bool:
    return (model_path(name) / STORE_JSON).is_file()


def read_entry(name: str) -> dict:
    """``store.json`` of an installed model."""
    path = model_path(name) / STORE_JSON
    if not path.is_file():
        hint = f"'segtoolkit models fetch {name}'" if name in CATALOG else "'segtoolkit models import PATH'"
        raise InputError(f"model {name!r} is not in the store ({models_folder()}); get it with {hint}")
    entry = read_json(path, "corrupt store entry", f"remove it with 'segtoolkit models remove {name}' and get it "
                      "again")
    if not isinstance(entry, dict) or entry.get("format") not in ("segtoolkit", "nnunet", "task"):
        raise InputError(f"{path}: not a store entry")
    return entry


def list_models() -> list[dict]:
    """The catalog's models (installed or not) and every other model in the store."""
    rows = []
    for name, entry in CATALOG.items():
        classes = task_classes(entry)
        rows.append({"name": name, "installed": installed(name), "source": "catalog", "modality": entry["modality"],
                     "classes": len(classes), "size_mb": sum(p["size_mb"] for p in entry["parts"]),
                     "title": entry["title"]})
    folder = models_folder()
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name in CATALOG or not (path / STORE_JSON).is_file():
            continue
        try:
            entry = read_entry(path.name)
        except InputError:
            continue
        rows.append({"name": path.name, "installed": True, "source": entry.get("source", "imported"),
                     "modality": entry.get("modality", ""), "classes": len(entry.get("classes", {})),
                     "size_mb": round(entry.get("bytes", 0) / 1e6), "title": entry.get("title", "")})
    return rows


def model_info(name: str) -> dict:
    """What is known of a model: catalog facts (address, size, licence, checksum or that none is known yet),
    classes, and what the store holds."""
    info: dict = {"name": name, "installed": installed(name) if all(c in NAME_CHARACTERS for c in name) else False}
    if name in CATALOG:
        entry = CATALOG[name]
        recorded = read_checksums()
        info.update({"title": entry["title"], "modality": entry["modality"], "licence": entry["licence"],
                     "non_commercial": entry["non_commercial"], "classes": task_classes(entry),
                     "files": [{"url": p["url"], "size_mb_approx": p["size_mb"],
                                "sha256": p["sha256"] or recorded.get(p["url"]),
                                "sha256_source": "catalog" if p["sha256"] else
                                ("recorded at first download" if p["url"] in recorded else
                                 "not known: recorded at the first download, verified afterwards")}
                               for p in entry["parts"]]})
    elif not info["installed"]:
        raise InputError(f"model {name!r}: not in the catalog nor in the store ({models_folder()}); see "
                         "'segtoolkit models list'")
    if info["installed"]:
        entry = read_entry(name)
        info.update({"path": str(model_path(name)), "format": entry["format"], "source": entry.get("source"),
                     "classes": {int(k): v for k, v in entry.get("classes", {}).items()} or info.get("classes"),
                     "imported": entry.get("imported"), "size_mb": round(entry.get("bytes", 0) / 1e6)})
        if "licence" in entry:
            info["licence"] = entry["licence"]
        if entry.get("details"):
            info["details"] = entry["details"]
    return info


def remove_model(name: str) -> Path:
    path = model_path(name)
    if not path.is_dir():
        raise InputError(f"model {name!r} is not in the store ({models_folder()})")
    trash = models_folder() / f".removing-{name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)  # atomic: a reader sees the whole model or none
    shutil.rmtree(trash, ignore_errors=True)
    return path


def resolve_model(name_or_path: str | Path) -> Path:
    """A model path: an existing path as given, else the store's model of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    text = str(name_or_path)
    if set(text) <= NAME_CHARACTERS and not text.startswith("."):
        if installed(text):
            return model_path(text)
        if text in CATALOG:
            raise InputError(f"model {text!r} is in the catalog but not downloaded yet: run 'segtoolkit models "
                             f"fetch {text}' (or import its file with 'segtoolkit models import FILE --name {text}')")
    raise InputError(f"{name_or_path}: model folder not found (nor a model file or store model of that name; see "
                     "'segtoolkit models list')")


# ---------------------------------------------------------------------------------------------- checksums


def read_checksums() -> dict[str, str]:
    path = store_home() / CHECKSUMS
    if not path.is_file():
        return {}
    recorded = read_json(path, "corrupt checksum record", "delete it to record the checksums again")
    return recorded if isinstance(recorded, dict) else {}


def record_checksum(url: str, digest: str) -> None:
    recorded = read_checksums()
    recorded[url] = digest
    store_home().mkdir(parents=True, exist_ok=True)
    write_text_atomic(store_home() / CHECKSUMS, json.dumps(recorded, indent=1, sort_keys=True) + "\n")


def expected_checksum(part: dict) -> str | None:
    return part.get("sha256") or read_checksums().get(part["url"])


# ---------------------------------------------------------------------------------------------- downloads


def download(url: str, target: Path, sha256: str | None = None, progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> str:
    """Download ``url`` to ``target`` through ``target.part`` (resumed when present), verify it (``sha256`` when
    known) and rename it into place; returns its SHA-256. Proxies come from the environment."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"segtoolkit/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.build_opener().open(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # the partial file is already complete
            return _finish(partial, target, sha256, url)
        raise InputError(f"{url}: the server answered {error.code} {error.reason}; try again later, or download it "
                         f"by other means and run 'segtoolkit models import FILE'") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(f"{url}: cannot download ({reason}). Offline or behind a firewall? Download this address on "
                         "another machine (or set https_proxy), carry the file over and run 'segtoolkit models "
                         "import FILE --name NAME'") from None
    with response:
        if have and response.status != 206:  # the server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        done = have
        try:
            with open(partial, "ab" if have else "wb") as sink:
                for block in iter(lambda: response.read(CHUNK), b""):
                    sink.write(block)
                    done += len(block)
                    fraction = done / total if total else 0.0
                    report(progress, min(fraction, 1.0), f"{done / 1e6:.0f}" + (f"/{total / 1e6:.0f} MB" if total
                                                                                 else " MB"), cancel)
        except (OSError, urllib.error.URLError) as error:
            raise InputError(f"{url}: the download broke off after {done / 1e6:.0f} MB ({error}); run the same "
                             "command again to resume it") from None
    if total is not None and done < total:
        raise InputError(f"{url}: the download stopped at {done / 1e6:.0f} of {total / 1e6:.0f} MB; run the same "
                         "command again to resume it")
    return _finish(partial, target, sha256, url)


def _finish(partial: Path, target: Path, sha256: str | None, url: str) -> str:
    digest = file_sha256(partial)
    if sha256 and digest != sha256:
        partial.unlink(missing_ok=True)
        raise InputError(f"{url}: the downloaded file's SHA-256 {digest[:16]}... differs from the expected "
                         f"{sha256[:16]}...; it was deleted. Run the command again; if it persists, the file changed "
                         "at its source or on the way")
    os.replace(partial, target)
    return digest


def fetch(name: str, progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          force: bool = False) -> Path:
    """Download a catalog model (every part), verify, unpack and convert it into the store."""
    if name not in CATALOG:
        raise InputError(f"model {name!r} is not in the catalog ({', '.join(CATALOG)}); import your own with "
                         "'segtoolkit models import PATH'")
    if installed(name) and not force:
        return model_path(name)
    entry = CATALOG[name]
    downloads = store_home() / "downloads"
    files = []
    parts = entry["parts"]
    for index, part in enumerate(parts):
        target = downloads / f"{part['dataset']}.zip"
        span = scaled(progress, 0.7 * index / len(parts), 0.7 * (index + 1) / len(parts))
        expected = expected_checksum(part)
        if target.is_file() and expected and file_sha256(target) == expected:
            files.append(target)
            continue
        target.unlink(missing_ok=True)
        digest = download(part["url"], target, expected, span, cancel)
        if expected is None:
            record_checksum(part["url"], digest)  # trust on first download; verified from now on
        files.append(target)
    path = install(name, files, source="catalog", title=entry["title"], licence=entry["licence"],
                   modality=entry["modality"], progress=scaled(progress, 0.7, 1.0), cancel=cancel,
                   catalog_entry=entry)
    for file in files:
        file.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- import


def import_model(paths, name: str | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, force: bool = False) -> Path:
    """Import model folders or zips carried in by hand (a SegToolkit model, an nnU-Net trained model or dataset
    folder, nnU-Net's export zip, TotalSegmentator weights zips or its ``nnunet/results`` folder) into the store as
    ``name`` (default: the first one's name). Several nnU-Net datasets together become a task; under a catalog
    task's name (``total``) they get the task's class names and values."""
    paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: not found")
    if name is None:
        first = paths[0]
        name = first.name[:-4] if first.suffix.lower() == ".zip" else first.name
        name = "".join(c if c in NAME_CHARACTERS else "_" for c in name).lstrip(".") or "model"
    check_name(name)
    if installed(name) and not force:
        raise InputError(f"model {name!r} is already in the store; remove it first or import under another --name")
    catalog_entry = CATALOG.get(name)
    return install(name, paths, source="imported from " + ", ".join(p.name for p in paths), progress=progress,
                   cancel=cancel, catalog_entry=catalog_entry,
                   licence=catalog_entry["licence"] if catalog_entry else None,
                   modality=catalog_entry["modality"] if catalog_entry else "")


def install(name: str, sources: list[Path], source: str, title: str = "", licence: str | None = None,
            modality: str = "", progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
            catalog_entry: dict | None = None) -> Path:
    """Unpack and convert ``sources`` into a staging folder, describe them in ``store.json`` and rename the whole
    into ``models/name`` (replacing an older copy only when the new one is complete)."""
    from .formats.convert import convert_sources

    staging = store_home() / "staging" / f"{name}-{uuid.uuid4().hex[:8]}"
    out = staging / "model"
    try:
        entry = convert_sources(sources, staging / "unpacked", out, progress, cancel)
        if catalog_entry is not None and catalog_entry.get("format") == "task":
            _match_catalog(_as_task(entry, out), catalog_entry, name)
            entry = _as_task(entry, out)
            if catalog_entry.get("locator"):
                entry["locator"] = catalog_entry["locator"]
        entry.update({"name": name, "source": source, "title": title or entry.get("title", ""),
                      "modality": modality or entry.get("modality", ""), "imported": time.strftime("%Y-%m-%d"),
                      "segtoolkit": __version__})
        if licence:
            entry["licence"] = licence
        entry["files"] = {str(PurePosixPath(*p.relative_to(out).parts)): file_sha256(p)
                          for p in sorted(out.rglob("*")) if p.is_file()}
        entry["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        write_text_atomic(out / STORE_JSON, json.dumps(entry, indent=1) + "\n")
        final = model_path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final.exists():
            old = final.parent / f".old-{name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(out, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        report(progress, 1.0, f"{name}: in the store", cancel)
        return final
    except OSError as error:
        raise OutputError(f"{store_home()}: cannot write the model store ({error}); set SEGTOOLKIT_HOME to a "
                          "writable folder with space") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _as_task(entry: dict, out: Path) -> dict:
    """A one-dataset nnU-Net entry as a task of one part (the catalog's one-model tasks)."""
    if entry["format"] != "nnunet":
        return entry
    from .formats.nnunet_files import find_trained_folder

    chosen = find_trained_folder(out / entry["folder"])
    entry.update({"format": "task", "parts": [{"folder": f"{entry['folder']}/{chosen.name}",
                                               "classes": list(entry["classes"].values())}]})
    return entry


def _match_catalog(entry: dict, catalog_entry: dict, name: str) -> None:
    """Order and label a task's parts as the catalog does (a hand-carried TotalSegmentator zip gets the task's
    class names and values)."""
    by_dataset = {part["folder"].split("/")[0]: part for part in entry["parts"]}
    missing = [p["dataset"] for p in catalog_entry["parts"] if p["dataset"] not in by_dataset]
    if missing:
        raise InputError(f"{name}: the imported files lack the part(s) {', '.join(missing)}; import all "
                         f"{len(catalog_entry['parts'])} zips of the task together (or fetch it)")
    entry["parts"] = [dict(by_dataset[p["dataset"]], classes=p["classes"]) for p in catalog_entry["parts"]]
    entry["classes"] = {str(k): v for k, v in task_classes(catalog_entry).items()}


def verify_installed(name_or_path: Path) -> dict:
    """``store.json`` of a store model, after checking every file against its recorded SHA-256."""
    path = Path(name_or_path)
    entry = read_json(path / STORE_JSON, "corrupt store entry", "remove the model and get it again")
    if not isinstance(entry, dict):
        raise InputError(f"{path / STORE_JSON}: not a store entry")
    for relative, digest in entry.get("files", {}).items():
        file = path / relative
        if ".." in PurePosixPath(relative).parts or not file.resolve().is_relative_to(path.resolve()):
            raise InputError(f"{path / STORE_JSON}: lists {relative!r}, outside the model folder; remove the model")
        if not file.is_file():
            raise InputError(f"{file}: missing from the store; remove the model and get it again")
        if file_sha256(file) != digest:
            raise InputError(f"{file}: changed since it was stored (SHA-256 differs); remove the model "
                             f"('segtoolkit models remove {path.name}') and get it again")
    return entry


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
