"""Single- and multi-atlas segmentation: register each atlas onto the target, propagate its labels, fuse them.

Atlases are registered in parallel worker processes (``workers``; SimpleITK's own threads are shared out
among them). Images travel to the workers pickled (SimpleITK images and transforms pickle with their geometry).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import CancelledError, InputError
from ...io import LabelMap, LabelTable, check_scalar, grid_difference, label_values, read_label_map, read_scalar_image
from ...progress import CancelToken, ProgressCallback, report, scaled
from .fusion import FUSION_METHODS, fuse_labels
from .propagation import warp_labels
from .refinement import refine_with_intensities
from .registration import METRICS, RegistrationResult, check_registrable, register, resample_image
from .strategy import AUTO, AtlasPlan, label_fit, plan_registration

log = logging.getLogger(__name__)


@dataclass
class Atlas:
    """An intensity image and its label map on the same grid."""

    image: sitk.Image
    labels: LabelMap
    name: str = "atlas"


@dataclass
class RegistrationOptions:
    """How each atlas is registered, its labels warped and the atlases combined.

    ``auto`` settings are chosen per atlas by :func:`.strategy.plan_registration` (same subject or space versus
    another subject) and reported in :attr:`PropagatedAtlas.plan`.
    """

    transform: str = AUTO
    preset: str = "default"
    metric: str = AUTO
    init: str = AUTO
    interpolation: str = "onehot"
    # The metric only samples where the atlas labels dilated by this margin lie, so the registration aligns the
    # labelled structures rather than the whole field of view; ``None``: the whole image; ``auto``: see strategy.
    mask_margin_mm: float | str | None = AUTO
    # Adapt the fused labels to the target's intensities (refinement module): ``auto`` between subjects with
    # automatic fusion, ``on`` or ``off``.
    refine: str = AUTO


@dataclass
class PropagatedAtlas:
    """One atlas moved onto the target: transform, registration report, warped labels and image."""

    name: str
    registration: RegistrationResult
    labels: sitk.Image
    image: sitk.Image
    plan: AtlasPlan | None = None


@dataclass
class AtlasSegmentation:
    """The fused label map and what happened to each atlas."""

    label_map: LabelMap
    atlases: list[PropagatedAtlas] = field(default_factory=list)
    fusion: str = "majority"
    refinement: str = ""  # what the intensity refinement did (empty: not asked for)

    @property
    def summary(self) -> list[str]:
        """What was chosen, one line per atlas and one for the fusion (printed by the command line)."""
        lines = [f"{item.name}: {item.plan.describe()}" for item in self.atlases if item.plan is not None]
        if len(self.atlases) > 1 or self.refinement:
            fusion = self.fusion if len(self.atlases) > 1 else "single atlas"
            lines.append(f"fusion: {fusion}" + (f"; {self.refinement}" if self.refinement else ""))
        return lines


def load_atlas(image_path: Path | str, labels_path: Path | str, labels: LabelTable | None = None) -> Atlas:
    """Read an atlas (image + label map) and check it is usable."""
    image = read_scalar_image(image_path)
    label_map = read_label_map(labels_path, labels, reference=image)  # a DICOM SEG is placed on the atlas image
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


def segment_with_atlases(target: sitk.Image, atlases: Sequence[Atlas], fusion: str = AUTO,
                         options: RegistrationOptions | None = None, workers: int = 1,
                         progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                         target_name: str = "target image") -> AtlasSegmentation:
    """Register every atlas onto ``target``, warp its labels and fuse them (one atlas: no fusion needed).

    ``fusion`` ``auto``: majority voting, and between subjects (``options.refine`` ``auto``) the vote adapted to
    the target's intensities; what was chosen is in :attr:`AtlasSegmentation.summary`.
    """
    options = options or RegistrationOptions()
    if not atlases:
        raise InputError("no atlas given; pass at least one atlas image and label map")
    if fusion != AUTO and fusion not in FUSION_METHODS:
        raise InputError(f"unknown fusion method {fusion!r}; choose one of auto, {', '.join(FUSION_METHODS)}")
    check_scalar(target, target_name)
    check_registrable(target, target_name)
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
    segmentation = fuse_propagated(target, results, fusion, options.refine, _merged_tables(atlases),
                                   scaled(progress, 0.9, 1.0), cancel)
    for line in segmentation.summary:
        log.info("atlas: %s", line)
    return segmentation


def fuse_propagated(target: sitk.Image, results: Sequence[PropagatedAtlas], fusion: str = AUTO,
                    refine: str = AUTO, table: LabelTable | None = None, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> AtlasSegmentation:
    """Fuse atlases already propagated onto ``target`` (see :func:`segment_with_atlases`)."""
    method = "majority" if fusion == AUTO else fusion
    report(progress, 0.0, f"fusing {len(results)} atlases ({method})", cancel)
    fused = results[0].labels if len(results) == 1 else \
        fuse_labels([r.labels for r in results], method, [r.image for r in results], target)
    refinement = ""
    if _wants_refinement(refine, fusion, results):
        report(progress, 0.5, "adapting the labels to the target's intensities", cancel)
        refined = refine_with_intensities(target, [r.labels for r in results], fused,
                                          atlas_images=[r.image for r in results])
        fused, refinement = refined.image, refined.note
        method = f"{method} vote, intensity-refined" if refined.applied else method
    report(progress, 1.0, "atlas segmentation done", cancel)
    table = table or LabelTable()
    return AtlasSegmentation(LabelMap(fused, table.covering(label_values(fused))), list(results), method,
                             refinement)


def _wants_refinement(refine: str, fusion: str, results: Sequence[PropagatedAtlas]) -> bool:
    """``on``/``off`` as asked; ``auto``: with automatic fusion when any atlas is another subject."""
    if refine not in (AUTO, "on", "off"):
        raise InputError(f"unknown refinement {refine!r}; choose auto, on or off")
    if refine != AUTO:
        return refine == "on"
    return fusion == AUTO and any(r.plan is not None and r.plan.between_subjects for r in results)


def _propagate_here(target, atlas, options, number, count, progress, cancel, target_name) -> PropagatedAtlas:
    sub = scaled(progress, number / count, (number + 1) / count)
    return propagate_atlas(target, atlas, options, sub, cancel, target_name)


def propagate_atlas(target: sitk.Image, atlas: Atlas, options: RegistrationOptions,
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                    target_name: str = "target image") -> PropagatedAtlas:
    """Register one atlas onto the target (``auto`` settings resolved first, see :mod:`.strategy`) and warp its
    labels and image onto the target grid."""
    plan = plan_registration(target, atlas.image, options.transform, options.init, options.metric,
                             options.mask_margin_mm)
    log.info("atlas %s: %s", atlas.name, plan.describe())
    moving_mask = None if plan.mask_margin_mm is None else atlas_mask(atlas, plan.mask_margin_mm)
    metrics = METRICS if plan.metric == AUTO else (plan.metric,)
    candidates, failures = [], []
    for number, metric in enumerate(metrics):
        part = scaled(progress, number / len(metrics), (number + 1) / len(metrics))
        try:
            result = register(target, atlas.image, plan.transform, options.preset, metric, plan.init,
                              moving_mask=moving_mask, progress=scaled(part, 0.0, 0.9), cancel=cancel,
                              fixed_name=target_name, moving_name=atlas.name)
        except InputError as error:  # one metric losing the images is not fatal while another may succeed
            failures.append(error)
            continue
        labels = warp_labels(atlas.labels.image, target, result.transform, options.interpolation,
                             scaled(part, 0.9, 1.0), cancel)
        fit = label_fit(target, labels) if len(metrics) > 1 else float("nan")
        candidates.append((fit, metric, result, labels))
    if not candidates:
        raise failures[0]
    _, metric, result, labels = max(candidates, key=lambda item: item[0])
    if len(metrics) > 1:
        fits = ", ".join(f"{item[1]} {item[0]:.2f}" for item in candidates) + "".join(
            f", {other} failed" for other in metrics if other not in [item[1] for item in candidates])
        plan = replace(plan, metric=metric, metric_choice=f"kept {metric}: its labels explain more of the "
                                                          f"target's intensities (correlation ratio {fits})")
    image = resample_image(sitk.Cast(atlas.image, sitk.sitkFloat32), target, result.transform)
    return PropagatedAtlas(atlas.name, result, labels, image, plan)


def atlas_mask(atlas: Atlas, margin_mm: float) -> sitk.Image:
    """The atlas's labelled voxels dilated by ``margin_mm`` (an ellipsoidal margin, rounded to voxels per axis)."""
    if not 0 <= margin_mm < float("inf"):  # NaN compares False: it failed later in int(round(...))
        raise InputError(f"atlas mask margin {margin_mm} mm: must be a finite number, zero or positive")
    mask = sitk.Cast(atlas.labels.image > 0, sitk.sitkUInt8)
    radius = [int(round(margin_mm / spacing)) for spacing in atlas.labels.image.GetSpacing()]
    return sitk.BinaryDilate(mask, radius) if max(radius) > 0 else mask


def _propagate_in_workers(target, atlases, options, workers, progress, cancel, target_name) -> list[PropagatedAtlas]:
    """Run :func:`propagate_atlas` for each atlas in a process pool; progress advances as atlases finish.

    Workers ignore Ctrl-C (the terminal sends it to the whole process group): the parent alone handles it and
    terminates them, so an interrupted run ends with one message instead of a traceback per worker.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a multi-threaded ITK process
    report(progress, 0.0, f"registering {len(atlases)} atlases with {workers} workers", cancel)
    pool = _worker_pool(context, workers, threads)
    try:
        pending = {number: pool.apply_async(propagate_atlas, (target, atlas, options, None, None, target_name))
                   for number, atlas in enumerate(atlases)}
        results: dict[int, PropagatedAtlas] = {}
        while pending:
            if cancel is not None and cancel.cancelled:
                raise CancelledError("atlas segmentation cancelled by the user")
            pending[next(iter(pending))].wait(0.5)
            for number in [n for n, job in pending.items() if job.ready()]:
                results[number] = pending.pop(number).get()  # re-raises a worker's error here
                report(progress, len(results) / len(atlases),
                       f"{len(results)}/{len(atlases)} atlases registered", cancel)
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()
    return [results[number] for number in range(len(atlases))]


def _worker_pool(context, workers: int, threads: int):
    """A process pool whose workers ignore SIGINT from their first instruction: they are started while the
    parent ignores it (an ignored signal stays ignored in the new interpreter), then the parent's handler
    returns. Setting it in the initializer alone would leave a window during the workers' imports."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        return context.Pool(workers, initializer=_start_worker, initargs=(threads,))
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _start_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


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
