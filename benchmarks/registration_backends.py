"""SimpleITK vs itk-elastix on the same registrations (run by hand: ``python benchmarks/registration_backends.py``).

Parts (``--part sunnybrook|ct``, default both): Sunnybrook ED -> ES per patient (blood pool Dice on the annotated
ES slices) and the CT known-truth case of ``atlas_accuracy.py`` (per-organ Dice). SimpleITK: SegToolkit's affine,
``deformable`` (B-spline) and ``diffeomorphic`` (demons) stages; elastix: its default affine + bspline parameter
maps, labels warped by transformix (nearest neighbour). itk-elastix is optional (about 1.6 GB); skipped when absent.

Measured (2 shared cores, load 4-7 printed per row; SimpleITK preset fast for Sunnybrook, default for CT):
* Sunnybrook ED -> ES mean Dice / seconds: SimpleITK affine 0.832 / 5, B-spline 0.863 / 30, diffeomorphic
  0.874 / 27; elastix affine+bspline 0.923 / 228 (105-374 s per case under load).
* CT known truth mean Dice / seconds: SimpleITK affine 0.899 / 27, B-spline 0.908 / 126, diffeomorphic 0.971 / 70;
  elastix 0.901 / 227.
Conclusion: neither backend wins on both cases. elastix's B-spline is clearly the more accurate on the cardiac
ED -> ES propagation (+0.05 Dice) but 6-10 times slower with its default maps and weaker than SimpleITK's
diffeomorphic demons on the CT known truth (0.90 vs 0.97); passing number_of_threads=2 crashed it (see
CPU_MEASUREMENTS.md), so it competes for every core.
SegToolkit therefore keeps SimpleITK (meets every accuracy and speed target, no 1.6 GB dependency); an elastix
B-spline option with tuned (fewer-iteration) parameter maps is the obvious next step for cardiac cine data.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import require_shared_data
from atlas_accuracy import CT_ORGANS, blood_pool_dice, ct_known_truth_case, organ_dice, sunnybrook_cases

from SegToolkitLib.methods.atlas import register, warp_labels


def elastix_propagate(fixed: sitk.Image, moving: sitk.Image, labels: sitk.Image, folder: Path) -> sitk.Image:
    """Affine + B-spline with elastix's default parameter maps, labels warped by transformix (nearest)."""
    import itk

    paths = {}
    for name, image in (("fixed", fixed), ("moving", moving), ("labels", sitk.Cast(labels, sitk.sitkFloat32))):
        paths[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    fixed_itk = itk.imread(str(paths["fixed"]), itk.F)
    moving_itk = itk.imread(str(paths["moving"]), itk.F)
    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("affine"))
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("bspline"))
    _, transform = itk.elastix_registration_method(fixed_itk, moving_itk, parameter_object=parameters,
                                                   log_to_console=False)
    for index in range(transform.GetNumberOfParameterMaps()):
        transform.SetParameter(index, "ResampleInterpolator", "FinalNearestNeighborInterpolator")
    warped = itk.transformix_filter(itk.imread(str(paths["labels"]), itk.F), transform)
    result = sitk.GetImageFromArray(np.rint(itk.GetArrayFromImage(warped)).astype(np.uint8))
    result.CopyInformation(fixed)
    return result


def import_elastix() -> bool:
    start = time.perf_counter()
    try:
        import itk  # noqa: F401  (imports take about 10 s)
    except ImportError:
        print("itk-elastix not installed: SimpleITK only")
        return False
    print(f"itk-elastix imported in {time.perf_counter() - start:.1f} s")
    return True


def propagate(method: str, fixed: sitk.Image, moving: sitk.Image, labels: sitk.Image, preset: str) -> sitk.Image:
    """``labels`` of ``moving`` on the ``fixed`` grid by one backend (images already in one physical space)."""
    if method.startswith("sitk"):
        result = register(fixed, moving, method.split()[1], preset, init="none")
        return warp_labels(labels, fixed, result.transform)
    with tempfile.TemporaryDirectory() as folder:
        return elastix_propagate(fixed, moving, labels, Path(folder))


def sunnybrook(data: Path, methods: list[str], preset: str) -> None:
    print(f"\n## Sunnybrook ED -> ES blood pool Dice (annotated slices) and seconds, SimpleITK preset {preset}")
    cases = sunnybrook_cases(data)
    patients = sorted({name.rsplit("_", 1)[0] for name in cases})
    totals: dict[str, list[tuple[float, float]]] = {method: [] for method in methods}
    for patient in patients:
        ed, es = cases[f"{patient}_ED"], cases[f"{patient}_ES"]
        cells = []
        for method in methods:
            start = time.perf_counter()
            warped = propagate(method, es["image"], ed["image"], ed["labels"], preset)
            seconds = time.perf_counter() - start
            totals[method].append((blood_pool_dice(warped, es), seconds))
            cells.append(f"{method} {totals[method][-1][0]:.3f} ({seconds:.1f} s)")
        print(f"{patient}: " + ", ".join(cells) + f" (load {os.getloadavg()[0]:.1f})", flush=True)
    for method, values in totals.items():
        print(f"mean {method}: Dice {np.mean([v[0] for v in values]):.3f}, {np.mean([v[1] for v in values]):.1f} s")


def ct(data: Path, methods: list[str], preset: str) -> None:
    image, labels, warped_image, truth, present = ct_known_truth_case(data)
    print(f"\n## CT known truth (TotalSegmentator example at 3 mm, random B-spline deformation): per-organ Dice, "
          f"SimpleITK preset {preset}")
    print("method                      seconds  " + "  ".join(f"{CT_ORGANS[v][:12]:>12}" for v in present) +
          "      mean")
    for method in methods:
        start = time.perf_counter()
        result = propagate(method, warped_image, image, labels, preset)
        seconds = time.perf_counter() - start
        dice = [organ_dice(result, truth, v) for v in present]
        print(f"{method:26} {seconds:8.1f}  " + "  ".join(f"{d:12.3f}" for d in dice) +
              f"  {np.mean(dice):8.3f}  load {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--part", action="append", choices=("sunnybrook", "ct"))
    args = parser.parse_args()
    data = require_shared_data()
    methods = ["sitk affine", "sitk deformable", "sitk diffeomorphic"]
    if import_elastix():
        methods.append("elastix affine+bspline")
    for part in args.part or ["sunnybrook", "ct"]:
        (sunnybrook if part == "sunnybrook" else ct)(data, methods, args.preset)


if __name__ == "__main__":
    main()
