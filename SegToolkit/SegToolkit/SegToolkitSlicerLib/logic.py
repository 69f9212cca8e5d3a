"""What the SegToolkit module does, without the GUI: SegToolkitLib methods run on MRML nodes.

Every method takes nodes and plain values, converts them with :mod:`.mrml` (world LPS SimpleITK images, LPS
seeds), calls SegToolkitLib, and writes segments (names, colours, terminology; existing segments are kept unless
``overwrite``). Long operations (atlas, deep learning) are returned as :class:`~.jobs.Job` objects so the GUI can
run their computation on a worker thread; :func:`~.jobs.run_job` runs one synchronously.

Usable from the Slicer Python console::

    from SegToolkitSlicerLib.logic import SegToolkitSlicerLogic
    logic = SegToolkitSlicerLogic(slicer.mrmlScene)
    ids = logic.snake(volume, seeds, segmentation)
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.progress import CancelToken, ProgressCallback

from . import mrml

PREVIEW_NODE_NAME = "SegToolkit preview"


def single_label(mask: sitk.Image, name: str, color: tuple[float, float, float] | None = None) -> LabelMap:
    """A 0/1 mask as a one-label label map called ``name``."""
    table = LabelTable()
    table.add(1, name, color)
    return LabelMap(sitk.Cast(mask > 0, sitk.sitkUInt8), table)


class SegToolkitSlicerLogic:
    """SegToolkit on a scene: each method returns the ids of the segments it wrote."""

    def __init__(self, scene) -> None:
        self.scene = scene
        self._preview: tuple[LabelMap, object] | None = None

    # ------------------------------------------------------------------------------------------------ outputs
    def output_segmentation(self, volume, segmentation=None):
        """``segmentation``, or a new segmentation node on the volume's grid named after the volume."""
        if segmentation is not None:
            return segmentation
        return mrml.new_segmentation(self.scene, volume, f"{volume.GetName()} segmentation")

    def write(self, label_map: LabelMap, volume, segmentation=None, overwrite: bool = False) -> list[str]:
        """Write a label map (world LPS) into ``segmentation`` (created when None) and point it at the volume."""
        segmentation = self.output_segmentation(volume, segmentation)
        ids = mrml.label_map_to_segments(label_map, segmentation, overwrite=overwrite)
        if volume is not None:
            segmentation.SetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole(), volume.GetID())
        return ids

    def show_preview(self, label_map: LabelMap, volume):
        """Show a result in a separate preview segmentation node (replaced by every preview)."""
        node = self.scene.GetFirstNodeByName(PREVIEW_NODE_NAME)
        if node is None or not node.IsA("vtkMRMLSegmentationNode"):
            node = mrml.new_segmentation(self.scene, volume, PREVIEW_NODE_NAME)
        node.GetSegmentation().RemoveAllSegments()
        node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        mrml.label_map_to_segments(label_map, node)
        self._preview = (label_map, volume)
        return node

    def apply_preview(self, segmentation=None, overwrite: bool = False) -> list[str]:
        """Write the last previewed result into ``segmentation`` and remove the preview node."""
        if self._preview is None:
            raise InputError("nothing to apply: press Preview first")
        label_map, volume = self._preview
        ids = self.write(label_map, volume, segmentation, overwrite)
        self.discard_preview()
        return ids

    def has_preview(self) -> bool:
        """True while a previewed result waits to be applied."""
        return self._preview is not None and self.scene.GetFirstNodeByName(PREVIEW_NODE_NAME) is not None

    def discard_preview(self) -> None:
        node = self.scene.GetFirstNodeByName(PREVIEW_NODE_NAME)
        if node is not None:
            self.scene.RemoveNode(node)
        self._preview = None

    # ----------------------------------------------------------------------------------------------- threshold
    def threshold_labels(self, volume, lower: float | None, upper: float | None, name: str = "Threshold",
                         **options) -> LabelMap:
        """Voxels with ``lower <= value <= upper`` as a one-label label map (options as in
        :func:`SegToolkitLib.methods.classic.threshold.threshold`, e.g. ``largest=True``, ``fill=True``)."""
        from SegToolkitLib.methods.classic.threshold import threshold

        return single_label(threshold(mrml.volume_to_sitk(volume), lower, upper, **options), name)

    def threshold(self, volume, lower: float | None, upper: float | None, segmentation=None, *,
                  overwrite: bool = False, **options) -> list[str]:
        """Segment by thresholding; see :meth:`threshold_labels`."""
        return self.write(self.threshold_labels(volume, lower, upper, **options), volume, segmentation, overwrite)

    # ------------------------------------------------------------------------------------------ region growing
    def region_growing_labels(self, volume, seeds, mode: str = "confidence", name: str = "Region",
                              competitors=None, multiplier: float = 2.5, lower: float | None = None,
                              upper: float | None = None, progress: ProgressCallback | None = None,
                              cancel: CancelToken | None = None) -> LabelMap:
        """Grow a region from the markups' points as a one-label label map.

        ``mode``: ``connected`` (intensity range ``lower``..``upper``, from the seed neighbourhood when not
        given), ``confidence`` (mean ± ``multiplier`` SD, re-estimated) or ``competitive`` (the seeds grow
        against the ``competitors`` markups' points, which stand for the surrounding tissue).
        """
        from SegToolkitLib.methods.classic import region_growing as growing

        image = mrml.volume_to_sitk(volume)
        points = _seed_points(seeds)
        if mode == "connected":
            mask = growing.connected_threshold(image, points, lower, upper, progress=progress, cancel=cancel)
        elif mode == "confidence":
            mask = growing.confidence_connected(image, points, multiplier=multiplier, progress=progress,
                                                cancel=cancel)
        elif mode == "competitive":
            if competitors is None:
                raise InputError("competitive growing: also place points in the surrounding tissue "
                                 "(competing seeds)")
            mask = growing.competitive_growing(image, {1: points, 0: _seed_points(competitors)},
                                               progress=progress, cancel=cancel)
        else:
            raise InputError(f"growing mode {mode!r}: choose one of {', '.join(growing.METHODS)}")
        return single_label(mask, name)

    def region_growing(self, volume, seeds, segmentation=None, *, overwrite: bool = False,
                       **options) -> list[str]:
        """Segment by region growing from the markups' points; see :meth:`region_growing_labels`."""
        return self.write(self.region_growing_labels(volume, seeds, **options), volume, segmentation, overwrite)

    # ---------------------------------------------------------------------------------------------- snakes
    def snake_session(self, volume, seeds, **options):
        """A :class:`SegToolkitLib.methods.classic.snakes.SnakeSession` started from the markups' points."""
        from SegToolkitLib.methods.classic.snakes import SnakeSession

        return SnakeSession(mrml.volume_to_sitk(volume), _seed_points(seeds), **options)

    def snake_labels(self, volume, seeds, iterations: int = 500, name: str = "Snake",
                     progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                     **options) -> LabelMap:
        """Evolve a snake from each seed until it converges (or ``iterations``) as a one-label label map."""
        from SegToolkitLib.methods.classic.snakes import snake

        mask = snake(mrml.volume_to_sitk(volume), _seed_points(seeds), iterations=iterations, progress=progress,
                     cancel=cancel, **options)
        return single_label(mask, name)

    def snake(self, volume, seeds, segmentation=None, *, overwrite: bool = False, **options) -> list[str]:
        """Segment with a snake grown from the markups' points; see :meth:`snake_labels`."""
        return self.write(self.snake_labels(volume, seeds, **options), volume, segmentation, overwrite)

    # ------------------------------------------------------------------------------------------ measurements
    def measure(self, segmentation, volume=None, table=None, segment_ids: list[str] | None = None,
                progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
        """Measure each segment (volume, diameters, RECIST, ellipsoid; intensity statistics when a volume is
        given, on its grid) into a table node (created when None) with one row per segment."""
        from SegToolkitLib.measurement.shape import measure

        ids = mrml.segment_ids(segmentation, segment_ids)
        label_map = mrml.segmentation_to_label_map(segmentation, volume, ids)
        image = mrml.volume_to_sitk(volume) if volume is not None else None
        report = measure(label_map, image, labels=range(1, len(ids) + 1), progress=progress, cancel=cancel)
        rows = [{"segment_id": segment_id, **row} for segment_id, row in zip(ids, report.rows())]
        if table is None:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentation.GetName()} measurements")
        mrml.rows_to_table(rows, table, ["segment_id"] + report.columns())
        return table

    def export_table_csv(self, table, path: str) -> None:
        """Save a measurement table as CSV."""
        mrml.write_table_csv(table, path)


def _seed_points(seeds) -> list[tuple[float, float, float]]:
    """World LPS points from a markups node or a sequence of LPS points."""
    if seeds is None:
        raise InputError("no seed points: place at least one point inside the structure")
    if hasattr(seeds, "GetNumberOfControlPoints"):
        points = mrml.markups_to_lps(seeds)
        if not points:
            raise InputError(f"{seeds.GetName()}: has no control points; place at least one point inside the "
                             "structure")
        return points
    return [tuple(float(v) for v in point) for point in np.reshape(np.asarray(seeds, float), (-1, 3))]
