"""Cohort throughput: ``segtoolkit cohort run --task predict`` against a shell loop of ``segtoolkit predict`` (one
process per case, the model loaded every time), same model, same cases, same machine, one run each.

1. Trains a small 3D model (two blob labels, a few seconds; its accuracy does not matter here) into WORK/model
   unless ``--model`` is given, and writes ``--cases`` (default 50) blob images of ``--shape`` voxels.
2. Times, in this order: the shell loop (``bash -c 'for f in ...; do segtoolkit predict ...; done'``), then
   ``cohort run --workers 1`` and ``cohort run --workers 2`` (each a fresh OUTDIR, the CLI in a new process: cluster
   start-up, QC, report and tables included).
3. Prints the time ratios (loop / cohort, 1 / 2 workers), the load average before and after each part (the cores
   may be shared with other work) and whether every cohort label map equals the loop's.

Goal: cohort >= 2x faster than the loop for a model whose loading is a fair share of a case.
Usage: python benchmarks/cohort_speed.py [--cases N] [--shape X Y Z] [--work DIR] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def train_model(work: Path) -> Path:
    """A small blob model (the test suite's synthetic data), trained for a few seconds."""
    sys.path.insert(0, str(ROOT / "Testing" / "Python"))
    from deep_synthetic import make_blob_dataset, small_plan

    from SegToolkitLib.methods.deep.dataset import load_dataset
    from SegToolkitLib.methods.deep.planning import plan_dataset
    from SegToolkitLib.methods.deep.training import TrainingOptions, train

    data = make_blob_dataset(work / "data", cases=4, size=(48, 48, 24), spacing=(1.0, 1.0, 2.0), labels=2)
    dataset = load_dataset(data)
    plan = small_plan(plan_dataset(dataset), filters=16, iterations=10)
    train(dataset, work / "model", plan, TrainingOptions(epochs=2, quantize=False))
    return work / "model"


def write_cases(folder: Path, count: int, shape: tuple[int, int, int]) -> list[Path]:
    sys.path.insert(0, str(ROOT / "Testing" / "Python"))
    from deep_synthetic import blob_case

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        image, _ = blob_case(rng, shape, (1.0, 1.0, 2.0), labels=2)
        path = folder / f"case{index:03d}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def timed(command: list[str], loads: dict, name: str) -> float:
    """Wall time of a command; the 1-minute load average before and after it goes into ``loads``."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    loads[name] = [round(before, 2), round(os.getloadavg()[0], 2)]
    return seconds


def same_labels(first: Path, second: Path, names: list[str]) -> bool:
    return all(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(first / name))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(second / name)))) for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 32))
    parser.add_argument("--work", type=Path, help="working folder (kept; reuses WORK/model)")
    parser.add_argument("--model", type=Path, help="a trained model folder instead of the small one")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="segtoolkit_cohort_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or work / "model"
    if not (model / "model.json").is_file():
        train_model(work)
    cases = write_cases(work / "cases", args.cases, tuple(args.shape))
    segtoolkit = str(Path(sys.executable).with_name("segtoolkit"))
    loop_dir = work / "loop"
    loop_dir.mkdir(exist_ok=True)
    loop = (f'for f in "{work / "cases"}"/*.nii.gz; do "{segtoolkit}" predict -m "{model}" "$f" '
            f'-o "{loop_dir}/$(basename "$f")" || exit 1; done')
    loads: dict = {}
    loop_seconds = timed(["bash", "-c", loop], loads, "loop")
    results = {"cases": args.cases, "shape": list(args.shape), "cpu_count": os.cpu_count(), "model": str(model),
               "loop_seconds": round(loop_seconds, 1)}
    names = [path.name for path in cases]
    for workers in (1, 2):
        outdir = work / f"cohort_{workers}"
        seconds = timed([segtoolkit, "cohort", "run", str(work / "cases"), "-o", str(outdir), "--task", "predict",
                         "-m", str(model), "--workers", str(workers)], loads, f"cohort_{workers}_workers")
        results[f"cohort_{workers}_workers_seconds"] = round(seconds, 1)
        results[f"loop_over_cohort_{workers}_workers"] = round(loop_seconds / seconds, 2)
        results[f"cohort_{workers}_workers_labels_equal_loop"] = same_labels(loop_dir, outdir / "labels", names)
    results["cohort_1_over_2_workers"] = round(results["cohort_1_workers_seconds"] /
                                               results["cohort_2_workers_seconds"], 2)
    results["load_average_before_after"] = loads
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
