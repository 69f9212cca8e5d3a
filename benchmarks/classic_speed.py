"""Speed of the classic methods against peers measured in the same run.

* snake per iteration and to convergence on a 512x512 ultrasound image (HC18) and a 128^3 CT region, against
  scikit-image's morphological_geodesic_active_contour / morphological_chan_vese at equal iterations (with Dice);
* competitive growing on 256x256x160 with 3 labels (goal < 3 s);
* connected-threshold growing with an explicit range versus a bare SimpleITK ConnectedThreshold (goal < 10 %).
Run: ``python benchmarks/classic_speed.py``.
"""

from __future__ import annotations

import json
import time

import numpy as np
import SimpleITK as sitk
from _common import best_time, require_shared_data

from SegToolkitLib.methods.classic import SnakeSession, competitive_growing, connected_threshold


def dice(a, b) -> float:
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def snake_vs_skimage(name: str, image: sitk.Image, truth: np.ndarray, seed_index, iterations: int) -> None:
    from skimage import segmentation

    seed = image.TransformIndexToPhysicalPoint([int(v) for v in seed_index])
    session = SnakeSession(image, [seed])
    session.step(2)
    start = time.perf_counter()
    session.step(iterations)
    ours_per_iteration = (time.perf_counter() - start) / iterations
    start = time.perf_counter()
    ours = sitk.GetArrayFromImage(session.run(3000)) > 0
    ours_total = time.perf_counter() - start
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    grids = np.ogrid[tuple(slice(0, n) for n in array.shape)]
    spacing = np.array(image.GetSpacing())[::-1]
    init = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, seed_index[::-1], spacing)) <= 2.0 ** 2
    gimage = segmentation.inverse_gaussian_gradient(array)
    start = time.perf_counter()
    geodesic = segmentation.morphological_geodesic_active_contour(gimage, session.iteration, init, balloon=1)
    geodesic_per_iteration = (time.perf_counter() - start) / session.iteration
    start = time.perf_counter()
    chan_vese = segmentation.morphological_chan_vese(array, session.iteration, init)
    cv_per_iteration = (time.perf_counter() - start) / session.iteration
    print(f"{name}: ours {1000 * ours_per_iteration:.2f} ms/iteration, converged after {session.iteration} "
          f"iterations in {ours_total:.2f} s, Dice {dice(ours, truth):.3f}", flush=True)
    print(f"  skimage MGAC {1000 * geodesic_per_iteration:.2f} ms/iteration (ratio ours/skimage "
          f"{ours_per_iteration / geodesic_per_iteration:.2f}), Dice {dice(geodesic, truth):.3f}; "
          f"MCV {1000 * cv_per_iteration:.2f} ms/iteration (ratio {ours_per_iteration / cv_per_iteration:.2f}), "
          f"Dice {dice(chan_vese, truth):.3f}", flush=True)


def main() -> None:
    data = require_shared_data()
    folder = data / "hc18_fetal_head_ultrasound"
    case = json.loads((folder / "dataset.json").read_text())["cases"][0]
    image = sitk.ReadImage(str(folder / case["image"]), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case["label"]))) > 0
    image, truth = image[:512, :512], truth[:512, :512]
    centre = np.argwhere(truth).mean(axis=0).round().astype(int)[::-1]
    snake_vs_skimage("2D ultrasound 512x512", image, truth, tuple(centre), 20)

    yy, xx, zz = np.mgrid[:128, :128, :128]  # 128^3 CT-like region: an ellipsoidal organ in soft tissue
    organ = ((zz - 64) / 40.0) ** 2 + ((yy - 64) / 30.0) ** 2 + ((xx - 64) / 35.0) ** 2 <= 1
    ct = np.where(organ, 110.0, 40.0) + np.random.default_rng(0).normal(0, 15, organ.shape)
    volume = sitk.GetImageFromArray(ct.astype(np.float32))
    volume.SetSpacing((0.8, 0.8, 1.0))
    snake_vs_skimage("3D CT region 128^3", volume, organ, (64, 64, 64), 5)

    shape = (160, 256, 256)
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    first = ((zz - 80) / 50.0) ** 2 + ((yy - 128) / 60.0) ** 2 + ((xx - 90) / 50.0) ** 2 <= 1
    second = (((zz - 80) / 40.0) ** 2 + ((yy - 128) / 45.0) ** 2 + ((xx - 175) / 40.0) ** 2 <= 1) & ~first
    big = (np.where(first, 100.0, np.where(second, 160.0, 20.0)) +
           np.random.default_rng(1).normal(0, 10, shape)).astype(np.float32)
    big_image = sitk.GetImageFromArray(big)
    seeds = {1: [(90, 128, 80)], 2: [(175, 128, 80)], 0: [(5, 5, 5), (250, 250, 155)]}
    seconds, labels = best_time(lambda: competitive_growing(big_image, seeds, ijk=True), repeats=2)
    labels = sitk.GetArrayFromImage(labels)
    print(f"competitive growing 256x256x160, 3 labels: {seconds:.2f} s (goal < 3 s); Dice "
          f"{dice(labels == 1, first):.3f} / {dice(labels == 2, second):.3f}", flush=True)

    seed = [(90, 128, 80)]
    bare, _ = best_time(lambda: sitk.ConnectedThreshold(big_image, seed, 60.0, 130.0, 1), repeats=5)
    ours, _ = best_time(lambda: connected_threshold(big_image, seed, 60.0, 130.0, ijk=True, denoised=False,
                                                    cleanup=False), repeats=5)
    print(f"connected threshold: bare SimpleITK {bare:.3f} s, ours {ours:.3f} s, overhead "
          f"{100 * (ours / bare - 1):.0f} % (goal < 10 %)", flush=True)


if __name__ == "__main__":
    main()
