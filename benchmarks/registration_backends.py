"""SimpleITK vs itk-elastix on the same registrations (run by hand: ``python benchmarks/registration_backends.py``).

Sunnybrook ED -> ES per patient: affine + B-spline with each backend (elastix: its default affine and bspline
parameter maps; SimpleITK: SegToolkit's ``deformable`` and ``diffeomorphic`` stages), blood pool Dice on the
annotated ES slices and wall time. itk-elastix is optional (about 1.6 GB); this script skips it when absent.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import require_shared_data
from atlas_accuracy import blood_pool_dice, sunnybrook_cases

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    args = parser.parse_args()
    cases = sunnybrook_cases(require_shared_data())
    start = time.perf_counter()
    try:
        import itk  # noqa: F401  (imports take about 10 s)

        have_elastix = True
    except ImportError:
        have_elastix = False
    print(f"itk-elastix {'imported in %.1f s' % (time.perf_counter() - start) if have_elastix else 'not installed'}")
    patients = sorted({name.rsplit("_", 1)[0] for name in cases})
    methods = ["sitk affine", "sitk deformable", "sitk diffeomorphic"] + (["elastix affine+bspline"] if have_elastix
                                                                           else [])
    totals: dict[str, list[tuple[float, float]]] = {method: [] for method in methods}
    for patient in patients:
        ed, es = cases[f"{patient}_ED"], cases[f"{patient}_ES"]
        cells = []
        for method in methods:
            start = time.perf_counter()
            if method.startswith("sitk"):
                result = register(es["image"], ed["image"], method.split()[1], args.preset, init="none")
                warped = warp_labels(ed["labels"], es["image"], result.transform)
            else:
                with tempfile.TemporaryDirectory() as folder:
                    warped = elastix_propagate(es["image"], ed["image"], ed["labels"], Path(folder))
            seconds = time.perf_counter() - start
            totals[method].append((blood_pool_dice(warped, es), seconds))
            cells.append(f"{method} {totals[method][-1][0]:.3f} ({seconds:.1f} s)")
        print(f"{patient}: " + ", ".join(cells), flush=True)
    for method, values in totals.items():
        print(f"mean {method}: Dice {np.mean([v[0] for v in values]):.3f}, {np.mean([v[1] for v in values]):.1f} s")


if __name__ == "__main__":
    main()
