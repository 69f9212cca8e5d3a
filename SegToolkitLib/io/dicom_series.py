"""DICOM image series: find the series in a folder, check their slice geometry, read one as a ``SimpleITK.Image``.

A folder may hold several series (and SEG, RTSTRUCT or SR objects beside them). :func:`scan_folder` groups the
files by ``SeriesInstanceUID`` from their headers; :func:`read_dicom_series` reads one series after checking what
ITK alone would paper over: slices of different sizes, orientations or pixel spacings, two slices at one
position, missing slices, uneven spacing, gantry tilt (slices shifted in-plane) and truncated files. A problem is a
one-line :class:`InputError`, never a silently uniform spacing. Single-frame slices are placed by their
``ImagePositionPatient`` along the slice normal (not by file name or instance number); enhanced multi-frame CT/MR
images by their per-frame positions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .messages import first_line, format_numbers

# SOP classes that hold no image to segment (segmentations, structure sets, reports, presentation states...).
NON_IMAGE_MODALITIES = ("SEG", "RTSTRUCT", "SR", "PR", "KO", "RTPLAN", "RTDOSE", "REG")
POSITION_TOLERANCE_MM = 0.01
ORIENTATION_TOLERANCE = 1e-4
SPACING_TOLERANCE = 0.01  # relative unevenness of slice steps accepted as rounding in the headers


@dataclass
class Frame:
    """One 2D image of a series: a single-frame file, or one frame of a multi-frame file."""

    path: Path
    index: int | None  # frame number (0-based) in a multi-frame file, None for a single-frame file
    position: np.ndarray
    orientation: np.ndarray  # row direction (3) then column direction (3), LPS
    pixel_spacing: tuple[float, float]  # (between rows, between columns) as DICOM orders it
    rows: int
    columns: int
    sop_instance_uid: str


@dataclass
class DicomSeries:
    """The headers of one series, its frames sorted along the slice normal once :func:`check_geometry` ran."""

    uid: str
    folder: Path
    modality: str = ""
    description: str = ""
    number: str = ""
    frames: list[Frame] = field(default_factory=list)
    datasets: list = field(default_factory=list)  # pydicom datasets (headers only), one per file
    multiframe: bool = False

    @property
    def files(self) -> list[Path]:
        return [Path(ds.filename) for ds in self.datasets]

    @property
    def is_image(self) -> bool:
        return self.modality not in NON_IMAGE_MODALITIES and bool(self.frames)


@dataclass
class SeriesGeometry:
    """Size (columns, rows, slices), spacing, origin and direction (ITK order, LPS) of a checked series."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def empty_image(self) -> sitk.Image:
        """The grid as an image of zeros (uint8), for placing frames on it."""
        image = sitk.Image(list(self.size), sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def scan_folder(folder: Path | str) -> list[DicomSeries]:
    """All DICOM series in ``folder`` (and its sub-folders), by ``SeriesInstanceUID``; non-DICOM files skipped."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder that holds the DICOM files")
    series: dict[str, DicomSeries] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)  # files without preamble too
        except Exception:  # noqa: BLE001 - anything pydicom cannot parse is not part of a series
            continue
        if not any(keyword in ds for keyword in ("SOPClassUID", "Rows", "Modality")):
            continue  # parsed only because of force=True: not a DICOM object
        uid = str(ds.get("SeriesInstanceUID", "") or "")  # anonymised exports may leave it empty: one group
        entry = series.setdefault(uid, DicomSeries(uid, folder, str(ds.get("Modality", "") or ""),
                                                  str(ds.get("SeriesDescription", "") or ""),
                                                  str(ds.get("SeriesNumber", "") or "")))
        entry.datasets.append(ds)
        frames = _frames_of(ds, path)
        entry.frames.extend(frames)
        entry.multiframe = entry.multiframe or int(ds.get("NumberOfFrames", 1) or 1) > 1
    return list(series.values())


def choose_series(folder: Path | str, series_uid: str | None = None,
                  found: Sequence[DicomSeries] | None = None) -> DicomSeries:
    """The image series with ``series_uid``, or the only image series of the folder (or the largest, with a note)."""
    folder = Path(folder)
    found = list(found) if found is not None else scan_folder(folder)
    images = [s for s in found if s.is_image]
    if series_uid is not None:
        for entry in found:
            if entry.uid == series_uid:
                if not entry.is_image:
                    raise InputError(f"{folder}: series {series_uid} is a {entry.modality or 'non-image'} object, "
                                     "not an image series")
                return entry
        raise InputError(f"{folder}: no DICOM series with SeriesInstanceUID {series_uid}; found "
                         f"{', '.join(s.uid for s in images) or 'none'} (list them with 'segtoolkit info {folder}')")
    if not images:
        raise InputError(f"{folder}: folder holds no DICOM series" +
                         (f" with images (only {', '.join(sorted({s.modality for s in found}))} objects)"
                          if found else ""))
    return max(images, key=lambda s: len(s.frames))


def check_geometry(series: DicomSeries) -> SeriesGeometry:
    """Sort the frames along the slice normal and check they form one regular 3D grid; return that grid."""
    frames = series.frames
    name = f"{series.folder} (series {series.uid})"
    first = frames[0]
    for frame in frames[1:]:
        if (frame.rows, frame.columns) != (first.rows, first.columns):
            raise InputError(f"{name}: slices of different sizes ({first.columns}x{first.rows} in "
                             f"{first.path.name}, {frame.columns}x{frame.rows} in {frame.path.name}); the series "
                             "mixes several acquisitions: pick one with --series or separate the files")
        if not np.allclose(frame.orientation, first.orientation, atol=ORIENTATION_TOLERANCE):
            raise InputError(f"{name}: slices with different orientations ({first.path.name} and "
                             f"{frame.path.name}); the series mixes several stacks (e.g. a scout or a localizer): "
                             "separate them into their own folders")
        if not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=1e-4, atol=1e-6):
            raise InputError(f"{name}: slices with different pixel spacings ({first.pixel_spacing} in "
                             f"{first.path.name}, {frame.pixel_spacing} in {frame.path.name}); the series mixes "
                             "several reconstructions: separate them")
    row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(column), 1, atol=1e-3)
            and abs(float(np.dot(row, column))) < 1e-3):
        raise InputError(f"{name}: ImageOrientationPatient {list(first.orientation)} is not two perpendicular unit "
                         "vectors; the header is damaged")
    frames.sort(key=lambda frame: float(np.dot(frame.position, normal)))
    first = frames[0]
    depths = np.array([float(np.dot(frame.position, normal)) for frame in frames])
    steps = np.diff(depths)
    _check_duplicates(frames, steps, name)
    step = _check_even_steps(frames, depths, steps, name)
    _check_no_tilt(frames, normal, step, name)
    spacing_rows, spacing_columns = first.pixel_spacing
    if step is None:  # a single slice: the thickness is the best guess of its extent
        step = _single_slice_spacing(series)
    direction = np.column_stack([row, column, normal])
    return SeriesGeometry((first.columns, first.rows, len(frames)), (spacing_columns, spacing_rows, step),
                          tuple(float(v) for v in first.position), tuple(float(v) for v in direction.ravel()))


def read_dicom_series(folder: Path | str, series_uid: str | None = None) -> sitk.Image:
    """Read one DICOM series from ``folder`` (the largest one, or the one with ``series_uid``), checked whole."""
    folder = Path(folder)
    series = choose_series(folder, series_uid)
    geometry = check_geometry(series)
    check_complete(series)
    image = _read_multiframe(series) if series.multiframe else _read_single_frames(series)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    # which series this is, so that a DICOM SEG made for another series is refused when placed on it
    image.SetMetaData("0020|000e", series.uid)
    return image


def load_reference_series(folder: Path | str, series_uid: str | None = None) -> tuple[DicomSeries, SeriesGeometry]:
    """The headers and checked grid of the series a DICOM SEG or RTSTRUCT will reference."""
    series = choose_series(folder, series_uid)
    return series, check_geometry(series)


def check_complete(series: DicomSeries) -> None:
    """Raise :class:`InputError` when a file of the series is cut off (its pixel data shorter than declared)."""
    import pydicom

    for ds in series.datasets:
        path = Path(ds.filename)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                full = pydicom.dcmread(path)
            except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged files
                raise InputError(f"{path}: DICOM file is damaged ({str(error)[:120]}); copy or export it again") \
                    from None
        cut = any("End of file" in str(w.message) or "fewer bytes" in str(w.message) for w in caught)
        if "PixelData" not in full or cut or len(full.PixelData) < _native_bytes(full):
            raise InputError(f"{path}: DICOM file is incomplete (its pixel data is cut off); it was probably "
                             "truncated while copying: copy or export the series again")


def describe_orientation(direction: Sequence[float]) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique' from the slice normal (third direction column)."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    normal = np.abs(matrix[:, 2])
    axis = int(np.argmax(normal))
    if normal[axis] < 0.99:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _frames_of(ds, path: Path) -> list[Frame]:
    """The frames of one file with their positions; [] for objects without a plane geometry."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if not rows or not columns:
        return []
    count = int(ds.get("NumberOfFrames", 1) or 1)
    uid = str(ds.get("SOPInstanceUID", ""))
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
        frames = []
        for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence[:count]):
            position = frame_attribute(group, shared, "PlanePositionSequence", "ImagePositionPatient")
            orientation = frame_attribute(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
            spacing = frame_attribute(group, shared, "PixelMeasuresSequence", "PixelSpacing")
            if position is None or orientation is None or spacing is None:
                return []
            frames.append(Frame(path, index, np.array(position, float), np.array(orientation, float),
                                (float(spacing[0]), float(spacing[1])), rows, columns, uid))
        return frames
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return []
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or (1.0, 1.0)
    if count > 1:
        return []  # a multi-frame file without per-frame positions (e.g. ultrasound cine): not a 3D series
    return [Frame(path, None, np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float),
                  (float(spacing[0]), float(spacing[1])), rows, columns, uid)]


def frame_attribute(group, shared, sequence: str, attribute: str):
    """An attribute of an enhanced multi-frame object: from the frame's own functional group, else the shared one."""
    for source in (group, shared):
        if source is not None and sequence in source and len(source[sequence].value):
            value = source[sequence][0].get(attribute)
            if value is not None:
                return value
    return None


def _check_duplicates(frames: list[Frame], steps: np.ndarray, name: str) -> None:
    duplicates = np.nonzero(steps < POSITION_TOLERANCE_MM)[0]
    if len(duplicates):
        a, b = frames[duplicates[0]], frames[duplicates[0] + 1]
        raise InputError(f"{name}: {len(duplicates)} slice position(s) occur twice (e.g. {a.path.name} and "
                         f"{b.path.name} at {format_numbers(a.position)} mm); the folder holds duplicate files or two "
                         "acquisitions in one series: remove the duplicates or split the series")


def _check_even_steps(frames: list[Frame], depths: np.ndarray, steps: np.ndarray, name: str) -> float | None:
    """The common slice step; missing slices and uneven spacing raise :class:`InputError`."""
    if not len(steps):
        return None
    step = float(np.median(steps))
    uneven = np.abs(steps - step) > SPACING_TOLERANCE * step + 1e-3
    if not np.any(uneven):
        return float((depths[-1] - depths[0]) / (len(depths) - 1))
    where = int(np.nonzero(uneven)[0][0])
    ratio = steps[where] / step
    if abs(ratio - round(ratio)) < 0.05 and round(ratio) >= 2:
        missing = int(sum(round(s / step) - 1 for s in steps if abs(s / step - round(s / step)) < 0.05))
        raise InputError(f"{name}: {missing} slice(s) missing (a gap of {steps[where]:.3g} mm after "
                         f"{frames[where].path.name}, the other slices are {step:.3g} mm apart); copy the complete "
                         "series")
    raise InputError(f"{name}: uneven slice spacing ({steps.min():.3g} to {steps.max():.3g} mm, first change after "
                     f"{frames[where].path.name}); a regular 3D grid cannot hold it without resampling: resample "
                     "the series (e.g. in Slicer) or pick a series with even spacing")


def _check_no_tilt(frames: list[Frame], normal: np.ndarray, step: float | None, name: str) -> None:
    if step is None:
        return
    offsets = np.array([frame.position for frame in frames]) - frames[0].position
    along = offsets @ normal
    sideways = np.linalg.norm(offsets - np.outer(along, normal), axis=1)
    if sideways.max() > max(POSITION_TOLERANCE_MM, 1e-3 * abs(along[-1])):
        raise InputError(f"{name}: slices are shifted sideways by up to {sideways.max():.3g} mm along the stack "
                         "(gantry tilt or a sheared volume); a regular grid cannot hold it: correct the tilt "
                         "first (e.g. dcm2niix or Slicer's DICOM import with tilt correction)")


def _single_slice_spacing(series: DicomSeries) -> float:
    ds = series.datasets[0]
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword)
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 1.0


def _native_bytes(ds) -> int:
    """Bytes of pixel data a native (uncompressed) file must hold; 0 for compressed transfer syntaxes."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return 0
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8) or 8)
    return (int(ds.Rows) * int(ds.Columns) * frames * samples * bits + 7) // 8


def _read_single_frames(series: DicomSeries) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(frame.path) for frame in series.frames])
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{series.folder}: cannot read DICOM series {series.uid} ({first_line(error)})") from None


def _read_multiframe(series: DicomSeries) -> sitk.Image:
    """Enhanced multi-frame images: frames decoded by pydicom, rescaled per frame, stacked by position."""
    import pydicom

    arrays: dict[Path, np.ndarray] = {}
    slices = []
    for frame in series.frames:
        if frame.path not in arrays:
            ds = pydicom.dcmread(frame.path)
            try:
                pixels = ds.pixel_array
            except Exception as error:  # noqa: BLE001 - missing decoders raise various errors
                raise InputError(f"{frame.path}: cannot decode the pixel data ({str(error)[:120]}); install the "
                                 "pydicom decoder for its transfer syntax or export it uncompressed") from None
            pixels = pixels.reshape((-1,) + pixels.shape[-2:])
            arrays[frame.path] = _rescaled_frames(ds, pixels)
        slices.append(arrays[frame.path][frame.index or 0])
    stack = np.stack(slices)
    if np.all(np.equal(np.round(stack), stack)) and stack.min() >= -32768 and stack.max() < 32768:
        stack = stack.astype(np.int16)
    return sitk.GetImageFromArray(stack.astype(np.float32) if stack.dtype != np.int16 else stack)


def _rescaled_frames(ds, pixels: np.ndarray) -> np.ndarray:
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]
    out = np.empty(pixels.shape, dtype=np.float64)
    groups = ds.get("PerFrameFunctionalGroupsSequence", [None] * len(pixels))
    for index, frame in enumerate(pixels):
        slope = frame_attribute(groups[index], shared, "PixelValueTransformationSequence", "RescaleSlope") \
            if groups[index] is not None else None
        intercept = frame_attribute(groups[index], shared, "PixelValueTransformationSequence", "RescaleIntercept") \
            if groups[index] is not None else None
        slope = float(slope if slope is not None else ds.get("RescaleSlope", 1) or 1)
        intercept = float(intercept if intercept is not None else ds.get("RescaleIntercept", 0) or 0)
        out[index] = frame * slope + intercept
    return out




