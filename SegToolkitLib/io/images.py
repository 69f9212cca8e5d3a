"""Reading and writing images as ``SimpleITK.Image`` with their full geometry.

Supported inputs: NIfTI (.nii, .nii.gz), NRRD/NHDR, MetaImage (.mha/.mhd), a folder holding a DICOM series
(:mod:`.dicom_series`), DICOM SEG and RTSTRUCT files (:mod:`.dicom_seg`, :mod:`.rtstruct`), Slicer's ``.seg.nrrd``
segmentations (see :mod:`.segmentation_file`) and 2D images (PNG, JPEG, TIFF, BMP, 2D NIfTI). Outputs: NIfTI, NRRD,
MetaImage, ``.seg.nrrd``, DICOM SEG and RTSTRUCT. Every write is atomic.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from .atomic import (
    atomic_output,
    check_not_special_file,
    check_output_path,
    check_path_text,
    compound_suffix,
    write_failed,
)
from .dicom_series import read_dicom_series
from .file_checks import check_finite_voxels, check_geometry, check_image_file, scan_nifti
from .label_map import LabelMap, as_label_image, label_values, merge_tables
from .labels import LabelTable
from .messages import first_line, format_numbers

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SEGMENTATION_SUFFIX = ".seg.nrrd"
READ_SUFFIXES = VOLUME_SUFFIXES + PICTURE_SUFFIXES + (SEGMENTATION_SUFFIX,)
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", SEGMENTATION_SUFFIX)


def read_image(path: Path | str, series_uid: str | None = None) -> sitk.Image:
    """Read any supported image file, or the DICOM series in a folder, keeping its geometry.

    For a DICOM folder with several series the one with the most slices is read unless ``series_uid`` picks
    one; slices are ordered by their position along the slice normal.
    """
    path = check_not_special_file(check_path_text(path, "input path"), "input path")
    if path.is_dir():
        return read_dicom_series(path, series_uid)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    suffix = compound_suffix(path)
    if suffix == SEGMENTATION_SUFFIX:
        from .segmentation_file import read_segmentation

        return read_segmentation(path).image
    if suffix == ".dcm" and _dicom_object_kind(path):
        return read_label_map(path).image
    if suffix not in READ_SUFFIXES and suffix != ".dcm":
        raise InputError(f"{path}: unsupported file type {suffix or '(no extension)'}; "
                         f"use one of {', '.join(READ_SUFFIXES)} or a DICOM folder")
    if suffix in VOLUME_SUFFIXES:
        check_image_file(path)
    image = _read_nifti(path) if suffix in (".nii", ".nii.gz") else _read_with_itk(path)
    if suffix in PICTURE_SUFFIXES:
        image = _picture_to_scalar(image)
    check_geometry(image, str(path))
    if suffix not in (".nii", ".nii.gz"):  # NIfTI voxels were checked in the file (ITK turns NaN into 0)
        check_finite_voxels(image, str(path))
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


def read_label_map(path: Path | str, labels: LabelTable | None = None,
                   reference: sitk.Image | None = None) -> LabelMap:
    """Read a label map (any image format, ``.seg.nrrd``, DICOM SEG or RTSTRUCT) of non-negative integers.

    Names come from the ``.seg.nrrd`` or DICOM header when there is one, else from ``labels``, else defaults.
    A DICOM SEG is placed on ``reference``'s grid by its frame positions (on its frames' own grid without one);
    an RTSTRUCT needs ``reference``. Overlapping segments raise :class:`InputError` (see :func:`read_label_layers`).
    """
    path = Path(path)
    kind = _dicom_object_kind(path) if compound_suffix(path) == ".dcm" else None
    if kind:
        label_map = _read_dicom_label_map(path, kind, reference)
        return LabelMap(label_map.image, merge_tables(label_map.labels, labels)) if labels else label_map
    if compound_suffix(path) == SEGMENTATION_SUFFIX and path.is_file():
        from .segmentation_file import read_segmentation

        label_map = read_segmentation(path)
        if labels is not None:
            label_map = LabelMap(label_map.image, merge_tables(label_map.labels, labels))
        return label_map
    image = read_image(path)
    check_scalar(image, str(path))
    image = as_label_image(image, str(path))
    table = (labels or LabelTable()).covering(label_values(image))
    return LabelMap(image, table)


def read_label_layers(path: Path | str, labels: LabelTable | None = None,
                      reference: sitk.Image | None = None) -> list[LabelMap]:
    """Read a label map as layers: one per layer of a multi-layer ``.seg.nrrd`` or of a DICOM SEG with
    overlapping segments (segments within a layer never overlap); ``[read_label_map(...)]`` for other files."""
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix == SEGMENTATION_SUFFIX and path.is_file():
        from .segmentation_file import read_segmentation_layers

        layers = read_segmentation_layers(path)
    elif suffix == ".dcm" and _dicom_object_kind(path) == "SEG":
        from .dicom_seg import read_dicom_seg_layers

        layers = read_dicom_seg_layers(path, reference)
    else:
        return [read_label_map(path, labels, reference)]
    return [LabelMap(layer.image, merge_tables(layer.labels, labels)) if labels else layer for layer in layers]


def read_mask(path: Path | str, reference: sitk.Image) -> sitk.Image:
    """Read a mask or seed label image meant for ``reference``: a DICOM SEG or RTSTRUCT is placed on its grid."""
    path = Path(path)
    if compound_suffix(path) == ".dcm" and _dicom_object_kind(path):
        return read_label_map(path, reference=reference).image
    return read_image(path)


def is_dicom_label_file(path: Path | str) -> bool:
    """True for a DICOM SEG or RTSTRUCT file (label maps whose grid comes from the image they are placed on)."""
    return compound_suffix(path) == ".dcm" and _dicom_object_kind(Path(path)) is not None


def _dicom_object_kind(path: Path) -> str | None:
    """'SEG' or 'RTSTRUCT' for those DICOM objects, None for DICOM images; other objects raise."""
    from .dicom_seg import RTSTRUCT_SOP_CLASS, SEG_SOP_CLASSES, SR_SOP_CLASSES, dicom_sop_class

    sop_class = dicom_sop_class(path)
    if sop_class in SEG_SOP_CLASSES:
        return "SEG"
    if sop_class == RTSTRUCT_SOP_CLASS:
        return "RTSTRUCT"
    if sop_class in SR_SOP_CLASSES:
        raise InputError(f"{path}: is a DICOM structured report, not an image or segmentation")
    return None


def _read_dicom_label_map(path: Path, kind: str, reference: sitk.Image | None) -> LabelMap:
    if kind == "SEG":
        from .dicom_seg import read_dicom_seg

        return read_dicom_seg(path, reference)
    from .rtstruct import read_rtstruct

    if reference is None:
        raise InputError(f"{path}: an RTSTRUCT holds contours, not voxels; it can only be read onto an image's grid "
                         "(give the image it was drawn on, e.g. --image) or converted with Slicer first")
    return read_rtstruct(path, reference)


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
            raise write_failed(path, f"image writer: {first_line(error)}") from None
    return path


def write_label_map(label_map: LabelMap | list[LabelMap], path: Path | str, dicom=None) -> Path:
    """Write a label map; ``.seg.nrrd`` keeps names and colours in Slicer's segmentation header.

    ``.dcm`` writes a DICOM SEG (``.rtstruct.dcm`` an RTSTRUCT) of the series named by ``dicom``
    (a :class:`~.dicom_seg.DicomOutput`). Overlapping layers (a list) can only be written as DICOM SEG.
    """
    path = Path(path)
    if compound_suffix(path) == ".dcm":
        from .dicom_seg import DicomOutput, write_dicom_seg
        from .rtstruct import is_rtstruct_name, write_rtstruct

        options = dicom or DicomOutput()
        if is_rtstruct_name(path):
            return write_rtstruct(label_map, path, options)
        return write_dicom_seg(label_map, path, options)
    if isinstance(label_map, list):
        if len(label_map) > 1:
            raise OutputError(f"{path}: the segments overlap; only a DICOM SEG (.dcm) keeps overlapping segments")
        label_map = label_map[0]
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
            return f"{what} {format_numbers(a)} vs {format_numbers(b)}"
    return ""


def check_output_not_input(output: Path | str, inputs: Sequence[Path | str]) -> Path:
    """Check an output path before any work starts (folder exists, not an input)."""
    return check_output_path(output, inputs)


def _read_with_itk(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot read image ({first_line(error)}); is the file complete and "
                         "in the format its extension says?") from None


def _read_nifti(path: Path) -> sitk.Image:
    """A NIfTI file read by ITK, checked whole: ITK's reader zero-fills truncated files, reads corrupt gzip
    data without a word and turns NaN voxels into 0. The check decompresses the file once more, so it runs in a
    second thread while ITK reads (both release the GIL); its error, when there is one, says more than ITK's."""
    with ThreadPoolExecutor(1) as pool:
        complete = pool.submit(check_nifti_complete, path)
        try:
            image = _read_with_itk(path)
        finally:
            complete.result()
    return image


def check_nifti_complete(path: Path) -> None:
    """Raise :class:`InputError` when a NIfTI file holds fewer bytes than its header promises, or NaN voxels."""
    scan_nifti(path, compound_suffix(path) == ".nii.gz")


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





