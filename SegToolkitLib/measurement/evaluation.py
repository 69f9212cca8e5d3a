"""Agreement of a predicted label map with a reference: overlap, surface distances and volume differences.

Definitions follow MONAI (``DiceMetric``, ``compute_hausdorff_distance(percentile=95)``,
``compute_average_surface_distance(symmetric=True)``); see ``docs/measurements.md`` for the table of columns
and the behaviour when a label is empty in one or both label maps.

* Surface voxels of a mask are its voxels with at least one face-neighbour outside (mask XOR its erosion with
  the 6-neighbourhood cross; the image border counts as outside).
* Surface distances are Euclidean distances in physical millimetres between surface voxel centres, through the
  full geometry (spacing and direction), found with a k-d tree.
* HD95 = max(95th percentile of prediction->reference distances, 95th percentile of reference->prediction).
* ASSD = mean of the prediction->reference and reference->prediction distances taken together.
* Volume differences are signed: prediction minus reference (positive: the prediction is larger).
* 2D label maps report areas (mm²) instead of volumes (:data:`COLUMNS_2D`).
* ``region`` restricts scoring to a part of the grid (a mask, or the annotated slices of a sparse reference):
  voxels outside it count in neither map.
* A label that touches the image's outer faces in either map gets the ``warning``
  :data:`~.boundary.CUT_OFF_WARNING` (its volume is a lower bound).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ..geometry import index_to_physical_matrix
from ..io import LabelMap, grid_difference
from ..io.images import as_label_image
from ..progress import CancelToken, ProgressCallback, report
from .boundary import CUT_OFF_WARNING, labels_touching_edge

COLUMNS = (
    "label", "name", "status", "dice", "jaccard", "hd95_mm", "assd_mm", "volume_prediction_ml",
    "volume_reference_ml", "volume_difference_ml", "relative_volume_difference_pct", "warning",
)
COLUMNS_2D = (
    "label", "name", "status", "dice", "jaccard", "hd95_mm", "assd_mm", "area_prediction_mm2",
    "area_reference_mm2", "area_difference_mm2", "relative_area_difference_pct", "warning",
)
# Status of one label row (see docs/measurements.md).
OK, BOTH_EMPTY, PREDICTION_EMPTY, REFERENCE_EMPTY, MEAN = (
    "ok", "both_empty", "prediction_empty", "reference_empty", "mean")
_MEAN_COLUMNS = ("dice", "jaccard", "hd95_mm", "assd_mm", "volume_difference_ml", "relative_volume_difference_pct")
_TO_2D = dict(zip(COLUMNS, COLUMNS_2D))


def columns_for(dimension: int) -> tuple[str, ...]:
    """The columns of :func:`compare`'s rows for label maps of ``dimension`` (areas in 2D, volumes in 3D)."""
    return COLUMNS_2D if dimension == 2 else COLUMNS


def compare(prediction: LabelMap, reference: LabelMap, resample: bool = False, labels: Iterable[int] | None = None,
            mean: bool = True, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None, region: np.ndarray | None = None) -> list[dict]:
    """Per-label Dice, Jaccard, HD95, ASSD and volume differences of ``prediction`` against ``reference``.

    ``labels`` selects label values (default: every value present in either map or named in either table).
    Label maps on different grids raise :class:`InputError` unless ``resample`` is set, in which case the
    prediction is resampled onto the reference grid with nearest-neighbour interpolation. With ``mean`` a last
    row (``status: "mean"``) averages the labels present in the reference (labels only in the prediction are
    reported but not averaged as Dice 0). ``region`` (bool array, z, y, x, on the reference grid) restricts the
    scoring to its voxels.
    """
    predicted = _on_reference_grid(prediction.image, reference.image, resample)
    predicted_array = sitk.GetArrayViewFromImage(predicted)
    reference_array = sitk.GetArrayViewFromImage(reference.image)
    cut_off = set(labels_touching_edge(predicted)) | set(labels_touching_edge(reference.image))
    if region is not None:
        region = np.asarray(region, dtype=bool)
        if region.shape != reference_array.shape:
            raise InputError(f"scoring region of shape {region.shape} does not fit the reference grid "
                             f"{reference_array.shape}")
        if not region.any():
            raise InputError("scoring region: is empty; nothing would be compared")
        predicted_array = np.where(region, predicted_array, 0)
        reference_array = np.where(region, reference_array, 0)
    values = sorted({int(v) for v in labels if int(v) > 0} if labels is not None else
                    set(_present(predicted_array)) | set(_present(reference_array))
                    | set(prediction.labels.values()) | set(reference.labels.values()))
    predicted_boxes = ndimage.find_objects(np.asarray(predicted_array))
    reference_boxes = ndimage.find_objects(np.asarray(reference_array))
    matrix = index_to_physical_matrix(reference.image)
    to_mm = matrix[:-1, :-1][:, ::-1]  # array (z, y, x) offsets -> LPS millimetres
    voxel_ml = float(abs(np.linalg.det(to_mm))) / 1000.0
    rows = []
    for number, value in enumerate(values):
        report(progress, number / max(len(values), 1), f"label {value}", cancel)
        box = _union_box(_box(predicted_boxes, value), _box(reference_boxes, value), predicted_array.shape)
        name = reference.labels.name(value) if value in reference.labels else prediction.labels.name(value)
        row = {"label": value, "name": name}
        if box is None:
            row.update(_empty_row(BOTH_EMPTY, 0.0, 0.0))
        else:
            row.update(label_agreement(np.asarray(predicted_array[box]) == value,
                                       np.asarray(reference_array[box]) == value, to_mm, voxel_ml))
        row["warning"] = CUT_OFF_WARNING if value in cut_off and row["status"] != BOTH_EMPTY else None
        rows.append({column: row.get(column) for column in COLUMNS})
    report(progress, 1.0, "compared", cancel)
    if mean and rows:
        rows.append(mean_row(rows))
    if reference.image.GetDimension() == 2:
        rows = [_as_areas(row) for row in rows]
    return rows


def _as_areas(row: dict) -> dict:
    """A row of a 2D comparison: volumes in mL become areas in mm² (1 mL of a 2D map is 1000 mm²)."""
    result = {}
    for column, value in row.items():
        if column in ("volume_prediction_ml", "volume_reference_ml", "volume_difference_ml") and value is not None:
            value = value * 1000.0
        result[_TO_2D.get(column, column)] = value
    return result


def label_agreement(predicted: np.ndarray, reference: np.ndarray, to_mm: np.ndarray, voxel_ml: float) -> dict:
    """Metrics of two boolean masks on one grid; ``to_mm`` maps array offsets to millimetres."""
    predicted_count, reference_count = int(predicted.sum()), int(reference.sum())
    volume_predicted, volume_reference = predicted_count * voxel_ml, reference_count * voxel_ml
    if predicted_count == 0 and reference_count == 0:
        return _empty_row(BOTH_EMPTY, 0.0, 0.0)
    if predicted_count == 0 or reference_count == 0:
        return _empty_row(PREDICTION_EMPTY if predicted_count == 0 else REFERENCE_EMPTY,
                          volume_predicted, volume_reference)
    overlap = int(np.logical_and(predicted, reference).sum())
    forward, backward = surface_distances(predicted, reference, to_mm)
    return {
        "status": OK,
        "dice": 2.0 * overlap / (predicted_count + reference_count),
        "jaccard": overlap / (predicted_count + reference_count - overlap),
        "hd95_mm": float(max(np.percentile(forward, 95), np.percentile(backward, 95))),
        "assd_mm": float(np.concatenate([forward, backward]).mean()),
        **_volume_fields(volume_predicted, volume_reference),
    }


def surface_distances(predicted: np.ndarray, reference: np.ndarray,
                      to_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction surface voxel to the reference surface, and back."""
    predicted_surface = _surface_points(predicted) @ to_mm.T
    reference_surface = _surface_points(reference) @ to_mm.T
    forward, _ = cKDTree(reference_surface).query(predicted_surface)
    backward, _ = cKDTree(predicted_surface).query(reference_surface)
    return np.asarray(forward, dtype=float), np.asarray(backward, dtype=float)


def mean_row(rows: list[dict]) -> dict:
    """Average of the label rows present in the reference (each metric over the rows that define it); labels absent
    from the reference are not counted as Dice 0."""
    counted = [row for row in rows if row["status"] not in (BOTH_EMPTY, REFERENCE_EMPTY, MEAN)]
    mean = {column: None for column in COLUMNS}
    mean.update({"label": "mean", "name": f"mean of {len(counted)} label{'' if len(counted) == 1 else 's'}",
                 "status": MEAN})
    for column in _MEAN_COLUMNS:
        defined = [row[column] for row in counted if row[column] is not None]
        mean[column] = float(np.mean(defined)) if defined else None
    return mean


def _surface_points(mask: np.ndarray) -> np.ndarray:
    surface = mask & ~ndimage.binary_erosion(mask, border_value=0)
    return np.argwhere(surface).astype(float)


def _empty_row(status: str, volume_predicted: float, volume_reference: float) -> dict:
    """Rows where a label is empty: Dice 1/0, distances 0 when both are empty, else undefined (None)."""
    both = status == BOTH_EMPTY
    return {
        "status": status,
        "dice": 1.0 if both else 0.0,
        "jaccard": 1.0 if both else 0.0,
        "hd95_mm": 0.0 if both else None,
        "assd_mm": 0.0 if both else None,
        **_volume_fields(volume_predicted, volume_reference),
    }


def _volume_fields(volume_predicted: float, volume_reference: float) -> dict:
    return {
        "volume_prediction_ml": volume_predicted,
        "volume_reference_ml": volume_reference,
        "volume_difference_ml": volume_predicted - volume_reference,
        "relative_volume_difference_pct": 100.0 * (volume_predicted - volume_reference) / volume_reference
        if volume_reference > 0 else None,
    }


def _on_reference_grid(image: sitk.Image, reference: sitk.Image, resample: bool) -> sitk.Image:
    """The prediction on the reference grid: unchanged, resampled (nearest neighbour), or an InputError."""
    problem = grid_difference(image, reference)
    if not problem:
        return image
    if not resample or image.GetDimension() != reference.GetDimension():
        hint = ("use --resample (resample=True) to resample the prediction onto the reference grid with "
                "nearest-neighbour interpolation") if image.GetDimension() == reference.GetDimension() else \
            "both must have the same dimension"
        raise InputError(f"prediction and reference are on different voxel grids ({problem}); {hint}")
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    return as_label_image(resampled, "resampled prediction")


def _present(array: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(array) if v > 0]


def _box(boxes: list, value: int) -> tuple[slice, ...] | None:
    return boxes[value - 1] if 0 < value <= len(boxes) else None


def _union_box(first: tuple[slice, ...] | None, second: tuple[slice, ...] | None,
               shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """Bounding box of both masks, one voxel larger on each side where the image allows."""
    boxes = [box for box in (first, second) if box is not None]
    if not boxes:
        return None
    return tuple(slice(max(min(box[axis].start for box in boxes) - 1, 0),
                       min(max(box[axis].stop for box in boxes) + 1, shape[axis])) for axis in range(len(shape)))
