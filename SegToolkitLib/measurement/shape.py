"""Per-label shape, size and intensity measurements of a label map (see ``docs/measurements.md``).

Everything is computed in physical millimetres through the image's full geometry (spacing, origin and
direction), so anisotropic voxels and oblique orientations give the same numbers as an axis-aligned isotropic
grid would. Each label is cropped to its bounding box (``scipy.ndimage.find_objects``) before any work.

Conventions (3D):

* volume = voxel count x voxel volume (the mask's true volume, also at the image border);
* surface area = area of a marching-cubes mesh of the mask, padded so that it is closed at the image border;
  the voxel lattice values are smoothed without changing which side of the surface a voxel centre lies on
  (see :func:`surface_mesh`), which removes most of the staircase over-estimate of a binary mesh;
* the maximum 3D (Feret) diameter is the largest distance between two vertices of that mesh (found on their
  convex hull), the pyradiomics convention;
* RECIST is measured on the index plane closest to the patient's axial plane (the index axis whose direction
  is closest to LPS z is the slice axis), between the in-plane outline points midway between an inside and an
  outside pixel centre (the marching-squares outline of the slice);
* the ellipsoid estimate uses the extents of the label along its three principal axes.

2D label maps have their own columns (:data:`COLUMNS_2D`): area (mm² and cm²), perimeter, the in-plane Feret
diameter, the RECIST pair of the image plane and the fitted ellipse (the ellipse with the region's area centroid and
second moments, as scikit-image's ``regionprops``: centre, semi-axes, orientation and its circumference by
Ramanujan's second approximation: the head circumference of obstetric ultrasound); nothing 3D (volume, surface,
ellipsoid, slice) is reported for them.

Every label that touches the image's outer faces (see :mod:`.boundary`) gets ``touches_edge: true`` and the
``warning`` :data:`~.boundary.CUT_OFF_WARNING`: its volume (area) and diameters are lower bounds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist
from skimage.measure import find_contours, marching_cubes, mesh_surface_area

from ..errors import InputError
from ..geometry import direction_matrix, index_to_physical_matrix
from ..io import LabelMap, check_same_grid, check_scalar
from ..progress import CancelToken, ProgressCallback, report
from .boundary import CUT_OFF_WARNING, labels_touching_edge

SCHEMA = "segtoolkit.measurements"
SCHEMA_VERSION = 1

COLUMNS_3D = (
    "label", "name", "present", "voxel_count", "volume_ml", "surface_area_mm2", "feret_diameter_mm",
    "recist_long_mm", "recist_short_mm", "recist_slice", "ellipsoid_volume_ml", "ellipsoid_length_mm",
    "ellipsoid_width_mm", "ellipsoid_height_mm", "centroid_lps_x_mm", "centroid_lps_y_mm", "centroid_lps_z_mm",
    "centroid_ras_x_mm", "centroid_ras_y_mm", "centroid_ras_z_mm", "touches_edge", "warning",
)
COLUMNS_2D = (
    "label", "name", "present", "voxel_count", "area_mm2", "area_cm2", "perimeter_mm", "feret_diameter_mm",
    "recist_long_mm", "recist_short_mm", "ellipse_centre_lps_x_mm", "ellipse_centre_lps_y_mm",
    "ellipse_semi_major_mm", "ellipse_semi_minor_mm", "ellipse_angle_deg", "ellipse_circumference_mm",
    "centroid_lps_x_mm", "centroid_lps_y_mm", "centroid_ras_x_mm", "centroid_ras_y_mm", "touches_edge", "warning",
)
INTENSITY_COLUMNS = (
    "intensity_mean", "intensity_sd", "intensity_min", "intensity_max", "intensity_median", "intensity_p5",
    "intensity_p95",
)
# Lattice values after smoothing are clamped to keep each voxel centre on its side of the 0.5 iso-surface.
_SMOOTHING_SIGMA_VOXELS = 1.0
_SIDE_MARGIN = 0.1
_PAD = 2
_BRUTE_FORCE_POINTS = 800


@dataclass
class MeasurementReport:
    """Measurements of every requested label of one label map, plus the grid they were taken on."""

    dimension: int
    geometry: dict
    slice_axis: int | None
    has_intensity: bool
    entries: list[dict] = field(default_factory=list)
    sources: dict = field(default_factory=dict)

    def columns(self) -> list[str]:
        """Stable column names (units in the name) in output order."""
        base = COLUMNS_3D if self.dimension == 3 else COLUMNS_2D
        return list(base) + (list(INTENSITY_COLUMNS) if self.has_intensity else [])

    def rows(self) -> list[dict]:
        """One flat dict per label with every column (``None`` where a value does not apply or is absent)."""
        columns = self.columns()
        return [{column: entry.get(column) for column in columns} for entry in self.entries]

    def to_dict(self) -> dict:
        """The JSON document (schema in ``docs/measurements.md``)."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "coordinate_system": "LPS",
            "sources": dict(self.sources),
            "geometry": dict(self.geometry, dimension=self.dimension, slice_axis=self.slice_axis),
            "intensity_statistics": self.has_intensity,
            "columns": self.columns(),
            "labels": self.rows(),
        }

    def to_json(self) -> str:
        """The document as JSON text (NaN never occurs; missing values are ``null``)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def measure(label_map: LabelMap, image: sitk.Image | None = None, labels: Iterable[int] | None = None,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> MeasurementReport:
    """Measure each label of ``label_map`` (optionally intensity statistics of ``image`` inside it).

    ``labels`` selects label values; by default every value present in the image or named in its label
    table. A requested label without voxels is reported with ``present: False`` and no numbers.
    Raises :class:`InputError` when ``image`` is not on the label map's grid.
    """
    label_image = label_map.image
    dimension = label_image.GetDimension()
    if dimension not in (2, 3):
        raise InputError(f"label map is {dimension}D; measurements need a 2D or 3D label map")
    if image is not None:
        check_scalar(image, "intensity image")
        check_same_grid(image, label_image, "intensity image", "label map")
    array = sitk.GetArrayViewFromImage(label_image)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError("label map has a non-integer pixel type; read it with read_label_map to check and convert it")
    intensities = sitk.GetArrayViewFromImage(image) if image is not None else None
    boxes = ndimage.find_objects(np.asarray(array)) if array.size else []
    present = {number + 1 for number, box in enumerate(boxes) if box is not None}
    values = sorted({int(v) for v in labels if int(v) > 0} if labels is not None else
                    present | set(label_map.labels.values()))
    frame = _Frame(label_image)
    cut_off = labels_touching_edge(label_image)
    entries = []
    for number, value in enumerate(values):
        report(progress, number / max(len(values), 1), f"label {value}", cancel)
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        entry = {"label": value, "name": label_map.labels.name(value), "present": box is not None}
        if box is not None:
            mask = array[box] == value
            entry.update(frame.measure(mask, box))
            entry["touches_edge"] = value in cut_off
            entry["warning"] = CUT_OFF_WARNING if value in cut_off else None
            if intensities is not None:
                entry.update(intensity_statistics(np.asarray(intensities[box])[mask]))
        entries.append(entry)
    report(progress, 1.0, "measured", cancel)
    return MeasurementReport(dimension, _geometry(label_image), frame.slice_axis if dimension == 3 else None,
                             image is not None, entries)


def intensity_statistics(values: np.ndarray) -> dict:
    """Mean, sample SD, min, max, median and 5th/95th percentiles (linear interpolation) of the finite
    ``values`` (NaN and infinite voxels are left out; all ``None`` when none is finite)."""
    values = values.astype(np.float64, copy=False)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return dict.fromkeys(INTENSITY_COLUMNS)
    p5, median, p95 = np.percentile(values, [5, 50, 95])
    return {
        "intensity_mean": float(values.mean()),
        "intensity_sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "intensity_min": float(values.min()),
        "intensity_max": float(values.max()),
        "intensity_median": float(median),
        "intensity_p5": float(p5),
        "intensity_p95": float(p95),
    }


class _Frame:
    """The label map's geometry in array (z, y, x) order, and the per-label measurements on a crop."""

    def __init__(self, image: sitk.Image) -> None:
        self.dimension = image.GetDimension()
        matrix = index_to_physical_matrix(image)
        # Columns reordered so that an array coordinate (z, y, x) maps to LPS mm directly.
        self.linear = matrix[:self.dimension, :self.dimension][:, ::-1]
        self.origin = matrix[:self.dimension, self.dimension]
        self.spacing = np.array(image.GetSpacing())[::-1]
        self.voxel_mm3 = float(np.prod(self.spacing))
        # Slice axis: the index axis whose direction is closest to LPS z (largest |z| in the direction matrix).
        self.slice_axis = int(np.argmax(np.abs(direction_matrix(image)[2]))) if self.dimension == 3 else None
        self.slice_array_axis = self.dimension - 1 - self.slice_axis if self.dimension == 3 else None

    def to_physical(self, array_points: np.ndarray) -> np.ndarray:
        return array_points @ self.linear.T + self.origin

    def measure(self, mask: np.ndarray, box: tuple[slice, ...]) -> dict:
        start = np.array([s.start for s in box], dtype=float)
        coordinates = np.nonzero(mask)
        count = len(coordinates[0])
        voxel_points = self.to_physical(np.stack(coordinates, axis=1) + start)
        centroid = voxel_points.mean(axis=0)
        boundary, axes_of = boundary_points(mask)
        long_mm, short_mm, slice_index = self.recist(mask, boundary, axes_of, start)
        entry: dict = {"voxel_count": count, "recist_long_mm": long_mm, "recist_short_mm": short_mm}
        entry.update(_centroid_fields(centroid))
        if self.dimension == 2:
            entry["area_mm2"] = count * self.voxel_mm3
            entry["area_cm2"] = count * self.voxel_mm3 / 100.0
            entry["perimeter_mm"] = perimeter_mm(mask, self.spacing)
            entry.update(self.fitted_ellipse(voxel_points))
            entry["feret_diameter_mm"] = max_pairwise_distance(self.to_physical(np.concatenate(outline(mask))))
            return entry
        vertices, faces = surface_mesh(mask)
        vertices_mm = self.to_physical(vertices + start)
        length, width, height = principal_extents(voxel_points, vertices_mm)
        entry.update({
            "volume_ml": count * self.voxel_mm3 / 1000.0,
            "surface_area_mm2": float(mesh_surface_area(vertices_mm, faces)),
            "feret_diameter_mm": max_pairwise_distance(vertices_mm),
            "recist_slice": slice_index,
            "ellipsoid_volume_ml": math.pi / 6.0 * length * width * height / 1000.0,
            "ellipsoid_length_mm": length, "ellipsoid_width_mm": width, "ellipsoid_height_mm": height,
        })
        return entry

    def fitted_ellipse(self, pixel_points: np.ndarray) -> dict:
        """The ellipse with the area, centroid and second moments of a 2D region (pixel centres in LPS mm); each
        pixel adds the second moment of a uniform square (spacing²/12), so a filled ellipse gives its own axes."""
        centre = pixel_points.mean(axis=0)
        pixel_moment = self.linear @ np.diag(np.ones(2) / 12.0) @ self.linear.T
        covariance = (np.cov(pixel_points, rowvar=False, bias=True) if len(pixel_points) > 1 else np.zeros((2, 2)))
        eigenvalues, eigenvectors = np.linalg.eigh(covariance + pixel_moment)
        minor, major = 2.0 * np.sqrt(np.maximum(eigenvalues, 0.0))
        direction = eigenvectors[:, 1]
        angle = math.degrees(math.atan2(direction[1], direction[0])) % 180.0
        return {"ellipse_centre_lps_x_mm": float(centre[0]), "ellipse_centre_lps_y_mm": float(centre[1]),
                "ellipse_semi_major_mm": float(major), "ellipse_semi_minor_mm": float(minor),
                "ellipse_angle_deg": float(angle), "ellipse_circumference_mm": ellipse_circumference(major, minor)}

    def recist(self, mask: np.ndarray, boundary: np.ndarray, axes_of: np.ndarray,
               start: np.ndarray) -> tuple[float, float, int | None]:
        """Longest in-plane diameter over the axial slices, the longest chord perpendicular to it, the slice."""
        if self.dimension == 2:
            long_mm, ends = _diameter_with_ends(boundary @ self.linear.T)
            return long_mm, perpendicular_chord(mask, self.linear, ends), None
        axis = self.slice_array_axis
        in_plane = tuple(a for a in range(3) if a != axis)
        to_plane = self._in_plane_matrix(in_plane)
        points = boundary[axes_of != axis]
        slices = np.round(points[:, axis]).astype(int)
        best_long, best_ends, best_slice = -1.0, None, 0
        for slice_points, slice_id in _slices_by_upper_bound(points[:, in_plane] @ to_plane.T, slices):
            if _bbox_diagonal(slice_points) <= best_long:
                break
            long_mm, ends = _diameter_with_ends(slice_points)
            if long_mm > best_long:
                best_long, best_ends, best_slice = long_mm, ends, slice_id
        short_mm = perpendicular_chord(np.take(mask, best_slice, axis=axis), to_plane, best_ends)
        return best_long, short_mm, int(best_slice + start[axis])

    def _in_plane_matrix(self, in_plane: tuple[int, int]) -> np.ndarray:
        """2x2 matrix mapping in-plane array offsets to orthonormal in-plane millimetre coordinates."""
        _, upper = np.linalg.qr(self.linear[:, list(in_plane)])
        return upper


def boundary_points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points midway between each inside voxel centre and its outside face-neighbour (array coordinates).

    Returns the points and, for each, the array axis along which the crossing lies. The mask is padded so a
    label touching the crop or image border is closed there.
    """
    padded = np.pad(mask, 1)
    points, axes = [], []
    for axis in range(mask.ndim):
        lower = [slice(None)] * mask.ndim
        upper = [slice(None)] * mask.ndim
        lower[axis], upper[axis] = slice(0, -1), slice(1, None)
        crossing = np.stack(np.nonzero(padded[tuple(lower)] != padded[tuple(upper)]), axis=1).astype(float) - 1.0
        crossing[:, axis] += 0.5
        points.append(crossing)
        axes.append(np.full(len(crossing), axis))
    return np.concatenate(points), np.concatenate(axes)


def max_pairwise_distance(points: np.ndarray) -> float:
    """The largest distance between any two points (via their convex hull; flat and tiny sets handled)."""
    distance, _ = _diameter_with_ends(points)
    return distance


def _diameter_with_ends(points: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """Largest distance between two points and the two points, exactly."""
    if len(points) < 2:
        return 0.0, None
    candidates = _hull_vertices(points)
    if len(candidates) <= _BRUTE_FORCE_POINTS:
        squared, first, second = _farthest_pair(candidates, candidates)
    else:
        squared, first, second = _pruned_farthest_pair(candidates)
    return math.sqrt(max(squared, 0.0)), (first, second)


def _farthest_pair(first: np.ndarray, second: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Squared largest distance between a point of ``first`` and one of ``second`` (blocked brute force)."""
    best, ends = -1.0, (first[0], second[0])
    second_squared = np.einsum("ij,ij->i", second, second)
    for begin in range(0, len(first), 512):  # blocks keep the distance matrix small
        block = first[begin:begin + 512]
        distances = np.einsum("ij,ij->i", block, block)[:, None] + second_squared[None, :] - 2.0 * block @ second.T
        row, column = np.unravel_index(int(np.argmax(distances)), distances.shape)
        if distances[row, column] > best:
            best, ends = float(distances[row, column]), (block[row], second[column])
    best = float(np.sum((ends[0] - ends[1]) ** 2))  # exact value for the chosen pair
    return best, ends[0], ends[1]


def _pruned_farthest_pair(points: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact farthest pair of many points: a lower bound from extreme points along many directions, then
    brute force only between grid cells whose bounding spheres can still be farther apart than that bound."""
    centred = points - points.mean(axis=0)
    directions = _directions(points.shape[1])
    projections = centred @ directions.T
    extremes = np.unique(np.r_[np.argmin(projections, axis=0), np.argmax(projections, axis=0)])
    best, first, second = _farthest_pair(centred[extremes], centred[extremes])
    cell = math.sqrt(best) / 16.0
    keys = np.floor((centred - centred.min(axis=0)) / cell).astype(np.int64)
    _, cell_of = np.unique(keys, axis=0, return_inverse=True)
    order = np.argsort(cell_of.ravel(), kind="stable")
    cell_of, centred = cell_of.ravel()[order], centred[order]
    starts = np.flatnonzero(np.r_[True, cell_of[1:] != cell_of[:-1]])
    low = np.minimum.reduceat(centred, starts, axis=0)
    high = np.maximum.reduceat(centred, starts, axis=0)
    centres, radii = (low + high) / 2.0, np.linalg.norm(high - low, axis=1) / 2.0
    reach = cdist(centres, centres) + radii[:, None] + radii[None, :]
    stops = np.r_[starts[1:], len(centred)]
    for cell_index in range(len(starts)):
        partners = reach[cell_index] ** 2 > best
        partners[:cell_index] = False  # each pair of cells once
        if not partners.any():
            continue
        squared, a, b = _farthest_pair(centred[starts[cell_index]:stops[cell_index]], centred[partners[cell_of]])
        if squared > best:
            best, first, second = squared, a, b
    shift = points.mean(axis=0)
    return best, first + shift, second + shift


def _directions(dimension: int, count: int = 64) -> np.ndarray:
    """Unit vectors spread over a half circle (2D) or a hemisphere (3D, Fibonacci lattice)."""
    if dimension == 2:
        angles = np.linspace(0.0, np.pi, count, endpoint=False)
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    heights = (np.arange(count) + 0.5) / count
    angles = np.arange(count) * math.pi * (3.0 - math.sqrt(5.0))
    ring = np.sqrt(1.0 - heights ** 2)
    return np.stack([ring * np.cos(angles), ring * np.sin(angles), heights], axis=1)


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """The convex hull's vertices; for sets spanning fewer dimensions, the hull in their own subspace."""
    centred = points - points.mean(axis=0)
    variances, axes = np.linalg.eigh(centred.T @ centred)  # ascending; the small ones vanish for flat sets
    variances, axes = variances[::-1], axes[:, ::-1]
    rank = int(np.sum(variances > 1e-12 * max(float(variances[0]), 1e-300)))
    if rank == 0:
        return points[:1]
    projected = centred @ axes[:, :rank]
    if rank == 1:
        return points[[int(np.argmin(projected[:, 0])), int(np.argmax(projected[:, 0]))]]
    if len(points) <= rank + 1:
        return points
    try:
        return points[ConvexHull(projected).vertices]
    except QhullError:  # nearly degenerate sets: the brute force over all points is still exact
        return points


def _slices_by_upper_bound(points: np.ndarray, slices: np.ndarray):
    """Yield (in-plane points, slice id) per slice, the slices with the largest bounding box first."""
    order = np.argsort(slices, kind="stable")
    points, slices = points[order], slices[order]
    starts = np.flatnonzero(np.r_[True, slices[1:] != slices[:-1]])
    lows = np.minimum.reduceat(points, starts, axis=0)
    highs = np.maximum.reduceat(points, starts, axis=0)
    bounds = np.linalg.norm(highs - lows, axis=1)
    ends = np.r_[starts[1:], len(slices)]
    for group in np.argsort(-bounds, kind="stable"):
        yield points[starts[group]:ends[group]], int(slices[starts[group]])


def _bbox_diagonal(points: np.ndarray) -> float:
    return float(np.linalg.norm(points.max(axis=0) - points.min(axis=0)))


def perpendicular_chord(mask_2d: np.ndarray, to_plane: np.ndarray,
                        ends: tuple[np.ndarray, np.ndarray] | None) -> float:
    """Longest segment inside the 2D mask's outline perpendicular to the line through ``ends`` (mm).

    The outline is the marching-squares contour at 0.5 of the padded mask; the chord length along a line is
    piecewise linear between outline vertices, so testing the lines through every vertex finds the maximum.
    """
    if ends is None or np.allclose(ends[0], ends[1]):
        return 0.0
    along = (ends[1] - ends[0]) / np.linalg.norm(ends[1] - ends[0])
    across = np.array([-along[1], along[0]])
    starts, stops = [], []
    for contour in find_contours(np.pad(mask_2d, 1).astype(np.float32), 0.5):
        plane = (contour - 1.0) @ to_plane.T
        starts.append(plane[:-1])
        stops.append(plane[1:])
    first, second = np.concatenate(starts), np.concatenate(stops)
    t_first, t_second = first @ along, second @ along
    s_first, s_second = first @ across, second @ across
    best = 0.0
    positions = np.unique(t_first)
    for begin in range(0, len(positions), 256):
        t = positions[begin:begin + 256, None]
        # Half-open rule: an edge crosses line t when t lies in [min, max) of its ends (even-odd counting).
        crosses = (np.minimum(t_first, t_second) <= t) & (t < np.maximum(t_first, t_second))
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = (t - t_first) / (t_second - t_first)
        heights = np.where(crosses, s_first + fraction * (s_second - s_first), np.inf)
        heights.sort(axis=1)
        usable = heights.shape[1] - heights.shape[1] % 2
        with np.errstate(invalid="ignore"):  # inf - inf where a line crosses fewer edges
            pairs = heights[:, 1:usable:2] - heights[:, 0:usable:2]
        pairs = np.where(np.isfinite(pairs), pairs, 0.0)
        if pairs.size:
            best = max(best, float(pairs.max()))
    return best


def surface_mesh(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh (vertices in array coordinates, triangle faces) closing the boundary of a 3D mask."""
    vertices, faces, _, _ = marching_cubes(smoothed_lattice(mask), 0.5)
    return vertices.astype(np.float64) - _PAD, faces


def outline(mask: np.ndarray) -> list[np.ndarray]:
    """Closed marching-squares outlines (array coordinates) of every component and hole of a 2D mask."""
    return [contour - _PAD for contour in find_contours(smoothed_lattice(mask), 0.5)]


def smoothed_lattice(mask: np.ndarray) -> np.ndarray:
    """The padded mask smoothed for iso-surface extraction at 0.5 without changing its topology.

    Padding closes masks touching the image border. A Gaussian of one voxel is clamped so every inside voxel
    stays >= 0.6 and every outside voxel <= 0.4: the surface has exactly the binary mask's topology, but each
    vertex may slide along its voxel edge (between 1/6 and 5/6 of the way), which removes most of the staircase
    excess a binary mesh has on curved surfaces and across thick slices.
    """
    padded = np.pad(mask, _PAD)
    smooth = ndimage.gaussian_filter(padded.astype(np.float32), _SMOOTHING_SIGMA_VOXELS)
    return np.where(padded, np.clip(smooth, 0.5 + _SIDE_MARGIN, 1.0), np.clip(smooth, 0.0, 0.5 - _SIDE_MARGIN))


def ellipse_circumference(semi_major: float, semi_minor: float) -> float:
    """Circumference of an ellipse (Ramanujan's second approximation; exact for a circle, error < 1e-4 % at the
    eccentricities of a head)."""
    total = semi_major + semi_minor
    if total <= 0:
        return 0.0
    h = ((semi_major - semi_minor) / total) ** 2
    return float(math.pi * total * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h))))


def solidity(mask: np.ndarray) -> float:
    """Pixels of a 2D mask over the pixels whose centres lie in the convex hull of its pixel centres: 1 for a
    digitally convex region (a pixelated disc or ellipse of any size), lower for a bent, notched or merged one;
    0 for an empty mask."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    edge = np.argwhere(mask & ~ndimage.binary_erosion(mask)).astype(np.float64)
    try:
        hull = ConvexHull(edge)
    except QhullError:
        return 1.0  # the centres lie on a line: the hull holds no pixel outside the mask
    low, high = edge.min(axis=0).astype(int), edge.max(axis=0).astype(int)
    grid = np.stack(np.meshgrid(*(np.arange(a, b + 1) for a, b in zip(low, high)), indexing="ij"), -1).reshape(-1, 2)
    inside = np.all(grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
    return float(min(1.0, area / max(int(np.count_nonzero(inside)), 1)))


def perimeter_mm(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Length of the outline (all components and holes) of a 2D mask, in mm (``spacing`` in array order)."""
    return float(sum(np.linalg.norm(np.diff(contour, axis=0) * spacing, axis=1).sum() for contour in outline(mask)))


def principal_extents(voxel_points: np.ndarray, surface_mm: np.ndarray) -> tuple[float, float, float]:
    """Extents (mm, longest first) of the surface points along the three principal axes of the voxel cloud."""
    if len(voxel_points) > 1:
        _, axes = np.linalg.eigh(np.cov(voxel_points, rowvar=False))
    else:
        axes = np.eye(3)
    projected = surface_mm @ axes
    extents = sorted((projected.max(axis=0) - projected.min(axis=0)).tolist(), reverse=True)
    return float(extents[0]), float(extents[1]), float(extents[2])


def _centroid_fields(centroid: np.ndarray) -> dict:
    names = "xyz"[:len(centroid)]
    fields = {f"centroid_lps_{n}_mm": float(v) for n, v in zip(names, centroid)}
    ras = [-centroid[0], -centroid[1], *centroid[2:]]
    fields.update({f"centroid_ras_{n}_mm": float(v) for n, v in zip(names, ras)})
    return fields


def _geometry(image: sitk.Image) -> dict:
    return {
        "size": list(image.GetSize()),
        "spacing_mm": list(image.GetSpacing()),
        "origin_lps_mm": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }


def measure_layers(layers: list[LabelMap], image: sitk.Image | None = None) -> MeasurementReport:
    """Measure label maps that share a grid but may overlap (layers of a ``.seg.nrrd`` or DICOM SEG): each
    segment is measured on its own layer, so overlapping voxels count for every segment they belong to."""
    if len(layers) == 1:
        return measure(layers[0], image)
    reports = [measure(layer, image, labels=layer.present_values()) for layer in layers]
    merged = reports[0]
    for other in reports[1:]:
        merged.entries.extend(other.entries)
    return merged
