"""Benchmark: ``segtoolkit measure`` (the Python API) against SimpleITK's LabelShapeStatisticsImageFilter.

A 512 x 512 x 300 label map (0.8 x 0.8 x 1.5 mm) holds 20 ellipsoids of 8-35 mm semi-axes in random
orientations. Both tools run in this process on the same image; the script prints their times, the ratio,
and how far our volumes and Feret diameters are from SimpleITK's. Run by hand:

    python benchmarks/measure_bench.py [--size 512 512 300] [--repeats 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_time  # noqa: E402

from SegToolkitLib.io import LabelMap, LabelTable  # noqa: E402
from SegToolkitLib.measurement.shape import measure  # noqa: E402

SPACING = (0.8, 0.8, 1.5)


def make_label_map(size: tuple[int, int, int], count: int, seed: int = 0) -> sitk.Image:
    """``count`` randomly placed and rotated ellipsoids (later labels overwrite earlier ones where they meet)."""
    rng = np.random.default_rng(seed)
    array = np.zeros(size[::-1], np.uint8)
    spacing = np.array(SPACING[::-1])
    for value in range(1, count + 1):
        radii = rng.uniform(8.0, 35.0, 3)
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        reach = np.ceil(radii.max() / spacing).astype(int) + 1
        centre = np.array([rng.integers(r, n - r) for r, n in zip(reach, array.shape)])
        box = tuple(slice(c - r, c + r + 1) for c, r in zip(centre, reach))
        grids = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * sp for s, c, sp in zip(box, centre, spacing)],
                            indexing="ij")
        local = np.stack(grids, axis=-1) @ rotation
        inside = np.sum((local / radii) ** 2, axis=-1) <= 1.0
        array[box][inside] = value
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    return image


def simpleitk_shape(image: sitk.Image, feret: bool) -> sitk.LabelShapeStatisticsImageFilter:
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.SetComputeFeretDiameter(feret)
    shape.Execute(image)
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--labels", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    image = make_label_map(tuple(args.size), args.labels)
    label_map = LabelMap(image, LabelTable().covering(range(1, args.labels + 1)))
    print(f"label map {args.size} voxels, spacing {SPACING} mm, {len(label_map.present_values())} labels")

    ours_s, report = best_time(lambda: measure(label_map), args.repeats)
    plain_s, _ = best_time(lambda: simpleitk_shape(image, feret=False), args.repeats)
    feret_s, shape = best_time(lambda: simpleitk_shape(image, feret=True), args.repeats)

    print(f"segtoolkit measure (volume, surface, Feret, RECIST, ellipsoid, centroid): {ours_s:8.2f} s")
    print(f"SimpleITK LabelShapeStatistics without Feret diameter:                   {plain_s:8.2f} s")
    print(f"SimpleITK LabelShapeStatistics with Feret diameter:                      {feret_s:8.2f} s")
    print(f"ratio segtoolkit / SimpleITK (with Feret):    {ours_s / feret_s:6.2f}")
    print(f"ratio segtoolkit / SimpleITK (without Feret): {ours_s / plain_s:6.2f}")

    volume_error, feret_error = [], []
    for row in report.rows():
        value = row["label"]
        volume_error.append(abs(row["volume_ml"] * 1000.0 - shape.GetPhysicalSize(value)))
        feret_error.append(row["feret_diameter_mm"] - shape.GetFeretDiameter(value))
    print(f"volume: largest |ours - SimpleITK| = {max(volume_error):.3g} mm^3 (same voxel count x voxel volume)")
    print(f"Feret diameter: ours - SimpleITK = {np.mean(feret_error):+.2f} mm on average "
          f"(range {min(feret_error):+.2f} .. {max(feret_error):+.2f}); SimpleITK measures between boundary "
          "voxel centres, we between surface points half a voxel further out")


if __name__ == "__main__":
    main()
