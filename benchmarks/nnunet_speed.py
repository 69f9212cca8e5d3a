"""nnU-Net models on our engine against nnU-Net's own ``nnUNetPredictor``, in one run on the same machine.

Two parts (run by hand; both print ratios measured in the same run):

``trained``: nnU-Net v2 trains a real model for ``--iterations`` (not a time budget: the machine's load does not change
the model) on a public dataset of ``$SEGTOOLKIT_DATA`` (HC18 2D ultrasound by default; any dataset of the shared
layout works; ``--held-out`` takes the held-out cases from another dataset, e.g. the MSD spleen crop for a model
trained on the TotalSegmentator CT example), with its own planner (``--spacing``: a floor on its target spacing),
preprocessing and trainer (``nnUNetTrainer`` on the CPU, built directly so that its trainer lookup never
imports the Primus modules, which need torchvision). The held-out cases are then predicted by ``nnUNetPredictor``
and by our engine (``predict_nnunet``) with the same mirroring setting (both on and off): Dice between the two per
class, Dice of each against the reference labels, whole-case time and peak memory (each predictor in its own
process; its own peak resident memory, ``VmHWM``). ``--agreement-on-training`` repeats the comparison on the
training cases, where the model is confident (a model trained on one CT finds little on another patient, and a
held-out case then holds mostly undecided voxels); the lowest class's voxel count is printed beside its Dice.

``totalseg``: a TotalSegmentator-size PlainConvUNet (6 stages, 32-320 features, patch 128^3, 1.5 mm, CT
normalisation, 25 classes like the organs part; random weights, no mirroring as TotalSegmentator's trainers) on a
synthetic 512x512x300 CT at 0.8x0.8x1.5 mm (``--size`` makes it smaller): time of the part and peak memory, ours
against ``nnUNetPredictor``.

Usage::

    nice python benchmarks/nnunet_speed.py trained --spacing 0.6 --iterations 150 --test 20 --work W
    nice python benchmarks/nnunet_speed.py trained --dataset totalsegmentator_ct_examples --id 991 --held-out \
        msd_spleen_ct_crop --classes spleen,liver,stomach,aorta --fold all --spacing 2 --memory-gb 2 \
        --iterations 300 --agreement-on-training --backends auto openvino openvino-int8
    nice python benchmarks/nnunet_speed.py totalseg --size 512 512 300 --backend auto
"""

from __future__ import annotations

import argparse
import ast
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
                                                   checkpoint_name=f"checkpoint_{request['checkpoint']}.pth")
    marks = {}
    network_pass = predictor.predict_logits_from_preprocessed_data

    def timed_network(data):  # times the parts: preprocessing before it, resampling back after it
        marks["network"] = time.perf_counter()
        logits = network_pass(data)
        marks["resampling"] = time.perf_counter()
        return logits

    predictor.predict_logits_from_preprocessed_data = timed_network
    for path, out in zip(request["images"], request["outputs"]):
        t = time.perf_counter()
        image = sitk.ReadImage(path)
        marks["preprocessing"] = time.perf_counter()
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = list(reversed(image.GetSpacing())) if array.ndim == 3 else \
            [max(image.GetSpacing()) * 999, *reversed(image.GetSpacing())]
        array = array if array.ndim == 3 else array[None]
        labels = predictor.predict_single_npy_array(array[None], {"spacing": spacing}, None, None, False)
        marks["writing"] = time.perf_counter()
        labels = labels if image.GetDimension() == 3 else labels[0]
        result = sitk.GetImageFromArray(labels.astype(np.uint8))
        result.CopyInformation(image)
        sitk.WriteImage(result, out)
        results[path] = time.perf_counter() - t
        marks["end"] = time.perf_counter()
else:
    sys.path.insert(0, request["repo"])
    from SegToolkitLib.methods.deep.formats.nnunet import load_nnunet, predict_nnunet
    model = load_nnunet(request["model"], folds=request["folds"], checkpoint=request["checkpoint"])
    if request.get("convert_only"):  # the one-off OpenVINO conversion (cached), timed apart from predicting
        from SegToolkitLib.methods.deep.formats.nnunet import OPENVINO_MIN_PASSES, choose_backend, runners
        runners(model, choose_backend(model, request["backend"], OPENVINO_MIN_PASSES))
        request["images"] = []
    marks = {}

    def mark(fraction, message):  # the predictor's progress messages mark its parts
        part = "network" if message.startswith("window") else "resampling" if message.startswith("resampling") \
            else message
        marks.setdefault(part, time.perf_counter())

    for path, out in zip(request["images"], request["outputs"]):
        t = time.perf_counter()
        image = sitk.ReadImage(path)
        marks["preprocessing"] = time.perf_counter()
        result = predict_nnunet(model, image, tta=request["mirroring"], backend=request["backend"],
                                largest_component=False, progress=mark)
        marks["writing"] = time.perf_counter()
        sitk.WriteImage(result.label_map.image, out)
        results[path] = time.perf_counter() - t
        results["backend"] = result.backend
        marks["end"] = time.perf_counter()
    marks.pop("done", None)
# the peak of this process's own memory: VmHWM belongs to the address space made at exec (ru_maxrss would keep the
# peak of the forked parent, here the benchmark that trained nnU-Net)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if os.path.exists("/proc/self/status"):
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
order = sorted(marks, key=marks.get)  # seconds of each part of the last case
parts = {name: round(marks[after] - marks[name], 1) for name, after in zip(order, order[1:])}
usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds: comparable when the machine is shared
print(json.dumps({"seconds": results, "total": time.perf_counter() - start, "peak_mb": peak, "parts": parts,
                  "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def run_child(who: str, model: Path, folds: list[str], images: list[Path], outputs: list[Path], mirroring: bool,
              backend: str, threads: int, checkpoint: str = "final", convert_only: bool = False) -> dict:
    request = {"who": who, "model": str(model), "folds": folds, "images": [str(p) for p in images],
               "outputs": [str(p) for p in outputs], "mirroring": mirroring, "backend": backend,
               "threads": threads, "repo": str(Path(__file__).resolve().parents[1]), "checkpoint": checkpoint,
               "convert_only": convert_only}
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


def _label_names(meta: dict) -> dict[int, str]:
    labels = meta.get("labels", {})
    labels = ast.literal_eval(labels) if isinstance(labels, str) else labels
    return {int(k): (v["name"] if isinstance(v, dict) else v) for k, v in labels.items()} if isinstance(labels, dict) \
        else {}


def _class_map(names: dict[int, str], classes: list[str] | None, where: Path) -> dict[int, int]:
    """Source label value -> value in the nnU-Net dataset (``classes`` by name, numbered 1..n; default: all)."""
    if not classes:
        return {value: value for value in names if value}
    by_name = {name: value for value, name in names.items()}
    missing = [name for name in classes if name not in by_name]
    if missing:
        raise SystemExit(f"{where}: no label named {', '.join(missing)} (labels: {', '.join(by_name)})")
    return {by_name[name]: index for index, name in enumerate(classes, start=1)}


def _write_case(image_file: Path, label_file: Path, mapping: dict[int, int], target: Path, split: str, case: str,
                orientation: str | None) -> None:
    """One case into imagesXX/labelsXX: first channel, labels renumbered, 3D images turned to ``orientation`` (a pure
    axis permutation/flip: nnU-Net assumes one orientation for all cases)."""
    import SimpleITK as sitk

    image, label = sitk.ReadImage(str(image_file)), sitk.ReadImage(str(label_file))
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = sitk.VectorIndexSelectionCast(image, 0)
    if image.GetDimension() == 3 and orientation:
        image, label = sitk.DICOMOrient(image, orientation), sitk.DICOMOrient(label, orientation)
    source = sitk.GetArrayFromImage(label)
    array = np.zeros(source.shape, np.uint8)
    for old, new in mapping.items():
        array[source == old] = new
    renumbered = sitk.GetImageFromArray(array)
    renumbered.CopyInformation(label)
    sitk.WriteImage(image, str(target / f"images{split}" / f"{case}_0000.nii.gz"))
    sitk.WriteImage(renumbered, str(target / f"labels{split}" / f"{case}.nii.gz"))


def to_nnunet_raw(source: Path, target: Path, test: int, classes: list[str] | None = None,
                  held_out: Path | None = None) -> tuple[list[str], list[str], list[int]]:
    """The shared-layout dataset as nnU-Net raw data (imagesTr/labelsTr, held-out cases in imagesTs/labelsTs).

    Held out: the last ``test`` cases, or every case of another dataset ``held_out`` (its labels matched to
    ``classes`` by name). Returns the training cases, the held-out cases and the class values that the held-out
    references label (the others are not scored against the reference)."""
    import SimpleITK as sitk

    names = _label_names(json.loads((source / "dataset.json").read_text()))
    mapping = _class_map(names, classes, source)
    cases = sorted(p.name[:-7] for p in (source / "images").glob("*.nii.gz"))
    train, held = (cases, []) if held_out else (cases[:-test], cases[-test:])
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (target / folder).mkdir(parents=True, exist_ok=True)
    first = sitk.ReadImage(str(source / "images" / f"{train[0]}.nii.gz"))
    orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(first.GetDirection()) \
        if first.GetDimension() == 3 else None
    for case in cases:
        _write_case(source / "images" / f"{case}.nii.gz", source / "labels" / f"{case}.nii.gz", mapping, target,
                    "Tr" if case in train else "Ts", case, orientation)
    scored = sorted(set(mapping.values()))
    if held_out:
        own = _label_names(json.loads((held_out / "dataset.json").read_text()))
        wanted = {names[old]: new for old, new in mapping.items()}
        held_mapping = {value: wanted[name] for value, name in own.items() if value and name in wanted}
        if not held_mapping:
            raise SystemExit(f"{held_out}: none of its labels ({', '.join(own.values())}) is a trained class")
        held = sorted(p.name[:-7] for p in (held_out / "images").glob("*.nii.gz"))
        for case in held:
            _write_case(held_out / "images" / f"{case}.nii.gz", held_out / "labels" / f"{case}.nii.gz", held_mapping,
                        target, "Ts", case, orientation)
        scored = sorted(held_mapping.values())
    kept = {0: "background", **{new: names[old] for old, new in mapping.items()}}
    modality = str(json.loads((source / "dataset.json").read_text()).get("modality", "MR"))
    (target / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT" if modality.upper().startswith("CT") else modality},
        "labels": {name: value for value, name in sorted(kept.items())},
        "numTraining": len(train), "file_ending": ".nii.gz"}, indent=1))
    (target / "held_out.json").write_text(json.dumps({"cases": held, "scored_classes": scored}))
    return train, held, scored


def _split_of(raw: Path) -> tuple[list[str], list[str], list[int]]:
    train = sorted(p.name[:-12] for p in (raw / "imagesTr").glob("*_0000.nii.gz"))
    held = sorted(p.name[:-12] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    scored = json.loads((raw / "held_out.json").read_text())["scored_classes"]
    return train, held, scored


def _plan(dataset_id: int, configuration: str, spacing: float | None, memory_gb: float) -> None:
    """nnU-Net's fingerprint, planner and preprocessing. ``spacing``: a floor in mm on the planner's target spacing
    (nnU-Net's median spacing otherwise), the way nnU-Net users overwrite it for coarser, faster models;
    ``memory_gb``: the planner's GPU memory target, which sets patch and batch size."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, preprocess

    class CoarserPlanner(ExperimentPlanner):
        def determine_fullres_target_spacing(self) -> np.ndarray:
            target = super().determine_fullres_target_spacing()
            return np.maximum(target, spacing) if spacing else target  # a 2D set's dummy axis (999x) stays

    extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True)
    CoarserPlanner(dataset_id, gpu_memory_target_in_gb=memory_gb).plan_experiment()
    preprocess([dataset_id], configurations=(configuration,), num_processes=(1,))


def train_nnunet(dataset_id: int, configuration: str, args: argparse.Namespace) -> tuple[Path, dict]:
    """Plan, preprocess and train one fold with nnU-Net's own code on the CPU for ``args.iterations`` iterations
    (epochs of ``args.epoch_iterations``), so that the load of the machine does not change the model;
    ``args.minutes`` is only a safety bound. A finished training in the work folder is reused."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    name = maybe_convert_to_dataset_name(dataset_id)
    done = Path(nnUNet_preprocessed) / name / "done"
    if not done.is_file():  # a --work folder of an earlier run is reused
        _plan(dataset_id, configuration, args.spacing, args.memory_gb)
        done.write_text(json.dumps({"spacing": args.spacing, "memory_gb": args.memory_gb}))
    plans = load_json(os.path.join(nnUNet_preprocessed, name, "nnUNetPlans.json"))
    dataset = load_json(os.path.join(nnUNet_preprocessed, name, "dataset.json"))
    config = plans["configurations"][configuration]
    print(f"nnU-Net plan {configuration}: spacing {config['spacing']}, patch {config['patch_size']}, batch "
          f"{config['batch_size']}, {config['architecture']['arch_kwargs']['n_stages']} stages", flush=True)
    plans["continue_training"] = False  # what nnU-Net's own training entry point adds
    fold = args.fold if args.fold == "all" else int(args.fold)
    trainer = nnUNetTrainer(plans, configuration, fold, dataset, device=torch.device("cpu"))
    record = Path(trainer.output_folder) / "benchmark_training.json"
    if args.checkpoint == "best":
        return Path(trainer.output_folder_base), _best_of_stopped_training(Path(trainer.output_folder), args, config)
    if record.is_file() and (Path(trainer.output_folder) / "checkpoint_final.pth").is_file():
        info = json.loads(record.read_text())
        print(f"reusing the trained model: {info}", flush=True)
        return Path(trainer.output_folder_base), info
    trainer.num_iterations_per_epoch = args.epoch_iterations
    trainer.num_val_iterations_per_epoch = args.val_iterations
    trainer.num_epochs = -(-args.iterations // args.epoch_iterations)
    start, steps = time.perf_counter(), [0]
    original = trainer.train_step

    class BudgetSpentError(Exception):
        pass

    def counted_step(batch):
        if args.minutes and time.perf_counter() - start > args.minutes * 60:
            raise BudgetSpentError
        steps[0] += 1
        return original(batch)

    trainer.train_step = counted_step
    try:
        trainer.run_training()
    except BudgetSpentError:
        print(f"WARNING: --minutes {args.minutes} spent after {steps[0]} iterations: this model depends on the "
              "machine's load", flush=True)
        trainer.on_train_end()  # writes checkpoint_final.pth as a finished training does
    # nnU-Net < 2.7 keeps the log on the logger itself, later versions on MetaLogger.local_logger
    logger = getattr(trainer.logger, "local_logger", trainer.logger)
    logged = logger.my_fantastic_logging
    info = {"iterations": steps[0], "epochs": trainer.current_epoch, "wall_s": round(time.perf_counter() - start),
            "pseudo_dice": [round(float(d), 4) for d in logged["dice_per_class_or_region"][-1]],
            "ema_pseudo_dice": round(float(logged["ema_fg_dice"][-1]), 4), "fold": str(fold),
            "patch": config["patch_size"], "batch": config["batch_size"], "spacing": config["spacing"]}
    record.write_text(json.dumps(info))
    print(f"nnU-Net trained {info['iterations']} iterations ({info['epochs']} epochs) in {info['wall_s']} s; "
          f"validation pseudo-Dice of the last epoch {info['pseudo_dice']}, moving average "
          f"{info['ema_pseudo_dice']}", flush=True)
    return Path(trainer.output_folder_base), info


def _best_of_stopped_training(folder: Path, args: argparse.Namespace, config: dict) -> dict:
    """What nnU-Net's log says about ``checkpoint_best.pth`` of a training that was stopped before its end (it saves
    that checkpoint at every epoch whose moving-average pseudo-Dice is a new best)."""
    # the newest log that records a best checkpoint (making the trainer here started an empty one)
    logs = [log for log in sorted(folder.glob("training_log_*.txt")) if "New best" in log.read_text()]
    if not (folder / "checkpoint_best.pth").is_file() or not logs:
        raise SystemExit(f"{folder}: no checkpoint_best.pth with a training log; train first")
    epochs, dice, best = 0, [], None
    for line in logs[-1].read_text().splitlines():
        if "Pseudo dice" in line:
            dice.append(line.split("Pseudo dice", 1)[1].strip())
        if "Epoch time" in line:
            epochs += 1
        if "New best EMA pseudo Dice" in line:
            best = (epochs, float(line.rsplit(":", 1)[1]))
    info = {"iterations": best[0] * args.epoch_iterations, "epochs": best[0], "checkpoint": "best",
            "planned_iterations": args.iterations, "pseudo_dice": dice[best[0] - 1], "ema_pseudo_dice": best[1],
            "fold": folder.name[len("fold_"):], "patch": config["patch_size"], "batch": config["batch_size"],
            "spacing": config["spacing"]}
    print(f"the best checkpoint of a stopped training: {info}", flush=True)
    return info


def _pairwise_dice(first: list[np.ndarray], second: list[np.ndarray], classes: list[int] | None = None) -> list[float]:
    """Dice per case and class (classes present in either, or the given ``classes`` where either has them)."""
    values = []
    for a, b in zip(first, second):
        scores = dice_per_class(a, b)
        values += [d for c, d in scores.items() if classes is None or c in classes]
    return values or [1.0]


def _lowest_class_size(first: list[np.ndarray], second: list[np.ndarray]) -> str:
    """The voxel count (in ``second``) of the class with the lowest Dice: a few voxels of a speck weigh heavily."""
    scored = [(d, int((b == c).sum())) for a, b in zip(first, second) for c, d in dice_per_class(a, b).items()]
    return f"{min(scored)[1]} voxels" if scored else "-"


def _quantize(model: Path, images: list[Path], work: Path) -> Path | None:
    """The model imported into a store inside ``work`` (int8 networks are kept in the store) and quantized there with
    our CLI (``segtoolkit models import``, then ``segtoolkit quantize -m NAME IMAGE...``, timed); returns the store
    copy that our predictor then loads, or None when the int8 networks disagreed with fp32 and were not kept."""
    environment = dict(os.environ, SEGTOOLKIT_HOME=str(work / "store"))
    name = "benchmark-int8"
    commands = (["models", "import", str(model), "--name", name, "--force"],
                ["quantize", "-m", name, *map(str, images)])
    for command in commands:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "SegToolkitLib", *command], capture_output=True, text=True,
                              env=environment, cwd=Path(__file__).resolve().parents[1])
        print(f"segtoolkit {' '.join(command[:2])}: {time.perf_counter() - start:.0f} s, exit {done.returncode}: "
              f"{(done.stdout + done.stderr).strip()[-600:]}", flush=True)
        if done.returncode:
            raise SystemExit(f"segtoolkit {command[0]} failed")
    imported = next((work / "store" / "models" / name).glob(f"*/{model.name}"))  # dataset folder / trained folder
    return imported if any(imported.rglob("network-int8.xml")) else None  # none kept: fp32 stays, no int8 rows


def trained(args: argparse.Namespace) -> None:
    import SimpleITK as sitk
    from _common import cpu_description, require_shared_data

    data = require_shared_data()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="nnunet-bench-"))
    nnunet_environment(work)
    raw = work / "raw" / f"Dataset{args.id:03d}_{args.dataset.split('_')[0].upper()}"
    classes = args.classes.split(",") if args.classes else None
    held_out = data / args.held_out if args.held_out else None
    train, held, scored = _split_of(raw) if (raw / "held_out.json").is_file() else \
        to_nnunet_raw(data / args.dataset, raw, args.test, classes, held_out)
    image = sitk.ReadImage(str(raw / "imagesTr" / f"{train[0]}_0000.nii.gz"))
    configuration = "2d" if image.GetDimension() == 2 else args.configuration
    print(f"CPU: {cpu_description()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{args.dataset}: {len(train)} training cases, {len(held)} held out"
          f"{f' (from {args.held_out})' if held_out else ''}; nnU-Net {configuration}, {args.iterations} iterations "
          f"on {args.threads} threads", flush=True)
    model, info = train_nnunet(args.id, configuration, args)
    model = next(model.parent.glob(f"*__{configuration}")) if not (model / "plans.json").is_file() else model
    held = held[:args.limit] if args.limit else held
    images = [raw / "imagesTs" / f"{case}_0000.nii.gz" for case in held]
    references = [sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTs" / f"{case}.nii.gz"))) for case in held]
    folds = [info["fold"]]
    for backend in args.backends:  # the one-off OpenVINO conversion (cached) is timed apart
        if backend.startswith("openvino") and backend != "openvino-int8":
            warm = run_child("ours", model, folds, images[:1], [work / "warm.nii.gz"], False, backend, args.threads,
                             args.checkpoint)
            print(f"ours {backend}, first run with the conversion: {warm['total']:.1f} s", flush=True)
    rows = []
    int8 = [b for b in args.backends if b == "openvino-int8"]  # after the others: int8 networks change 'auto'
    for group in ([b for b in args.backends if b != "openvino-int8"], int8):
        ours_model = model
        if group and group[0] == "openvino-int8":
            ours_model = _quantize(model, [raw / "imagesTr" / f"{case}_0000.nii.gz" for case in
                                           train[:args.calibration]], work)
            if ours_model is None:
                print("no int8 rows: the checked int8 network was not kept", flush=True)
                continue
        for mirroring in (False, True) if group else ():
            rows += _compare(model, folds, images, references, scored, mirroring, group, work, args, held, ours_model)
    print(f"\nCPU: {cpu_description()}; load average {os.getloadavg()[0]:.2f}; model: {info}")
    print_table(rows)
    if args.agreement_on_training:
        print("\nThe same on the training cases (in-sample: where the model is sure of itself)", flush=True)
        print_table(_on_training_cases(model, folds, raw, train[:args.limit or len(train)], work, args))


def print_table(rows: list[str]) -> None:
    print("| mirroring | ours backend | ours s (per case sum) | nnUNetPredictor s (per case sum) | ratio | Dice ours "
          "vs nnU-Net lowest / mean | Dice vs reference ours / nnU-Net | peak MB ours / nnU-Net |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


def _on_training_cases(model: Path, folds: list[str], raw: Path, cases: list[str], work: Path,
                       args: argparse.Namespace) -> list[str]:
    """Both predictors on training cases: a held-out case the model cannot segment has mostly undecided voxels,
    where any two engines part; here the agreement is measured where the model is confident."""
    import SimpleITK as sitk

    images = [raw / "imagesTr" / f"{case}_0000.nii.gz" for case in cases]
    references = [sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / f"{case}.nii.gz"))) for case in cases]
    scored = sorted({int(v) for reference in references for v in np.unique(reference) if v})
    backends = [b for b in args.backends if b != "openvino-int8"]
    (work / "training").mkdir(exist_ok=True)
    return [row for mirroring in (False, True) for row in
            _compare(model, folds, images, references, scored, mirroring, backends, work / "training", args, cases)]


def _compare(model: Path, folds: list[str], images: list[Path], references: list[np.ndarray], scored: list[int],
             mirroring: bool, backends: list[str], work: Path, args: argparse.Namespace, held: list[str],
             ours_model: Path | None = None) -> list[str]:
    """nnUNetPredictor and ours (each backend; ``ours_model``: the same model from our store) on the held-out images
    in their own processes; one table row each."""
    import SimpleITK as sitk

    def run(who: str, backend: str) -> tuple[dict, list[np.ndarray]]:
        outputs = [work / f"{who}-{backend}-{mirroring}-{case}.nii.gz" for case in held]
        source = ours_model if who == "ours" and ours_model is not None else model
        timing = run_child(who, source, folds, images, outputs, mirroring, backend, args.threads, args.checkpoint)
        return timing, [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in outputs]

    theirs, their_labels = run("nnunet", "-")
    their_ref = np.mean(_pairwise_dice(their_labels, references, scored))
    rows = []
    for backend in backends:
        ours, our_labels = run("ours", backend)
        between = _pairwise_dice(our_labels, their_labels)
        lowest_size = _lowest_class_size(our_labels, their_labels)
        our_ref = np.mean(_pairwise_dice(our_labels, references, scored))
        case_sum = {who: sum(v for k, v in t["seconds"].items() if k != "backend") for who, t in
                    (("ours", ours), ("nnunet", theirs))}
        ratio = theirs["total"] / ours["total"]
        row = (f"| {'on' if mirroring else 'off'} | {backend} ({ours['seconds'].get('backend')}) | "
               f"{ours['total']:.1f} ({case_sum['ours']:.1f}) | {theirs['total']:.1f} ({case_sum['nnunet']:.1f}) | "
               f"{ratio:.2f}x ({case_sum['nnunet'] / case_sum['ours']:.2f}x) | {min(between):.4f} ({lowest_size}) / "
               f"{np.mean(between):.4f} | {our_ref:.4f} / {their_ref:.4f} | {ours['peak_mb']:.0f} / "
               f"{theirs['peak_mb']:.0f} |")
        print(row, flush=True)
        rows.append(row)
    return rows


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
    from _common import cpu_description

    work = Path(tempfile.mkdtemp(prefix="nnunet-totalseg-"))
    nnunet_environment(work)
    folder = totalseg_folder(work)
    image = work / "ct.nii.gz"
    synthetic_ct(image, args.size)
    print(f"CPU {cpu_description()}; load average {os.getloadavg()[0]:.2f}")
    print(f"TotalSegmentator-size PlainConvUNet, random weights; CT {'x'.join(map(str, args.size))} at 0.8x0.8x1.5 "
          f"mm; {args.threads} threads; no mirroring", flush=True)
    results = {}
    who_runs = ("ours", "nnunet") if args.who == "both" else (args.who,)
    if "ours" in who_runs and args.backend in ("auto", "openvino", "openvino-bf16") and not args.converted:
        # the one-off conversion (cached afterwards) is timed apart
        warm = run_child("ours", folder, ["0"], [image], [work / "warm.nii.gz"], False, args.backend, args.threads,
                         convert_only=True)
        print(f"ours, one-off OpenVINO conversion (cached afterwards): {warm['total']:.1f} s, peak "
              f"{warm['peak_mb']:.0f} MB", flush=True)
    for who in who_runs:
        results[who] = run_child(who, folder, ["0"], [image], [work / f"{who}.nii.gz"], False, args.backend,
                                 args.threads)
        print(f"{who}: {results[who]['total']:.1f} s ({results[who].get('cpu_s', 0):.0f} CPU s), peak "
              f"{results[who]['peak_mb']:.0f} MB "
              f"{results[who]['seconds'].get('backend', '')}; parts: {results[who].get('parts', {})}; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
    if len(results) == 2:
        print(f"time ratio nnUNetPredictor / ours: {results['nnunet']['total'] / results['ours']['total']:.2f}x; "
              f"memory ours / nnUNetPredictor: {results['ours']['peak_mb'] / results['nnunet']['peak_mb']:.2f}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="auto",
                        help="our backend for totalseg (default auto: openvino-bf16 on CPUs with AMX, else openvino)")
    parts = parser.add_subparsers(dest="part", required=True)
    first = parts.add_parser("trained")
    first.add_argument("--dataset", default="hc18_fetal_head_ultrasound")
    first.add_argument("--configuration", default="3d_fullres")
    first.add_argument("--iterations", type=int, default=300, help="training iterations (default 300)")
    first.add_argument("--epoch-iterations", type=int, default=25, help="iterations per epoch (default 25)")
    first.add_argument("--val-iterations", type=int, default=5, help="validation batches per epoch (default 5)")
    first.add_argument("--minutes", type=float, help="safety bound on training time (the model then depends on load)")
    first.add_argument("--spacing", type=float, help="floor in mm on nnU-Net's target spacing (coarser, faster)")
    first.add_argument("--memory-gb", type=float, default=8.0,
                       help="nnU-Net planner's GPU memory target: sets patch and batch size (default 8, nnU-Net's)")
    first.add_argument("--fold", default="0", help="fold to train (default 0; 'all' for a single training case)")
    first.add_argument("--classes", help="label names to train, comma-separated (default: all)")
    first.add_argument("--held-out", help="another shared dataset as the held-out set (labels matched by name)")
    first.add_argument("--test", type=int, default=10, help="held-out cases (the last ones)")
    first.add_argument("--limit", type=int, help="predict only the first N held-out cases")
    first.add_argument("--backends", nargs="+", default=["auto", "openvino"],
                       help="our backends to compare (openvino-int8 runs 'segtoolkit quantize' first)")
    first.add_argument("--calibration", type=int, default=4, help="training images for int8 calibration")
    first.add_argument("--agreement-on-training", action="store_true",
                       help="also compare both predictors on the training cases (where the model is confident)")
    first.add_argument("--checkpoint", choices=("final", "best"), default="final",
                       help="'best': measure the best checkpoint of a training stopped before its end (no training)")
    first.add_argument("--id", type=int, default=990)
    first.add_argument("--work", help="work folder (kept; a second run reuses its data and trained model)")
    second = parts.add_parser("totalseg")
    second.add_argument("--size", type=int, nargs=3, default=[512, 512, 300], metavar=("X", "Y", "Z"))
    second.add_argument("--who", choices=("both", "ours", "nnunet"), default="both",
                        help="which predictors run (default both, in one run)")
    second.add_argument("--converted", action="store_true",
                        help="the OpenVINO conversion is already in $SEGTOOLKIT_CACHE (same weights: seed 0)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("nnUNet_n_proc_DA", "1")  # one augmentation worker: the machine has few cores
    (trained if args.part == "trained" else totalseg)(args)
    print(f"benchmark process peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
