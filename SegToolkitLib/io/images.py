"""Reading and writing images as ``SimpleITK.Image`` with their full geometry.

Supported inputs: NIfTI (.nii, .nii.gz), NRRD/NHDR, MetaImage (.mha/.mhd), a folder holding a DICOM series,
Slicer's ``.seg.nrrd`` segmentations (see :mod:`.segmentation_file`) and 2D images (PNG, JPEG, TIFF, BMP,
2D NIfTI). Outputs: NIfTI, NRRD, MetaImage and ``.seg.nrrd``. Every write is atomic.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from .atomic import atomic_output, check_output_path, compound_suffix
from .labels import LabelTable

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SEGMENTATION_SUFFIX = ".seg.nrrd"
READ_SUFFIXES = VOLUME_SUFFIXES + PICTURE_SUFFIXES + (SEGMENTATION_SUFFIX,)
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", SEGMENTATION_SUFFIX)


@dataclass
class LabelMap:
    """A label map (integer image, 0 = background) and the names and colours of its labels."""

    image: sitk.Image
    labels: LabelTable

    def present_values(self) -> list[int]:
        """Label values (> 0) that occur in the image."""
        return label_values(self.image)


def read_image(path: Path | str, series_uid: str | None = None) -> sitk.Image:
    """Read any supported image file, or the DICOM series in a folder, keeping its geometry.

    For a DICOM folder with several series the one with the most slices is read unless ``series_uid`` picks
    one; slices are ordered by their position along the slice normal.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = compound_suffix(path)
    if suffix == SEGMENTATION_SUFFIX:
        from .segmentation_file import read_segmentation

        return read_segmentation(path).image
    if suffix not in READ_SUFFIXES and suffix != ".dcm":
        raise InputError(f"{path}: unsupported file type {suffix or '(no extension)'}; "
                         f"use one of {', '.join(READ_SUFFIXES)} or a DICOM folder")
    image = _read_nifti(path) if suffix in (".nii", ".nii.gz") else _read_with_itk(path)
    if suffix in PICTURE_SUFFIXES:
        image = _picture_to_scalar(image)
    return image


def read_scalar_image(path: Path | str, series_uid: str | None = None,
                      dimensions: Sequence[int] = (2, 3)) -> sitk.Image:
    """Read an image that must be scalar (one value per voxel) and of one of ``dimensions``."""
    image = read_image(path, series_uid)
    check_scalar(image, str(path), dimensions)
    return image


def check_scalar(image: sitk.Image, name: str, dimensions: Sequence[int] = (2, 3)) -> None:
    """Raise :class:`InputError` unless ``image`` is a scalar 2D/3D image."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} values per voxel (a vector or "
                         "colour image); a scalar (grey-value) image is needed")
    dimension = image.GetDimension()
    if dimension == 4 and image.GetSize()[3] == 1:
        return
    if dimension not in dimensions:
        raise InputError(f"{name}: is a {dimension}D image; a {' or '.join(f'{d}D' for d in dimensions)} "
                         "image is needed (split 4D series into single volumes first)")


def read_dicom_series(folder: Path | str, series_uid: str | None = None) -> sitk.Image:
    """Read one DICOM series from ``folder`` (the largest one, or the one with ``series_uid``)."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    series_ids = list(reader.GetGDCMSeriesIDs(str(folder)) or ())
    if not series_ids:
        raise InputError(f"{folder}: folder holds no DICOM series")
    if series_uid is not None:
        if series_uid not in series_ids:
            raise InputError(f"{folder}: no DICOM series with SeriesInstanceUID {series_uid}; "
                             f"found {', '.join(series_ids)}")
        chosen = series_uid
    else:
        chosen = max(series_ids, key=lambda uid: len(reader.GetGDCMSeriesFileNames(str(folder), uid)))
    files = reader.GetGDCMSeriesFileNames(str(folder), chosen)  # sorted by image position
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder}: cannot read DICOM series {chosen} ({_first_line(error)})") from None


def read_label_map(path: Path | str, labels: LabelTable | None = None) -> LabelMap:
    """Read a label map (any image format or ``.seg.nrrd``) and check it holds non-negative integers.

    Names come from the ``.seg.nrrd`` header when there is one, else from ``labels``, else defaults.
    """
    path = Path(path)
    if compound_suffix(path) == SEGMENTATION_SUFFIX and path.is_file():
        from .segmentation_file import read_segmentation

        label_map = read_segmentation(path)
        if labels is not None:
            label_map = LabelMap(label_map.image, _merge_tables(label_map.labels, labels))
        return label_map
    image = read_image(path)
    check_scalar(image, str(path))
    image = as_label_image(image, str(path))
    table = (labels or LabelTable()).covering(label_values(image))
    return LabelMap(image, table)


def as_label_image(image: sitk.Image, name: str) -> sitk.Image:
    """Check ``image`` holds non-negative integers and return it with an unsigned integer pixel type."""
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise InputError(f"{name}: label map has non-integer values; give a label map with whole-number "
                             "labels (0 = background), not a probability or intensity image")
    if array.size and array.min() < 0:
        raise InputError(f"{name}: label map has negative values (minimum {array.min():g}); labels must be "
                         "0 (background) or positive integers")
    maximum = int(array.max()) if array.size else 0
    pixel_type = sitk.sitkUInt8 if maximum < 256 else sitk.sitkUInt16 if maximum < 65536 else sitk.sitkUInt32
    return sitk.Cast(image, pixel_type) if image.GetPixelID() != pixel_type else image


def label_values(image: sitk.Image) -> list[int]:
    """Sorted label values > 0 present in an integer image."""
    values = np.unique(sitk.GetArrayViewFromImage(image))
    return [int(v) for v in values if v > 0]


def write_image(image: sitk.Image, path: Path | str, compress: bool = True) -> Path:
    """Write an image atomically as NIfTI, NRRD or MetaImage (chosen by the extension)."""
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix == SEGMENTATION_SUFFIX:
        return write_label_map(LabelMap(image, LabelTable().covering(label_values(image))), path)
    if suffix not in WRITE_SUFFIXES:
        raise OutputError(f"{path}: cannot write {suffix or 'files without extension'}; "
                          f"use one of {', '.join(WRITE_SUFFIXES)}")
    with atomic_output(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
        except RuntimeError as error:
            raise OutputError(f"{path}: cannot write image ({_first_line(error)})") from None
    return path


def write_label_map(label_map: LabelMap, path: Path | str) -> Path:
    """Write a label map; ``.seg.nrrd`` keeps names and colours in Slicer's segmentation header."""
    path = Path(path)
    if compound_suffix(path) == SEGMENTATION_SUFFIX:
        from .segmentation_file import write_segmentation

        return write_segmentation(label_map, path)
    return write_image(label_map.image, path)


def check_same_grid(image: sitk.Image, reference: sitk.Image, name: str, reference_name: str,
                    tolerance: float = 1e-4) -> None:
    """Raise :class:`InputError` unless both images share size, spacing, origin and direction."""
    problem = grid_difference(image, reference, tolerance)
    if problem:
        raise InputError(f"{name}: not on the same voxel grid as {reference_name} ({problem}); resample one "
                         "onto the other first")


def grid_difference(image: sitk.Image, reference: sitk.Image, tolerance: float = 1e-4) -> str:
    """A short description of how two image grids differ, or '' when they match."""
    if image.GetDimension() != reference.GetDimension():
        return f"{image.GetDimension()}D vs {reference.GetDimension()}D"
    if image.GetSize() != reference.GetSize():
        return f"size {image.GetSize()} vs {reference.GetSize()}"
    checks = (("spacing", image.GetSpacing(), reference.GetSpacing()),
              ("origin", image.GetOrigin(), reference.GetOrigin()),
              ("direction", image.GetDirection(), reference.GetDirection()))
    for what, a, b in checks:
        scale = max(1.0, float(np.max(np.abs(b))))
        if not np.allclose(a, b, atol=tolerance * scale, rtol=0):
            return f"{what} {_fmt(a)} vs {_fmt(b)}"
    return ""


def check_output_not_input(output: Path | str, inputs: Sequence[Path | str]) -> Path:
    """Check an output path before any work starts (folder exists, not an input)."""
    return check_output_path(output, inputs)


def _read_with_itk(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot read image ({_first_line(error)}); is the file complete and "
                         "in the format its extension says?") from None


def _read_nifti(path: Path) -> sitk.Image:
    """A NIfTI file read by ITK, checked whole: ITK's reader zero-fills truncated files and reads corrupt gzip
    data without a word. The check decompresses the file once more, so it runs in a second thread while ITK
    reads (both release the GIL); its error, when there is one, says more than ITK's."""
    with ThreadPoolExecutor(1) as pool:
        complete = pool.submit(check_nifti_complete, path)
        try:
            image = _read_with_itk(path)
        finally:
            complete.result()
    return image


def check_nifti_complete(path: Path) -> None:
    """Raise :class:`InputError` when a NIfTI file holds fewer bytes than its header promises."""
    compressed = compound_suffix(path) == ".nii.gz"
    try:
        with (gzip.open if compressed else open)(path, "rb") as stream:
            header = stream.read(540)
            expected = _nifti_expected_bytes(header, path)
            # a gzip stream must be decompressed to know its length (and to check its CRC)
            available = len(header) + _count_remaining_bytes(stream) if compressed else path.stat().st_size
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{path}: file is damaged or incomplete ({error}); download or export it again") from None
    if available < expected:
        raise InputError(f"{path}: file is incomplete ({available} of {expected} bytes); it was probably cut off "
                         "while copying or downloading")


def _nifti_expected_bytes(header: bytes, path: Path) -> int:
    """Header size + voxel data size promised by a NIfTI-1 or NIfTI-2 header (either byte order)."""
    for order in ("<", ">"):
        (size,) = struct.unpack(order + "i", header[:4]) if len(header) >= 4 else (0,)
        if size == 348 and len(header) >= 112:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
            break
        if size == 540 and len(header) >= 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        raise InputError(f"{path}: not a NIfTI file (no valid header); check the file type")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1:1 + max(0, min(int(dims[0]), 7))]]))
    return int(max(offset, size)) + voxels * max(int(bitpix), 8) // 8


def _count_remaining_bytes(stream) -> int:
    total = 0
    while chunk := stream.read(1 << 22):
        total += len(chunk)
    return total


def _picture_to_scalar(image: sitk.Image) -> sitk.Image:
    """Convert an RGB(A) picture to grey values (ITU-R 601 luma); keep scalar pictures as they are."""
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        return image
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    grey = array[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if components >= 3 else array[..., 0]
    out = sitk.GetImageFromArray(grey.astype(np.float32))
    out.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
    return out


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = [line for line in lines if "itk::ERROR" in line or "Exception" in line]
    return (detail or lines or ["unknown error"])[-1][:200]


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _merge_tables(primary: LabelTable, fallback: LabelTable) -> LabelTable:
    merged = LabelTable(dict(fallback.labels))
    merged.labels.update(primary.labels)
    return merged
