"""Label propagation: move an atlas label map onto a target grid through a registration transform.

Interpolating label values directly would invent labels at boundaries (half way between 1 and 3 is 2). The
default ``onehot`` mode instead interpolates each label's indicator map linearly and keeps, per voxel, the
label with the largest interpolated weight (background wins ties), which gives smooth boundaries and only
labels that exist in the atlas. ``nearest`` uses nearest-neighbour interpolation (faster, blocky).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import LabelMap, label_values
from ...progress import CancelToken, ProgressCallback, report

INTERPOLATIONS = ("onehot", "nearest")


def warp_labels(labels: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
                interpolation: str = "onehot", progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> sitk.Image:
    """``labels`` resampled onto the grid of ``reference``; ``transform`` maps reference points to label points.

    The result has the pixel type of ``labels`` and holds only values present in ``labels``.
    """
    if interpolation not in INTERPOLATIONS:
        raise InputError(f"unknown label interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
    if labels.GetDimension() != reference.GetDimension():
        raise InputError(f"label map is {labels.GetDimension()}D but the target is {reference.GetDimension()}D")
    if interpolation == "nearest":
        return sitk.Resample(labels, reference, transform, sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    return _warp_one_hot(labels, reference, transform, progress, cancel)


def _warp_one_hot(labels: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
                  progress: ProgressCallback | None, cancel: CancelToken | None) -> sitk.Image:
    """Per-label linear interpolation of indicator maps, then a running argmax (no stack of all labels)."""
    values = label_values(labels)
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(reference)
    resampler.SetTransform(_dense(transform, reference) if len(values) > 1 else transform)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetDefaultPixelValue(0.0)
    array = sitk.GetArrayViewFromImage(labels)
    best = np.zeros(reference.GetSize()[::-1], dtype=np.float32)
    result = np.zeros(best.shape, dtype=array.dtype)
    resampler.SetDefaultPixelValue(1.0)  # outside the atlas is background
    best[...] = sitk.GetArrayFromImage(resampler.Execute(_indicator(labels, array == 0)))
    resampler.SetDefaultPixelValue(0.0)
    for number, value in enumerate(values):
        report(progress, number / max(1, len(values)), f"warping label {value}", cancel)
        weight = sitk.GetArrayFromImage(resampler.Execute(_indicator(labels, array == value)))
        wins = weight > best
        best[wins] = weight[wins]
        result[wins] = value
    report(progress, 1.0, "labels warped", cancel)
    out = sitk.GetImageFromArray(result)
    out.CopyInformation(reference)
    return sitk.Cast(out, labels.GetPixelID())


def _dense(transform: sitk.Transform, reference: sitk.Image) -> sitk.Transform:
    """Non-linear transforms evaluated once on the reference grid: resampling many label maps through a
    displacement field is much cheaper than evaluating B-splines or composite transforms for each."""
    if transform.IsLinear():
        return transform
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, reference.GetSize(),
                                              reference.GetOrigin(), reference.GetSpacing(),
                                              reference.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def _indicator(like: sitk.Image, mask: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.float32))
    image.CopyInformation(like)
    return image


def propagate_labels(atlas_labels: LabelMap, reference: sitk.Image, transform: sitk.Transform,
                     interpolation: str = "onehot", progress: ProgressCallback | None = None,
                     cancel: CancelToken | None = None) -> LabelMap:
    """Like :func:`warp_labels`, keeping the atlas label names and colours."""
    image = warp_labels(atlas_labels.image, reference, transform, interpolation, progress, cancel)
    return LabelMap(image, atlas_labels.labels.covering(label_values(atlas_labels.image)))
