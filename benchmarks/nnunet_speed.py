"""nnU-Net models on our engine against nnU-Net's own ``nnUNetPredictor``, in one run on the same machine.

Two parts (run by hand; both print ratios measured in the same run):

``trained``: nnU-Net v2 trains a real model for a few minutes on a public dataset of ``$SEGTOOLKIT_DATA`` (HC18 2D
ultrasound by default; any dataset of the shared layout works, e.g. ``sunnybrook_cardiac_lv`` for 3D), with its own
planner, preprocessing and trainer (``nnUNetTrainer`` on the CPU, built directly so that its trainer lookup never
imports the Primus modules, which need torchvision). The held-out cases are then predicted by ``nnUNetPredictor``
and by our engine (``predict_nnunet``) with the same mirroring setting (both on and off): Dice between the two per
class, Dice of each against the reference labels, whole-case time and peak memory (each predictor in its own
process; peak resident memory from ``getrusage``).

``totalseg``: a TotalSegmentator-size PlainConvUNet (6 stages, 32-320 features, patch 128^3, 1.5 mm, CT
normalisation, 25 classes like the organs part; random weights, no mirroring as TotalSegmentator's trainers) on a
synthetic 512x512x300 CT at 0.8x0.8x1.5 mm (``--size`` makes it smaller): time of the part and peak memory, ours
against ``nnUNetPredictor``.

Usage::

    nice python benchmarks/nnunet_speed.py trained --dataset hc18_fetal_head_ultrasound --minutes 5 --test 10
    nice python benchmarks/nnunet_speed.py totalseg --size 512 512 300 --backend openvino
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = r"""
import json, os, resource, sys, time
import numpy as np, SimpleITK as sitk, torch
request = json.loads(sys.argv[1])
torch.set_num_threads(request["threads"])
start = time.perf_counter()
results = {}
if request["who"] == "nnunet":
    # nnU-Net looks the trainer class up by importing every trainer module; the Primus ones import timm, which
    # needs torchvision (absent with a CPU torch): keep them out of the lookup with empty stand-in modules
    import pkgutil, types
    import nnunetv2.training.nnUNetTrainer.primus as primus
    for found in pkgutil.walk_packages(primus.__path__, primus.__name__ + "."):
        sys.modules.setdefault(found.name, types.ModuleType(found.name))
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=request["mirroring"],
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(request["model"], use_folds=tuple(request["folds"]),
                                                   checkpoint_name="checkpoint_final.pth")
    for path, out in zip(request["images"], request["outputs"]):
        t = time.perf_counter()
        image = sitk.ReadImage(path)
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = list(reversed(image.GetSpacing())) if array.ndim == 3 else \
            [max(image.GetSpacing()) * 999, *reversed(image.GetSpacing())]
        array = array if array.ndim == 3 else array[None]
        labels = predictor.predict_single_npy_array(array[None], {"spacing": spacing}, None, None, False)
        labels = labels if image.GetDimension() == 3 else labels[0]
        result = sitk.GetImageFromArray(labels.astype(np.uint8))
        result.CopyInformation(image)
        sitk.WriteImage(result, out)
        results[path] = time.perf_counter() - t
else:
    sys.path.insert(0, request["repo"])
    from SegToolkitLib.methods.deep.formats.nnunet import load_nnunet, predict_nnunet
    model = load_nnunet(request["model"], folds=request["folds"])
    for path, out in zip(request["images"], request["outputs"]):
        t = time.perf_counter()
        image = sitk.ReadImage(path)
        result = predict_nnunet(model, image, tta=request["mirroring"], backend=request["backend"],
                                largest_component=False)
        sitk.WriteImage(result.label_map.image, out)
        results[path] = time.perf_counter() - t
        results["backend"] = result.backend
# the peak of this process's own memory: VmHWM belongs to the address space made at exec (ru_maxrss would keep the
# peak of the forked parent, here the benchmark that trained nnU-Net)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if os.path.exists("/proc/self/status"):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
print(json.dumps({"seconds": results, "total": time.perf_counter() - start, "peak_mb": peak}))
"""


def run_child(who: str, model: Path, folds: list[str], images: list[Path], outputs: list[Path], mirroring: bool,
              backend: str, threads: int) -> dict:
    request = {"who": who, "model": str(model), "folds": folds, "images": [str(p) for p in images],
               "outputs": [str(p) for p in outputs], "mirroring": mirroring, "backend": backend,
               "threads": threads, "repo": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(request)], capture_output=True, text=True,
                          env=os.environ.copy())
    if done.returncode:
        raise SystemExit(f"{who} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def dice_per_class(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    values = sorted(set(np.unique(a)) | set(np.unique(b)) - {0})
    return {int(v): float(2 * ((a == v) & (b == v)).sum() / max(1, (a == v).sum() + (b == v).sum())) for v in values}


def nnunet_environment(work: Path) -> None:
    for key, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        (work / sub).mkdir(parents=True, exist_ok=True)
        os.environ[key] = str(work / sub)


# ---------------------------------------------------------------------------------------------- trained model


def to_nnunet_raw(source: Path, target: Path, test: int) -> tuple[list[str], list[str]]:
    """The shared-layout dataset as nnU-Net raw data (imagesTr/labelsTr); the last ``test`` cases held out."""
    import SimpleITK as sitk

    meta = json.loads((source / "dataset.json").read_text())
    cases = sorted(p.name[:-7] for p in (source / "images").glob("*.nii.gz"))
    train, held = cases[:-test], cases[-test:]
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        split = "Tr" if case in train else "Ts"
        image = sitk.ReadImage(str(source / "images" / f"{case}.nii.gz"))
        label = sitk.ReadImage(str(source / "labels" / f"{case}.nii.gz"))
        if image.GetNumberOfComponentsPerPixel() > 1:
            image = sitk.VectorIndexSelectionCast(image, 0)
        sitk.WriteImage(image, str(target / f"images{split}" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(label, str(target / f"labels{split}" / f"{case}.nii.gz"))
    labels = meta.get("labels", {})
    names = {int(k): (v["name"] if isinstance(v, dict) else v) for k, v in labels.items()} if isinstance(labels, dict) \
        else {}
    names = {0: "background", **{v: n for v, n in names.items() if v}}
    modality = str(meta.get("modality", "MR"))
    (target / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT" if modality.upper().startswith("CT") else modality},
        "labels": {name: value for value, name in sorted(names.items())},
        "numTraining": len(train), "file_ending": ".nii.gz"}, indent=1))
    return train, held


def _split_of(raw: Path) -> tuple[list[str], list[str]]:
    train = sorted(p.name[:-12] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    held = sorted(p.name[:-12] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    return train, held


def train_nnunet(dataset_id: int, configuration: str, minutes: float) -> Path:
    """Plan, preprocess and train fold 0 with nnU-Net's own code on the CPU for about ``minutes``."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    name = maybe_convert_to_dataset_name(dataset_id)
    if not (Path(nnUNet_preprocessed) / name / "done").is_file():  # a --work folder of an earlier run is reused
        extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True)
        plan_experiments([dataset_id])
        preprocess([dataset_id], configurations=(configuration,), num_processes=(1,))
        (Path(nnUNet_preprocessed) / name / "done").write_text("")
    plans = load_json(os.path.join(nnUNet_preprocessed, name, "nnUNetPlans.json"))
    dataset = load_json(os.path.join(nnUNet_preprocessed, name, "dataset.json"))
    plans["continue_training"] = False  # what nnU-Net's own training entry point adds
    trainer = nnUNetTrainer(plans, configuration, 0, dataset, device=torch.device("cpu"))
    # a few minutes: short epochs, stopped at the first training step after the budget is spent
    trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 10, 2
    trainer.num_epochs = 50
    start = time.perf_counter()
    original = trainer.train_step

    class BudgetSpentError(Exception):
        pass

    def stop_when_spent(batch):
        if time.perf_counter() - start > minutes * 60:
            raise BudgetSpentError
        return original(batch)

    trainer.train_step = stop_when_spent
    try:
        trainer.run_training()
    except BudgetSpentError:
        trainer.on_train_end()  # writes checkpoint_final.pth as a finished training does
    print(f"nnU-Net trained {trainer.current_epoch} epochs of {trainer.num_iterations_per_epoch} iterations",
          flush=True)
    return Path(trainer.output_folder_base)


def trained(args: argparse.Namespace) -> None:
    import SimpleITK as sitk
    from _common import require_shared_data

    data = require_shared_data() / args.dataset
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="nnunet-bench-"))
    nnunet_environment(work)
    raw = work / "raw" / f"Dataset{args.id:03d}_{args.dataset.split('_')[0].upper()}"
    train, held = to_nnunet_raw(data, raw, args.test) if not (raw / "dataset.json").is_file() else \
        _split_of(raw)
    image = sitk.ReadImage(str(raw / "imagesTr" / f"{train[0]}_0000.nii.gz"))
    configuration = "2d" if image.GetDimension() == 2 else args.configuration
    print(f"{args.dataset}: {len(train)} training cases, {len(held)} held out; nnU-Net {configuration}, about "
          f"{args.minutes} min of training on {args.threads} threads", flush=True)
    start = time.perf_counter()
    model = train_nnunet(args.id, configuration, args.minutes)
    model = next(model.parent.glob(f"*__{configuration}")) if not (model / "plans.json").is_file() else model
    print(f"trained in {time.perf_counter() - start:.0f} s: {model}", flush=True)
    images = [raw / "imagesTs" / f"{case}_0000.nii.gz" for case in held]
    references = [sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs" / f"{case}.nii.gz"))) for case in held]
    for mirroring in (False, True):
        outputs = {}
        timing = {}
        for who in ("nnunet", "ours"):
            outputs[who] = [work / f"{who}-{mirroring}-{case}.nii.gz" for case in held]
            timing[who] = run_child(who, model, ["0"], images, outputs[who], mirroring, args.backend, args.threads)
        arrays = {who: [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in outputs[who]] for who in outputs}
        between = [min(dice_per_class(a, b).values(), default=1.0) for a, b in zip(arrays["ours"], arrays["nnunet"])]
        ours_ref = [np.mean(list(dice_per_class(a, r).values())) for a, r in zip(arrays["ours"], references)]
        theirs_ref = [np.mean(list(dice_per_class(a, r).values())) for a, r in zip(arrays["nnunet"], references)]
        ratio = timing["nnunet"]["total"] / timing["ours"]["total"]
        print(f"mirroring {'on ' if mirroring else 'off'}: ours ({timing['ours']['seconds'].get('backend')}) "
              f"{timing['ours']['total']:.1f} s, nnUNetPredictor {timing['nnunet']['total']:.1f} s -> {ratio:.2f}x; "
              f"peak memory {timing['ours']['peak_mb']:.0f} vs {timing['nnunet']['peak_mb']:.0f} MB; Dice ours vs "
              f"nnU-Net: lowest per class {min(between):.4f}, mean {np.mean(between):.4f}; against the reference: "
              f"ours {np.mean(ours_ref):.4f}, nnU-Net {np.mean(theirs_ref):.4f}", flush=True)


# ---------------------------------------------------------------------------------------------- TotalSegmentator size


def totalseg_folder(root: Path, classes: int = 25) -> Path:
    """An nnU-Net trained folder with a TotalSegmentator-size 3d_fullres PlainConvUNet and random weights."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))
    from nnunet_synthetic import make_dataset_json, make_plans

    plans = make_plans("3d_fullres", patch=(128, 128, 128), spacing=(1.5, 1.5, 1.5))
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    features = [32, 64, 128, 256, 320, 320]
    arch["arch_kwargs"].update({"n_stages": 6, "features_per_stage": features, "kernel_sizes": [[3, 3, 3]] * 6,
                                "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
                                "n_conv_per_stage_decoder": [2] * 5})
    dataset = make_dataset_json([f"class{i}" for i in range(1, classes)])
    kwargs = dict(arch["arch_kwargs"], conv_op=nn.Conv3d, norm_op=nn.InstanceNorm3d, nonlin=nn.LeakyReLU)
    torch.manual_seed(0)
    network = PlainConvUNet(input_channels=1, num_classes=classes, deep_supervision=True, **kwargs)
    folder = root / "Dataset991_TotalSize" / "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    network.eval()
    checkpoint = {"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainerNoMirroring",
                  "inference_allowed_mirroring_axes": None,
                  "init_args": {"configuration": "3d_fullres"}}
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def synthetic_ct(path: Path, size: list[int]) -> None:
    import SimpleITK as sitk

    x, y, z = size
    grid = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in (z, y, x)], indexing="ij")
    body = grid[1] ** 2 / 0.6 + grid[2] ** 2 / 0.8 < 1
    array = np.where(body, 40, -1000).astype(np.int16)
    array[body & ((grid[1] - 0.1) ** 2 + (grid[2] + 0.3) ** 2 < 0.05)] = 150
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 1.5))
    sitk.WriteImage(image, str(path))


def totalseg(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="nnunet-totalseg-"))
    nnunet_environment(work)
    folder = totalseg_folder(work)
    image = work / "ct.nii.gz"
    synthetic_ct(image, args.size)
    print(f"TotalSegmentator-size PlainConvUNet, random weights; CT {'x'.join(map(str, args.size))} at 0.8x0.8x1.5 "
          f"mm; {args.threads} threads; no mirroring", flush=True)
    results = {}
    if args.backend.startswith("openvino") and not args.converted:  # the one-off conversion is timed apart
        warm = run_child("ours", folder, ["0"], [image], [work / "warm.nii.gz"], False, args.backend, args.threads)
        print(f"ours, first run with the OpenVINO conversion: {warm['total']:.1f} s, peak {warm['peak_mb']:.0f} MB",
              flush=True)
    for who in ("ours", "nnunet"):
        results[who] = run_child(who, folder, ["0"], [image], [work / f"{who}.nii.gz"], False, args.backend,
                                 args.threads)
        print(f"{who}: {results[who]['total']:.1f} s, peak {results[who]['peak_mb']:.0f} MB "
              f"{results[who]['seconds'].get('backend', '')}", flush=True)
    print(f"time ratio nnUNetPredictor / ours: {results['nnunet']['total'] / results['ours']['total']:.2f}x; memory "
          f"ours / nnUNetPredictor: {results['ours']['peak_mb'] / results['nnunet']['peak_mb']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="openvino", help="our backend (default openvino)")
    parts = parser.add_subparsers(dest="part", required=True)
    first = parts.add_parser("trained")
    first.add_argument("--dataset", default="hc18_fetal_head_ultrasound")
    first.add_argument("--configuration", default="3d_fullres")
    first.add_argument("--minutes", type=float, default=5.0)
    first.add_argument("--test", type=int, default=10, help="held-out cases (the last ones)")
    first.add_argument("--id", type=int, default=990)
    first.add_argument("--work", help="work folder (kept; a second run reuses its preprocessed data)")
    second = parts.add_parser("totalseg")
    second.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], metavar=("X", "Y", "Z"))
    second.add_argument("--converted", action="store_true",
                        help="the OpenVINO conversion is already in $SEGTOOLKIT_CACHE (same weights: seed 0)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("nnUNet_n_proc_DA", "1")  # one augmentation worker: the machine has few cores
    (trained if args.part == "trained" else totalseg)(args)
    print(f"benchmark process peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
