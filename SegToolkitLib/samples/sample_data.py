"""Public sample data sets: a registry of files with their checksums, a download cache, and offline import.

Every registry entry names one file, where it is published, and the checksum it must have. :func:`fetch`
returns the cached copy when there is one (no network), otherwise downloads it into the cache folder
(``$SEGTOOLKIT_CACHE``, default ``~/.cache/segtoolkit``) through a temporary file that is checked against the
checksum before it is renamed into place, so the cache never holds a partial or wrong file. On a machine without
internet access, download the file elsewhere and put it into the cache with :func:`import_file`, which checks it
the same way.

Checksums are written ``"sha256:<hex>"``; ``"md5:<hex>"`` is accepted for files whose publisher documents only
an MD5 sum. Every checksum below was computed from the published file or copied from its publisher's code:
entries without a checksum that can be traced are not listed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import InputError, OutputError
from ..io.atomic import atomic_output
from ..progress import CancelToken, ProgressCallback, report

CACHE_ENV = "SEGTOOLKIT_CACHE"
CHUNK_BYTES = 1 << 20
HASH_ALGORITHMS = ("sha256", "md5")


@dataclass(frozen=True)
class SampleDataset:
    """One downloadable file of a public data set."""

    name: str
    url: str
    file_name: str
    checksum: str          # "sha256:<hex>" (or "md5:<hex>")
    licence: str
    description: str
    size_bytes: int | None = None


_TOTALSEG = "https://raw.githubusercontent.com/wasserth/TotalSegmentator/0e65a448d557382b1e925276212b3bec7f5aff83/" \
            "tests/reference_files/"
_IVADOMED = "https://raw.githubusercontent.com/ivadomed/data-testing/794a3075175266758d1bb95d864672a045a7918c/" \
            "ct_scan/"

REGISTRY: dict[str, SampleDataset] = {entry.name: entry for entry in (
    SampleDataset(
        "msd-spleen-task09", "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task09_Spleen.tar",
        "Task09_Spleen.tar", "md5:410d4a301da4e5b2f6f86ec3ddba524e", "CC BY-SA 4.0",
        "Medical Segmentation Decathlon Task09 Spleen: 41 training CTs with manual spleen labels, 20 test CTs "
        "(tar, about 1.5 GB; MONAI's mirror and checksum). Cite Antonelli et al., Nat Commun 2022."),
    SampleDataset(
        "msd-spleen-2-crop", _IVADOMED + "sub-spleen2/ct/sub-spleen2_ct.nii.gz", "sub-spleen2_ct.nii.gz",
        "sha256:a63966cac6b6997dc339a8694a7b792a4807317784741cd8c36f98c88c0d33f9", "CC BY-SA 4.0",
        "MSD Task09 case spleen_2, portal-venous CT cropped around the spleen (ivadomed test data).", 1186300),
    SampleDataset(
        "msd-spleen-2-crop-labels", _IVADOMED + "derivatives/labels/sub-spleen2/ct/sub-spleen2_ct_seg-manual.nii.gz",
        "sub-spleen2_ct_seg-manual.nii.gz",
        "sha256:1c3399068e678b817e035bea196439130f56aa0fc5fa3cca1391135f953be21b", "CC BY-SA 4.0",
        "Manual spleen label map for msd-spleen-2-crop (1 = spleen).", 11735),
    SampleDataset(
        "totalsegmentator-mr-example", _TOTALSEG + "example_mr_sm.nii.gz", "example_mr_sm.nii.gz",
        "sha256:209b46efaff595dd54a9332872e17a722b62654bbb68dbd89acd5090701bbd4f", "Apache-2.0",
        "Abdominal MRI at 3 mm shipped with TotalSegmentator's tests.", 277762),
    SampleDataset(
        "totalsegmentator-mr-example-labels", _TOTALSEG + "example_seg_mr.nii.gz", "example_seg_mr.nii.gz",
        "sha256:e73a5ee12962aa2bb2f3e43ab58dfc67990c5a7ef2dcb426a1bf5e5982b9587f", "Apache-2.0",
        "TotalSegmentator's own 'total_mr' label map of totalsegmentator-mr-example (model output, not manual).",
        16052),
)}


def cache_dir() -> Path:
    """The download cache: ``$SEGTOOLKIT_CACHE`` or ``~/.cache/segtoolkit``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "segtoolkit").expanduser()


def get_entry(name: str, registry: Mapping[str, SampleDataset] | None = None) -> SampleDataset:
    """The registry entry called ``name``; an :class:`InputError` listing the known names otherwise."""
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise InputError(f"unknown sample data set {name!r}; choose one of {', '.join(sorted(registry))} "
                         "(see 'segtoolkit sample list')")
    return registry[name]


def cached_path(name: str, registry: Mapping[str, SampleDataset] | None = None) -> Path:
    """Where the file of ``name`` lives in the cache (whether or not it is there yet)."""
    entry = get_entry(name, registry)
    return cache_dir() / entry.name / entry.file_name


def is_cached(name: str, registry: Mapping[str, SampleDataset] | None = None) -> bool:
    return cached_path(name, registry).is_file()


def fetch(name: str, registry: Mapping[str, SampleDataset] | None = None,
          progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
          timeout_s: float = 60.0) -> Path:
    """The cached file of ``name``, downloading and verifying it first when it is not cached yet.

    A cached file is checked against its checksum every time it is served: one damaged on disk (or edited) is
    removed and downloaded again."""
    entry = get_entry(name, registry)
    target = cached_path(name, registry)
    if target.is_file():
        if _cached_copy_intact(entry, target, progress, cancel):
            report(progress, 1.0, f"{name}: cached")
            return target
    with _staging_file(target) as tmp:
        digest = _download(entry, tmp, progress, cancel, timeout_s)
        _check_digest(entry, digest, f"the download of {name} from {entry.url}",
                      "the download was damaged or the file changed upstream; nothing was saved")
    return target


def _cached_copy_intact(entry: SampleDataset, target: Path, progress: ProgressCallback | None,
                        cancel: CancelToken | None) -> bool:
    """Whether the cached file still has its published checksum; a damaged copy is removed."""
    hasher = _hasher(entry)
    total = max(target.stat().st_size, 1)
    with target.open("rb") as source:
        for done, chunk in enumerate(iter(lambda: source.read(CHUNK_BYTES), b""), start=1):
            hasher.update(chunk)
            report(progress, min(1.0, done * CHUNK_BYTES / total), f"{entry.name}: checking the cached copy",
                   cancel)
    algorithm, _, expected = entry.checksum.partition(":")
    if hasher.hexdigest().lower() == expected.lower():
        return True
    target.unlink()
    return False


def import_file(name: str, path: Path | str, registry: Mapping[str, SampleDataset] | None = None,
                progress: ProgressCallback | None = None) -> Path:
    """Copy a file the user downloaded already into the cache as ``name``, after checking its checksum."""
    entry = get_entry(name, registry)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected {entry.file_name} from {entry.url})")
    target = cached_path(name, registry)
    with _staging_file(target) as tmp:
        hasher = _hasher(entry)
        total = max(path.stat().st_size, 1)
        with path.open("rb") as source, tmp.open("wb") as sink:
            for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
                sink.write(chunk)
                report(progress, sink.tell() / total, f"importing {name}")
        _check_digest(entry, hasher.hexdigest(), str(path),
                      f"it is not the published {entry.file_name}; download it again from {entry.url}")
    return target


def file_checksum(path: Path | str, algorithm: str = "sha256") -> str:
    """The checksum of a file as ``"<algorithm>:<hex>"`` (for adding registry entries)."""
    hasher = hashlib.new(algorithm)
    with Path(path).open("rb") as source:
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


def _hasher(entry: SampleDataset):
    algorithm, _, expected = entry.checksum.partition(":")
    if algorithm not in HASH_ALGORITHMS or not expected:
        raise InputError(f"sample data set {entry.name}: checksum {entry.checksum!r} must be 'sha256:<hex>' or "
                         "'md5:<hex>'")
    return hashlib.new(algorithm)


def _check_digest(entry: SampleDataset, digest: str, what: str, advice: str) -> None:
    algorithm, _, expected = entry.checksum.partition(":")
    if digest.lower() != expected.lower():
        raise InputError(f"{what}: {algorithm} is {digest}, expected {expected}; {advice}")


@contextlib.contextmanager
def _staging_file(target: Path):
    """A temporary file beside ``target`` (creating the cache folders), renamed onto ``target`` when the block
    ends without an error; temporaries of killed runs are cleaned up (see :func:`..io.atomic.atomic_output`)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{target.parent}: cannot create the sample-data cache folder ({error.strerror}); "
                          f"set {CACHE_ENV} to a writable folder") from None
    # the checksum, checked inside the block on the bytes as they were written, is the verification
    with atomic_output(target, verify=lambda written: None) as tmp:
        yield tmp


def _download(entry: SampleDataset, tmp: Path, progress: ProgressCallback | None, cancel: CancelToken | None,
              timeout_s: float) -> str:
    """Stream ``entry.url`` into ``tmp``; return the hex digest of what arrived."""
    hasher = _hasher(entry)
    try:
        with urllib.request.urlopen(entry.url, timeout=timeout_s) as response, tmp.open("wb") as sink:
            total = int(response.headers.get("Content-Length") or entry.size_bytes or 0)
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
                sink.write(chunk)
                fraction = sink.tell() / total if total else 0.0
                report(progress, fraction, f"{entry.name}: {sink.tell() / 1e6:.1f} MB", cancel)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise InputError(f"cannot download {entry.name} from {entry.url} ({reason}); check the network, or "
                         f"download {entry.file_name} yourself and run 'segtoolkit sample import {entry.name} "
                         "FILE'") from None
    return hasher.hexdigest()

