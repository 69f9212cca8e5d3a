"""The cases of a cohort: found in a folder (image files and DICOM series, recursively) or listed in a CSV manifest.

Manifest columns (header row required): ``case`` (id), ``image`` (path, relative to the manifest or absolute; a
DICOM folder is allowed), extra channels in ``image_0001``, ``image_0002``..., optional ``seeds`` (LPS points
``x,y,z``, several separated by ``;``), optional ``reference`` (a reference label map for evaluation) and, for the
``measure`` task, ``labels`` (the label map to measure; ``image`` is then optional and gives intensities). An
optional ``group`` column (e.g. sex) makes the volume-outlier check compare each case with its own group.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io.atomic import compound_suffix
from ..io.images import SEGMENTATION_SUFFIX, VOLUME_SUFFIXES

CHANNEL_COLUMN = re.compile(r"^image_(\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Case:
    """One case: an id that is safe as a file name, its image channels and optional per-case inputs."""

    case: str
    images: list[str] = field(default_factory=list)  # paths; a DICOM folder may carry ``::SERIES_UID``
    seeds: str = ""
    reference: str = ""
    labels: str = ""  # measure task: the label map to measure
    group: str = ""  # optional covariate (e.g. sex): volume outliers are judged within each group

    def input_paths(self) -> list[str]:
        """Every file or folder this case reads."""
        return [p for p in (*self.images, self.reference, self.labels) if p]

    def fingerprint(self) -> str:
        """Size and modification time of each input: tells whether a failed case's input was replaced since."""
        parts = []
        for text in self.input_paths():
            path = Path(split_series(text)[0])
            try:
                stat = path.stat()
                parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
            except OSError:
                parts.append(f"{path}:missing")
        parts.append(self.seeds)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def split_series(text: str) -> tuple[str, str | None]:
    """``folder::uid`` -> (folder, uid); plain paths -> (path, None)."""
    if "::" in text:
        folder, uid = text.rsplit("::", 1)
        return folder, uid or None
    return text, None


def discover_cases(source: Path | str, task: str) -> list[Case]:
    """The cases of a folder or CSV manifest, in a stable order; raises :class:`InputError` for an unusable list."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: not found; give a folder of images or a CSV manifest")
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise InputError(f"{source}: a cohort input is a folder or a CSV manifest (.csv), not a single image")
        cases = read_manifest(source, task)
    else:
        cases = scan_folder(source, task)
    if not cases:
        raise InputError(f"{source}: no cases found (expected {', '.join(VOLUME_SUFFIXES)} files, DICOM series or "
                         "manifest rows)")
    return cases


def read_manifest(path: Path, task: str) -> list[Case]:
    """Cases from a CSV manifest (see the module docstring for the columns)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            columns = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read the manifest ({error})") from None
    required = ("case", "labels") if task == "measure" else ("case", "image")
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{path}: manifest has no column {', '.join(missing)}; it needs a header row with "
                         f"{', '.join(required)} (found: {', '.join(columns) or 'nothing'})")
    channel_columns = sorted((c for c in columns if CHANNEL_COLUMN.match(c)), key=lambda c: int(c[6:]))
    base = path.parent
    cases, seen = [], {}
    for line, row in enumerate(rows, start=2):
        if None in row:
            raise InputError(f"{path}: line {line} has more fields than the header; quote values holding commas, "
                             'e.g. seeds as "x,y,z;x,y,z"')
        row = {k.strip(): (v or "").strip() for k, v in row.items()}
        case_id = safe_case_id(row.get("case", ""))
        if not case_id:
            raise InputError(f"{path}: line {line} has an empty case id; give every row a case name")
        if case_id in seen:
            raise InputError(f"{path}: case {row['case']!r} on line {line} repeats line {seen[case_id]}; case ids "
                             "must be unique (also after unsafe characters become '_')")
        seen[case_id] = line
        images = [_resolve(base, row.get("image", ""))] if row.get("image") else []
        images += [_resolve(base, row[c]) for c in channel_columns if row.get(c)]
        if task != "measure" and not images:
            raise InputError(f"{path}: line {line} (case {case_id}) has no image path")
        cases.append(Case(case_id, images, row.get("seeds", ""), _resolve(base, row.get("reference", "")),
                          _resolve(base, row.get("labels", "")), row.get("group", "")))
    return cases


def scan_folder(folder: Path, task: str) -> list[Case]:
    """Image files (channels ``<case>_0000``, ``<case>_0001``... grouped) and DICOM series, found recursively."""
    suffixes = VOLUME_SUFFIXES + (SEGMENTATION_SUFFIX,) if task == "measure" else VOLUME_SUFFIXES
    files: dict[str, list[Path]] = {}
    dicom_folders: list[Path] = []
    for directory, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        here = Path(directory)
        others = False
        for name in sorted(names):
            if name.startswith("."):
                continue
            suffix = compound_suffix(name)
            if suffix in suffixes:
                stem = name[: -len(suffix)]
                key = str((here / stem).relative_to(folder))
                # <case>_0001... are channels only beside a <case>_0000 (nnU-Net naming), not any 4-digit ending
                if re.search(r"_\d{4}$", stem) and f"{stem[:-5]}_0000{suffix}" in names:
                    key = key[: -5]
                files.setdefault(key, []).append(here / name)
            elif suffix in ("", ".dcm", ".ima"):
                others = True
        if others:
            dicom_folders.append(here)
    cases = [_file_case(key, paths, task) for key, paths in sorted(files.items())]
    cases += [case for directory in dicom_folders for case in _dicom_cases(folder, directory)]
    return _unique(cases)


def _file_case(key: str, paths: list[Path], task: str) -> Case:
    paths = sorted(paths, key=lambda p: p.name)
    case = Case(safe_case_id(key), [str(p) for p in paths])
    if task == "measure":
        case.labels, case.images = case.images[0], []
    return case


def _dicom_cases(root: Path, directory: Path) -> list[Case]:
    """One case per DICOM series in ``directory`` (GDCM splits the files into series)."""
    import SimpleITK as sitk

    series = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(directory)) or ())
    key = str(directory.relative_to(root)) if directory != root else directory.name
    cases = []
    for uid in sorted(series):
        name = key if len(series) == 1 else f"{key}_{uid[-8:]}"
        cases.append(Case(safe_case_id(name), [f"{directory}::{uid}"]))
    return cases


def _unique(cases: list[Case]) -> list[Case]:
    """Number ids that collide after sanitising (``a/b`` and ``a_b``)."""
    seen: dict[str, int] = {}
    for case in cases:
        count = seen.get(case.case, 0)
        seen[case.case] = count + 1
        if count:
            case.case = f"{case.case}_{count + 1}"
    return cases


def safe_case_id(text: str) -> str:
    """A case id usable as a file name: path separators and unsafe characters become ``_``."""
    return _UNSAFE.sub("_", text.strip()).strip("._")


def _resolve(base: Path, text: str) -> str:
    if not text:
        return ""
    path = Path(os.path.expanduser(text))
    return str(path if path.is_absolute() else base / path)


def parse_seeds(text: str) -> list[tuple[float, float, float]]:
    """``"x,y,z;x,y,z"`` (LPS mm) -> points; raises :class:`InputError` for a malformed list."""
    points = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        try:
            values = tuple(float(v) for v in part.split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise InputError(f"seeds {text!r}: each point is x,y,z in LPS millimetres, points separated by ';'")
        points.append(values)
    return points
