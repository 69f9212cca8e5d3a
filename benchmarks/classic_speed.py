"""Speed of the classic methods against peers measured in the same run.

* snake: time per iteration (all ``step()`` calls to convergence, divided by the iterations) and per interactive
  ``step(5)`` (with the mask a GUI shows) on a 512x512 ultrasound image (HC18) and a 128^3 CT region, against
  scikit-image's morphological_geodesic_active_contour / morphological_chan_vese at equal iterations, both on the
  input grid and on our snake's working grid (the fair ratio: same voxels, same iterations), with Dice;
* competitive growing on 256x256x160 with 3 labels (goal < 3 s);
* connected-threshold growing with an explicit range versus a bare SimpleITK ConnectedThreshold (goal < 10 %).
Run: ``python benchmarks/classic_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import SimpleITK as sitk
from _common import best_time, require_shared_data

from SegToolkitLib.methods.classic import SnakeSession, competitive_growing, connected_threshold
from SegToolkitLib.methods.classic.region_growing import OPENING_MM, clean_grown_region

STEP = 5  # iterations per interactive step (the Slicer effect's default)


def dice(a, b) -> float:
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def skimage_snakes(image: sitk.Image, seed_point, iterations: int, reference: sitk.Image) -> tuple[float, ...]:
    """scikit-image MGAC and MCV on ``image``'s grid from a 2 mm ball at the seed: (s/iteration, Dice-ready mask)
    for both, the masks on ``reference``'s grid."""
    from skimage import segmentation

    array = sitk.GetArrayFromImage(image).astype(np.float32)
    centre = image.TransformPhysicalPointToContinuousIndex(seed_point)[::-1]
    grids = np.ogrid[tuple(slice(0, n) for n in array.shape)]
    spacing = np.array(image.GetSpacing())[::-1]
    init = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing)) <= 2.0 ** 2
    gimage = segmentation.inverse_gaussian_gradient(array)
    start = time.perf_counter()
    geodesic = segmentation.morphological_geodesic_active_contour(gimage, iterations, init, balloon=1)
    geodesic_time = (time.perf_counter() - start) / iterations
    start = time.perf_counter()
    chan_vese = segmentation.morphological_chan_vese(array, iterations, init)
    cv_time = (time.perf_counter() - start) / iterations

    def on_reference(mask: np.ndarray) -> np.ndarray:
        result = sitk.GetImageFromArray(mask.astype(np.uint8))
        result.CopyInformation(image)
        return sitk.GetArrayFromImage(sitk.Resample(result, reference, sitk.Transform(), sitk.sitkNearestNeighbor))

    return geodesic_time, on_reference(geodesic), cv_time, on_reference(chan_vese)


def snake_vs_skimage(name: str, image: sitk.Image, truth: np.ndarray, seed_index) -> None:
    seed = image.TransformIndexToPhysicalPoint([int(v) for v in seed_index])
    start = time.perf_counter()
    session = SnakeSession(image, [seed])
    setup = time.perf_counter() - start
    steps = []
    while not session.converged and session.iteration < 3000:
        start = time.perf_counter()
        mask = session.step(STEP)
        steps.append(time.perf_counter() - start)
    ours = sitk.GetArrayFromImage(mask) > 0
    per_iteration = sum(steps) / session.iteration
    working = session.image
    print(f"{name}: input grid {image.GetSize()}, our working grid {working.GetSize()} "
          f"(spacing {', '.join(f'{v:.2f}' for v in working.GetSpacing())} mm)", flush=True)
    print(f"  ours: {1000 * per_iteration:.2f} ms/iteration (all step() calls to convergence / iterations), "
          f"{session.iteration} iterations in {sum(steps):.2f} s (+ {setup:.2f} s set-up); interactive step({STEP}) "
          f"incl. mask: median {1000 * statistics.median(steps):.1f} ms, max {1000 * max(steps):.1f} ms; "
          f"Dice {dice(ours, truth):.3f}", flush=True)
    grids = [("the input grid", image)] + ([("our working grid", working)] if working is not image else [])
    for label, grid in grids:
        geodesic_time, geodesic, cv_time, chan_vese = skimage_snakes(grid, seed, session.iteration, image)
        print(f"  skimage on {label}, {session.iteration} iterations: MGAC {1000 * geodesic_time:.2f} ms/iteration "
              f"(ratio ours/skimage {per_iteration / geodesic_time:.3f}), Dice {dice(geodesic, truth):.3f}; "
              f"MCV {1000 * cv_time:.2f} ms/iteration (ratio {per_iteration / cv_time:.3f}), "
              f"Dice {dice(chan_vese, truth):.3f}", flush=True)


PARTS = ("snake", "competitive", "connected")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure (default all)")
    parts = parser.parse_args().parts
    print(f"load average at the start: {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)", flush=True)
    if "snake" in parts:
        snakes()
    big_image = two_organ_volume()
    if "competitive" in parts:
        competitive(big_image)
    if "connected" in parts:
        connected_overhead(big_image)
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)


def snakes() -> None:
    data = require_shared_data()
    folder = data / "hc18_fetal_head_ultrasound"
    case = json.loads((folder / "dataset.json").read_text())["cases"][0]
    image = sitk.ReadImage(str(folder / case["image"]), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) > 0
    image, truth = image[:512, :512], truth[:512, :512]
    centre = np.argwhere(truth).mean(axis=0).round().astype(int)[::-1]
    snake_vs_skimage("2D ultrasound 512x512", image, truth, tuple(centre))

    yy, xx, zz = np.mgrid[:128, :128, :128]  # 128^3 CT-like region: an ellipsoidal organ in soft tissue
    organ = ((zz - 64) / 40.0) ** 2 + ((yy - 64) / 30.0) ** 2 + ((xx - 64) / 35.0) ** 2 <= 1
    ct = np.where(organ, 110.0, 40.0) + np.random.default_rng(0).normal(0, 15, organ.shape)
    volume = sitk.GetImageFromArray(ct.astype(np.float32))
    volume.SetSpacing((0.8, 0.8, 1.0))
    snake_vs_skimage("3D CT region 128^3", volume, organ, (64, 64, 64))


SHAPE = (160, 256, 256)


def two_organs() -> tuple[np.ndarray, np.ndarray]:
    """The true masks of two touching ellipsoidal organs in a 256x256x160 (z, y, x) volume."""
    zz, yy, xx = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    first = ((zz - 80) / 50.0) ** 2 + ((yy - 128) / 60.0) ** 2 + ((xx - 90) / 50.0) ** 2 <= 1
    second = (((zz - 80) / 40.0) ** 2 + ((yy - 128) / 45.0) ** 2 + ((xx - 175) / 40.0) ** 2 <= 1) & ~first
    return first, second


def two_organ_volume() -> sitk.Image:
    """The two organs at 100 and 160 in tissue at 20, with noise (SD 10), as float32."""
    first, second = two_organs()
    big = (np.where(first, 100.0, np.where(second, 160.0, 20.0)) +
           np.random.default_rng(1).normal(0, 10, SHAPE)).astype(np.float32)
    return sitk.GetImageFromArray(big)


def competitive(big_image: sitk.Image) -> None:
    first, second = two_organs()
    seeds = {1: [(90, 128, 80)], 2: [(175, 128, 80)], 0: [(5, 5, 5), (250, 250, 155)]}
    seconds, labels = best_time(lambda: competitive_growing(big_image, seeds, ijk=True), repeats=3)
    labels = sitk.GetArrayFromImage(labels)
    print(f"competitive growing 256x256x160, 3 labels (coarse to fine, the default at this size): {seconds:.2f} s "
          f"(goal < 3 s); Dice {dice(labels == 1, first):.3f} / {dice(labels == 2, second):.3f}", flush=True)
    full_seconds, full = best_time(lambda: competitive_growing(big_image, seeds, ijk=True, multiresolution=False),
                                   repeats=1)
    full = sitk.GetArrayFromImage(full)
    print(f"  same at full resolution only: {full_seconds:.2f} s; Dice {dice(full == 1, first):.3f} / "
          f"{dice(full == 2, second):.3f}; voxels labelled alike by both: {100 * np.mean(full == labels):.3f} %",
          flush=True)


def connected_overhead(big_image: sitk.Image) -> None:
    seed = [(90, 128, 80)]
    bare_times, our_times = [], []
    for _ in range(15):  # interleaved, fastest of each: the least disturbed by other load on the machine
        bare_times.append(best_time(lambda: sitk.ConnectedThreshold(big_image, seed, 60.0, 130.0, 1), repeats=1)[0])
        our_times.append(best_time(lambda: connected_threshold(big_image, seed, 60.0, 130.0, ijk=True,
                                                               cleanup=False), repeats=1)[0])
    bare, ours = min(bare_times), min(our_times)
    print(f"connected threshold, explicit range [60, 130], 1 seed, float32 256x256x160 (both: flood fill of the raw "
          f"intensities; ours adds the input checks, seed mapping and the empty/flooded check), fastest of 15 "
          f"interleaved runs: bare SimpleITK {bare:.3f} s, ours {ours:.3f} s, overhead {100 * (ours / bare - 1):.0f} % "
          f"(goal < 10 %); medians {statistics.median(bare_times):.3f} s / {statistics.median(our_times):.3f} s",
          flush=True)

    def bare_with_cleanup():
        grown = sitk.ConnectedThreshold(big_image, seed, 60.0, 130.0, 1)
        return clean_grown_region(grown, seed, crop=False)

    whole, _ = best_time(bare_with_cleanup, repeats=3)
    cropped, _ = best_time(lambda: connected_threshold(big_image, seed, 60.0, 130.0, ijk=True), repeats=3)
    print(f"  with the default clean-up (opening {OPENING_MM} mm, component at the seed, hole filling): ours "
          f"(clean-up on the region's bounding box) {cropped:.3f} s, bare ConnectedThreshold + the same clean-up on "
          f"the whole image {whole:.3f} s (ratio {cropped / whole:.2f})", flush=True)


if __name__ == "__main__":
    main()
