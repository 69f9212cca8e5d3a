"""Registration speed per stage (run by hand: ``python benchmarks/atlas_speed.py``).

``--memory``: peak memory of ``segtoolkit atlas`` with defaults on a 256 x 256 x 13 stack (target under 1 GB).

Targets (2 cores): affine + deformable on a 3 mm abdominal volume under 20 s; on a 1 mm brain MRI
(about 135 x 160 x 130: MS FLAIR onto the T1 template region) under 60 s. The shared data has no 122 x 101 x 112
3 mm volume, so the 3 mm cases are the TotalSegmentator MR example (117 x 91 x 20), the CT example resampled to
3 mm (167 x 167 x 13) and the phantom rendered at 122 x 101 x 112 (3 mm) onto another phantom subject.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
from _common import require_shared_data

from SegToolkitLib.methods.atlas import register
from SegToolkitLib.samples.phantom import make_phantom


def cases(data: Path) -> list[tuple[str, sitk.Image, sitk.Image, str]]:
    found = []
    phantom_shape, phantom_spacing = (122, 101, 112), (3.0, 3.0, 3.0)
    found.append(("phantom 122x101x112 @3 mm, subject 1 -> 0",
                  make_phantom(0, shape=phantom_shape, spacing=phantom_spacing).image,
                  make_phantom(1, shape=phantom_shape, spacing=phantom_spacing).image, "geometry"))
    mr = data / "totalsegmentator_mr_example"
    mr_case = json.loads((mr / "dataset.json").read_text())["cases"][0]
    mr_image = sitk.ReadImage(str(mr / mr_case["image"]), sitk.sitkFloat32)
    shift = sitk.Euler3DTransform((0, 0, 0), 0.03, -0.02, 0.05, (4.0, -3.0, 2.0))
    found.append(("TotalSegmentator MR 117x91x20 @3 mm vs rotated copy", mr_image,
                  sitk.Resample(mr_image, mr_image, shift, sitk.sitkLinear, 0.0), "none"))
    ms = data / "ms_lesions_ljubljana_mni"
    ms_cases = json.loads((ms / "dataset.json").read_text())["cases"]
    first = sitk.ReadImage(str(ms / ms_cases[0]["extra_images"]["T1"]), sitk.sitkFloat32)
    second = sitk.ReadImage(str(ms / ms_cases[1]["extra_images"]["T1"]), sitk.sitkFloat32)
    found.append((f"brain T1 {ms_cases[1]['case']} -> {ms_cases[0]['case']} {first.GetSize()} @1 mm", first, second,
                  "geometry"))
    return found


def peak_memory(data: Path) -> None:
    """Peak resident memory of ``segtoolkit atlas`` with defaults on a 256 x 256 x 13 Sunnybrook stack (one process
    per run, read from the kernel's child accounting): another patient as the atlas, and the same patient's ED
    phase onto its ES phase. Target: under 1 GB (it was 1.9-2.3 GB with the former B-spline defaults)."""
    folder = data / "sunnybrook_cardiac_lv"
    runs = (("between patients", "SCD0000201_ED", "SCD0000101_ED"), ("same patient ED -> ES", "SCD0000201_ES",
                                                                     "SCD0000201_ED"))
    with tempfile.TemporaryDirectory() as work:
        for name, target, atlas in runs:
            command = [sys.executable, "-c", "import sys; from SegToolkitLib.interfaces.cli import main; "
                       "sys.exit(main())", "atlas", str(folder / "images" / f"{target}.nii.gz"), "-o",
                       str(Path(work) / f"{name[:4]}.nii.gz"), "--atlas", str(folder / "images" / f"{atlas}.nii.gz"),
                       str(folder / "labels" / f"{atlas}.nii.gz")]
            start = time.perf_counter()
            process = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - start
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
            status = "ok" if process.returncode == 0 else f"failed: {process.stderr.strip()[-200:]}"
            print(f"{name} ({target} <- {atlas}): peak {peak / 1024:.0f} MB (largest child so far), {seconds:.0f} s, "
                  f"{status}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--memory", action="store_true", help="only the peak memory of `segtoolkit atlas`")
    args = parser.parse_args()
    data = require_shared_data()
    if args.memory:
        peak_memory(data)
        return
    print(f"SimpleITK {sitk.Version.VersionString()}, {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads, "
          f"preset {args.preset}")
    for name, fixed, moving, init in cases(data):
        for kind in ("deformable", "diffeomorphic"):
            start = time.perf_counter()
            result = register(fixed, moving, kind, args.preset, init=init)
            total = time.perf_counter() - start
            stages = ", ".join(f"{stage.name} {stage.seconds:.1f} s" for stage in result.stages)
            print(f"{name}: affine+{kind} {total:.1f} s ({stages}; load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
