"""Single- and multi-atlas segmentation: register each atlas onto the target, propagate its labels, fuse them.

Atlases are registered in parallel worker processes (``workers``; SimpleITK's own threads are shared out
among them). Images travel to the workers pickled (SimpleITK images and transforms pickle with their geometry).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import CancelledError, InputError
from ...io import LabelMap, LabelTable, check_scalar, grid_difference, label_values, read_label_map, read_scalar_image
from ...progress import CancelToken, ProgressCallback, report, scaled
from .fusion import fuse_labels
from .propagation import warp_labels
from .registration import RegistrationResult, register, resample_image


@dataclass
class Atlas:
    """An intensity image and its label map on the same grid."""

    image: sitk.Image
    labels: LabelMap
    name: str = "atlas"


@dataclass
class RegistrationOptions:
    """How each atlas is registered and its labels warped."""

    transform: str = "deformable"
    preset: str = "default"
    metric: str = "mi"
    init: str = "geometry"
    interpolation: str = "onehot"
    # When set, the metric only samples where the atlas labels dilated by this margin lie: the registration then
    # aligns the labelled structures rather than the whole field of view (inter-subject atlases).
    mask_margin_mm: float | None = None


@dataclass
class PropagatedAtlas:
    """One atlas moved onto the target: transform, registration report, warped labels and image."""

    name: str
    registration: RegistrationResult
    labels: sitk.Image
    image: sitk.Image


@dataclass
class AtlasSegmentation:
    """The fused label map and what happened to each atlas."""

    label_map: LabelMap
    atlases: list[PropagatedAtlas] = field(default_factory=list)
    fusion: str = "majority"


def load_atlas(image_path: Path | str, labels_path: Path | str, labels: LabelTable | None = None) -> Atlas:
    """Read an atlas (image + label map) and check it is usable."""
    image = read_scalar_image(image_path)
    label_map = read_label_map(labels_path, labels)
    atlas = Atlas(image, label_map, Path(image_path).name)
    check_atlas(atlas, str(labels_path), str(image_path))
    return atlas


def check_atlas(atlas: Atlas, labels_name: str | None = None, image_name: str | None = None) -> None:
    """Raise :class:`InputError` when the atlas labels are empty or not on the atlas image's grid."""
    labels_name = labels_name or f"{atlas.name} labels"
    image_name = image_name or atlas.name
    check_scalar(atlas.image, image_name)
    problem = grid_difference(atlas.labels.image, atlas.image)
    if problem:
        raise InputError(f"{labels_name}: atlas labels are not on the grid of atlas image {image_name} ({problem}); "
                         "resample the labels onto the atlas image first")
    if not label_values(atlas.labels.image):
        raise InputError(f"{labels_name}: atlas label map is empty (only background); give a segmented atlas")


def segment_with_atlases(target: sitk.Image, atlases: Sequence[Atlas], fusion: str = "majority",
                         options: RegistrationOptions | None = None, workers: int = 1,
                         progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                         target_name: str = "target image") -> AtlasSegmentation:
    """Register every atlas onto ``target``, warp its labels and fuse them (one atlas: no fusion needed)."""
    options = options or RegistrationOptions()
    if not atlases:
        raise InputError("no atlas given; pass at least one atlas image and label map")
    check_scalar(target, target_name)
    for atlas in atlases:
        check_atlas(atlas)
        if atlas.image.GetDimension() != target.GetDimension():
            raise InputError(f"{atlas.name}: atlas is {atlas.image.GetDimension()}D but {target_name} is "
                             f"{target.GetDimension()}D; atlas and target must have the same dimension")
    workers = max(1, min(int(workers), len(atlases)))
    propagate = scaled(progress, 0.0, 0.9)
    if workers == 1:
        results = [_propagate_here(target, atlas, options, number, len(atlases), propagate, cancel, target_name)
                   for number, atlas in enumerate(atlases)]
    else:
        results = _propagate_in_workers(target, atlases, options, workers, propagate, cancel, target_name)
    report(progress, 0.9, f"fusing {len(results)} atlases ({fusion})", cancel)
    if len(results) == 1:
        fused = results[0].labels
    else:
        fused = fuse_labels([r.labels for r in results], fusion, [r.image for r in results], target)
    report(progress, 1.0, "atlas segmentation done", cancel)
    return AtlasSegmentation(LabelMap(fused, _merged_tables(atlases).covering(label_values(fused))), results, fusion)


def _propagate_here(target, atlas, options, number, count, progress, cancel, target_name) -> PropagatedAtlas:
    sub = scaled(progress, number / count, (number + 1) / count)
    return propagate_atlas(target, atlas, options, sub, cancel, target_name)


def propagate_atlas(target: sitk.Image, atlas: Atlas, options: RegistrationOptions,
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                    target_name: str = "target image") -> PropagatedAtlas:
    """Register one atlas onto the target and warp its labels and image onto the target grid."""
    moving_mask = None if options.mask_margin_mm is None else atlas_mask(atlas, options.mask_margin_mm)
    result = register(target, atlas.image, options.transform, options.preset, options.metric, options.init,
                      moving_mask=moving_mask, progress=scaled(progress, 0.0, 0.9), cancel=cancel,
                      fixed_name=target_name, moving_name=atlas.name)
    labels = warp_labels(atlas.labels.image, target, result.transform, options.interpolation,
                         scaled(progress, 0.9, 1.0), cancel)
    image = resample_image(sitk.Cast(atlas.image, sitk.sitkFloat32), target, result.transform)
    return PropagatedAtlas(atlas.name, result, labels, image)


def atlas_mask(atlas: Atlas, margin_mm: float) -> sitk.Image:
    """The atlas's labelled voxels dilated by ``margin_mm`` (an ellipsoidal margin, rounded to voxels per axis)."""
    if margin_mm < 0:
        raise InputError(f"atlas mask margin {margin_mm} mm: must be zero or positive")
    mask = sitk.Cast(atlas.labels.image > 0, sitk.sitkUInt8)
    radius = [int(round(margin_mm / spacing)) for spacing in atlas.labels.image.GetSpacing()]
    return sitk.BinaryDilate(mask, radius) if max(radius) > 0 else mask


def _propagate_in_workers(target, atlases, options, workers, progress, cancel, target_name) -> list[PropagatedAtlas]:
    """Run :func:`propagate_atlas` for each atlas in a process pool; progress advances as atlases finish."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a multi-threaded ITK process
    results: dict[int, PropagatedAtlas] = {}
    report(progress, 0.0, f"registering {len(atlases)} atlases with {workers} workers", cancel)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: dict[Future, int] = {
            pool.submit(_worker, target, atlas, options, threads, target_name): number
            for number, atlas in enumerate(atlases)}
        try:
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                if cancel is not None and cancel.cancelled:
                    raise CancelledError("atlas segmentation cancelled by the user")
                for future in done:
                    results[pending.pop(future)] = future.result()
                    report(progress, len(results) / len(atlases),
                           f"{len(results)}/{len(atlases)} atlases registered", cancel)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [results[number] for number in range(len(atlases))]


def _worker(target: sitk.Image, atlas: Atlas, options: RegistrationOptions, threads: int,
            target_name: str) -> PropagatedAtlas:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return propagate_atlas(target, atlas, options, target_name=target_name)


def _merged_tables(atlases: Sequence[Atlas]) -> LabelTable:
    """Label names and colours of all atlases (the first atlas naming a value wins)."""
    merged = LabelTable()
    for atlas in reversed(atlases):
        merged.labels.update(atlas.labels.labels.labels)
    return merged


def label_dice(result: sitk.Image, reference: sitk.Image, values: Sequence[int] | None = None) -> dict[int, float]:
    """Dice per label value between two label maps on one grid (for benchmarks and tests)."""
    a, b = sitk.GetArrayViewFromImage(result), sitk.GetArrayViewFromImage(reference)
    values = values if values is not None else label_values(reference)
    scores = {}
    for value in values:
        x, y = a == value, b == value
        total = int(x.sum() + y.sum())
        scores[int(value)] = 2.0 * float(np.logical_and(x, y).sum()) / total if total else 1.0
    return scores
