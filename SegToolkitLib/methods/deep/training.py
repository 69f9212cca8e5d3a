"""Training: patch sampling with foreground oversampling, augmentation, Dice + cross-entropy with deep supervision
and an ignore label, polynomial learning rate, per-epoch validation Dice, checkpoint/resume, curves.

One epoch is ``iterations_per_epoch`` steps; after every epoch the held-out fold is scored (Dice on fixed validation
patches, like nnU-Net's pseudo Dice), a checkpoint is written and the curve PNG is redrawn. Running the same
command again after an interruption resumes from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...errors import InputError
from ...progress import CancelToken, ProgressCallback, report, scaled
from .augmentation import augment
from .backends import bf16_supported, resolve_device
from .dataset import Dataset, load_dataset
from .inference import CONVEX_SOLIDITY
from .model_package import (
    MODEL_JSON,
    load_checkpoint,
    read_model_json,
    remove_checkpoint,
    save_checkpoint,
    save_model,
    transfer_weights,
)
from .networks import build_network, encoder_parameters, network_patch_size, network_spec
from .planning import check_plan, plan_dataset
from .preprocessing import IGNORE_INDEX, preprocess_images, preprocess_labels

CURVE = "training_curve.png"
DEEP_SUPERVISION_WEIGHTS = (1.0, 0.5, 0.25)


@dataclass
class TrainingOptions:
    """Choices of ``segtoolkit train`` beyond the plan."""

    network: str = "dynunet"
    fold: int = 0
    folds: int = 5
    epochs: int | None = None
    time_budget_minutes: float | None = None
    iterations_per_epoch: int | None = None
    init: Path | None = None
    freeze_encoder: bool = False
    device: str = "auto"
    seed: int = 0
    quantize: bool = True  # 3D models: add a checked int8 network for fast CPU prediction (see .quantization)
    overwrite: bool = False  # replace a finished model in the output folder (else: refuse, or finish its int8 step)
    exclude: tuple[str, ...] = ()  # cases held out of training and validation
    log: Callable[[str], None] | None = None  # one line per epoch (loss, validation Dice, time left)


@dataclass
class _Sample:
    name: str
    image: np.ndarray  # (C, D, H, W) float32
    labels: np.ndarray  # (D, H, W) int16, IGNORE_INDEX where unannotated
    foreground: list[np.ndarray]  # per foreground class: (N, 3) voxel coordinates
    annotated: np.ndarray  # (N, 3) coordinates of annotated voxels (random-patch centres)


def class_values_of(plan: dict) -> list[int]:
    return [0] + sorted(int(value) for value in plan["labels"])


def train(dataset: Dataset | Path | str, model_dir: Path | str, plan: dict | None = None,
          options: TrainingOptions | None = None, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None) -> dict:
    """Train a model on ``dataset`` into ``model_dir``; returns the training summary (also in model.json)."""
    import torch

    options = options or TrainingOptions()
    model_dir = check_model_folder(model_dir, options.overwrite, options.quantize)
    dataset = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, exclude=options.exclude)
    device = resolve_device(options.device)
    if plan is None:
        plan = plan_dataset(dataset, device, progress=scaled(progress, 0, 0.05), cancel=cancel)
    check_plan(plan, "plan")
    _check_plan_fits(plan, dataset)
    plan = json.loads(json.dumps(plan))
    plan["patch_size"] = network_patch_size(options.network, plan["patch_size"])
    class_values = class_values_of(plan)
    samples = prepare_samples(dataset, plan, class_values, scaled(progress, 0.05, 0.1), cancel)
    train_samples, val_samples = _split(samples, options.fold, options.folds)
    spec = network_spec(options.network, plan, len(plan["channels"]), len(class_values))
    torch.manual_seed(options.seed)
    network = build_network(spec).to(device)
    init_note = _initialise(network, options)
    trainable = [p for p in network.parameters() if p.requires_grad]
    settings = plan["training"]
    optimizer = torch.optim.AdamW(trainable, lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
    key = _settings_key(plan, spec, options)
    finished = _finished_model(model_dir, key, options)
    if finished is not None:  # the same training finished before; only its int8 step was interrupted
        summary = dict(finished["training"], note="trained before with the same settings: only the int8 step ran "
                       "(--overwrite trains again)")
        summary["int8"] = _add_int8_network(model_dir, plan, options, train_samples, val_samples,
                                             scaled(progress, 0.1, 1.0), cancel)
        report(progress, 1.0, "done: the model was trained already; its int8 network was completed", cancel)
        return summary
    model_dir.mkdir(parents=True, exist_ok=True)
    if options.overwrite:
        remove_checkpoint(model_dir)
    state = load_checkpoint(model_dir, network, optimizer)
    if state is not None and state.get("key") != key:
        raise InputError(f"{model_dir}: holds a checkpoint of a training with other settings; use another output "
                         "folder or delete its checkpoint/ subfolder")
    state = state or {"key": key, "epoch": 0, "iterations": 0, "seconds": 0.0, "history": []}
    loop = _Loop(network, optimizer, plan, options, device, train_samples, val_samples, seed=options.seed)
    summary = loop.run(model_dir, state, scaled(progress, 0.1, 0.97), cancel, options.log)
    summary.update({"network": options.network, "fold": options.fold, "device": device, "init": init_note,
                    "train_cases": [s.name for s in train_samples], "validation_cases": [s.name for s in val_samples],
                    "excluded_cases": sorted(options.exclude), "settings_key": key})
    network.eval()
    meta = {"labels": plan["labels"], "class_values": class_values, "channels": plan["channels"],
            "ignore_label": plan.get("ignore_label"), "plan": plan, "network": spec, "training": summary,
            "postprocessing": shape_priors(samples, class_values)}
    save_model(model_dir, network.cpu(), meta)
    remove_checkpoint(model_dir)
    summary["int8"] = _add_int8_network(model_dir, plan, options, train_samples, val_samples,
                                         scaled(progress, 0.97, 1.0), cancel)
    report(progress, 1.0, f"done: validation Dice {summary['final_validation_dice']:.3f}", cancel)
    return summary


def _add_int8_network(model_dir: Path, plan: dict, options: TrainingOptions, train_samples: list[_Sample],
                      val_samples: list[_Sample], progress: ProgressCallback | None,
                      cancel: CancelToken | None) -> str:
    """Quantize a 3D model for the CPU (2D windows are fast enough in f32); one line on the outcome."""
    from .model_package import load_model
    from .quantization import describe, quantization_available, quantize_model, remove_int8, training_windows

    remove_int8(model_dir)
    if not options.quantize or len(plan["patch_size"]) != 3:
        return "no int8 network (not asked for, or a 2D model)"
    if not quantization_available():
        return "no int8 network (needs the openvino and nncf packages)"
    calibration, check = training_windows(train_samples, val_samples or train_samples, plan, array_patch(plan),
                                          options.seed)
    return describe(quantize_model(load_model(model_dir, "cpu"), calibration, check, progress, cancel))


def check_model_folder(model_dir: Path | str, overwrite: bool = False, quantize: bool = True) -> Path:
    """Before any work: ``model_dir`` must be a folder or a new name under a writable folder, and a finished model
    in it is only replaced with ``overwrite`` (one whose int8 step was interrupted may be finished by
    :func:`train`, which checks that the settings are the same)."""
    from ...io.atomic import check_output_path

    model_dir = Path(model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise InputError(f"{model_dir}: exists and is not a folder; give a folder for the model")
    existing = next((p for p in (model_dir, *model_dir.parents) if p.exists()), Path("."))
    check_output_path(existing / MODEL_JSON)
    if not overwrite and (model_dir / MODEL_JSON).is_file():
        meta = read_model_json(model_dir)
        if "int8" in meta or not quantize or len(meta["plan"]["patch_size"]) != 3:
            raise InputError(f"{model_dir}: holds a trained model already; give another output folder, or "
                             "--overwrite to train again and replace it")
    return model_dir


def _finished_model(model_dir: Path, key: str, options: TrainingOptions) -> dict | None:
    """The description of a finished model in ``model_dir`` trained with the same settings whose int8 step is
    still to do; None when there is no model or ``overwrite`` replaces it. A different or complete model is
    refused: training again must never replace a finished model silently."""
    if options.overwrite or not (model_dir / MODEL_JSON).is_file():
        return None
    meta = read_model_json(model_dir)
    same = meta.get("training", {}).get("settings_key") == key
    if same and "int8" not in meta and options.quantize and len(meta["plan"]["patch_size"]) == 3:
        return meta
    raise InputError(f"{model_dir}: holds a trained model already{' (the same training)' if same else ''}; give "
                     "another output folder, or --overwrite to train again and replace it")


def _check_plan_fits(plan: dict, dataset: Dataset) -> None:
    if len(plan["channels"]) != len(dataset.channels):
        raise InputError(f"plan expects {len(plan['channels'])} channels but {dataset.root} has "
                         f"{len(dataset.channels)}; make the plan from this dataset")
    missing = sorted(set(dataset.labels.values()) - {int(v) for v in plan["labels"]})
    if missing:
        raise InputError(f"plan does not know labels {missing} of {dataset.root}; make the plan from this dataset")


def prepare_samples(dataset: Dataset, plan: dict, class_values: list[int], progress: ProgressCallback | None,
                    cancel: CancelToken | None) -> list[_Sample]:
    """Every case preprocessed once into memory, with foreground coordinates for oversampling."""
    rng = np.random.default_rng(0)
    samples = []
    for index, case in enumerate(dataset.cases):
        report(progress, index / len(dataset.cases), f"preprocessing {case.name}", cancel)
        images, labels = dataset.load_case(case)
        array, grid = preprocess_images(images, plan)
        classes = preprocess_labels(labels, images[0], grid, class_values, dataset.ignore_label)
        mark_known_absent(classes, case, labels, images[0], grid, class_values, dataset.ignore_label)
        foreground = [_subsample(np.argwhere(classes == c), rng) for c in range(1, len(class_values))]
        annotated = _subsample(np.argwhere(classes != IGNORE_INDEX), rng)
        if annotated.size == 0:
            continue
        samples.append(_Sample(case.name, array, classes, foreground, annotated))
    if not samples:
        raise InputError(f"{dataset.root}: no case has annotated voxels")
    return samples


def mark_known_absent(classes: np.ndarray, case, labels: np.ndarray, reference, grid, class_values: list[int],
                      ignore_label: int) -> None:
    """On partly annotated slices (some labels drawn, others not) the unlabelled voxels are not unknown: they are
    none of the drawn labels. Such voxels get the code ``len(class_values) + bitmask of the absent classes`` (in
    place, working grid), which the loss reads as "any class but these" instead of leaving them out: otherwise an
    end-systolic slice with only the blood pool drawn teaches blood pool everywhere and background nowhere."""
    count = len(class_values)
    partial = case.partly_annotated_slices(labels.shape[0]) if labels.ndim == 3 else {}
    if not partial or count + (1 << count) > np.iinfo(np.int16).max:
        return
    codes = np.zeros(labels.shape, dtype=np.int32)
    for index, values in partial.items():
        bits = sum(1 << class_values.index(v) for v in values if v in class_values)
        codes[index][labels[index] == ignore_label] = count + bits if bits else 0
    values = np.unique(codes)
    on_grid = values[np.clip(preprocess_labels(codes, reference, grid, values.tolist(), 0), 0, None)]
    unknown = (classes == IGNORE_INDEX) & (on_grid > 0)
    classes[unknown] = on_grid[unknown]


def shape_priors(samples: list[_Sample], class_values: list[int]) -> dict:
    """Label values that are one connected piece (resp. have no holes) in every training case that holds them: the
    model's default clean-up at prediction. On 2D images, the single-piece values that are also convex in every
    case (solidity >= :data:`CONVEX_SOLIDITY`) are listed as ``convex``. Cases with unannotated voxels say nothing
    about shape and veto all three."""
    from scipy import ndimage

    from ...measurement.shape import solidity

    single, solid = set(class_values[1:]), set(class_values[1:])
    convex = set(class_values[1:])
    for sample in samples:
        if ((sample.labels < 0) | (sample.labels >= len(class_values))).any():  # unannotated or partly annotated
            return {"largest_component": [], "fill_holes": [], "convex": []}
        for index, value in enumerate(class_values[1:], start=1):
            mask = np.squeeze(sample.labels == index)
            if not mask.any():
                continue
            if ndimage.label(mask)[1] > 1:
                single.discard(value)
            if (ndimage.binary_fill_holes(mask) != mask).any():
                solid.discard(value)
            if value in convex and (mask.ndim != 2 or solidity(mask) < CONVEX_SOLIDITY):
                convex.discard(value)
    return {"largest_component": sorted(single), "fill_holes": sorted(solid), "convex": sorted(convex & single)}


def _subsample(coordinates: np.ndarray, rng: np.random.Generator, limit: int = 5000) -> np.ndarray:
    if len(coordinates) > limit:
        coordinates = coordinates[rng.choice(len(coordinates), limit, replace=False)]
    return coordinates


def _split(samples: list[_Sample], fold: int, folds: int) -> tuple[list[_Sample], list[_Sample]]:
    """Fold ``fold`` of ``folds`` (cases sorted by name, every folds-th) is held out; a single case is both."""
    if len(samples) < 2:
        return samples, samples
    folds = min(folds, len(samples))
    if not 0 <= fold < folds:
        raise InputError(f"fold {fold}: choose 0..{folds - 1} (the dataset has {len(samples)} cases)")
    ordered = sorted(samples, key=lambda s: s.name)
    validation = ordered[fold::folds]
    return [s for s in ordered if s not in validation], validation


def _initialise(network, options: TrainingOptions) -> dict | None:
    if options.init is None:
        if options.freeze_encoder:
            raise InputError("--freeze-encoder needs --init MODEL_DIR (a model to start from)")
        return None
    count = transfer_weights(network, options.init)
    frozen = 0
    if options.freeze_encoder:
        for parameter in encoder_parameters(network, options.network):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return {"from": str(options.init), "tensors_copied": count, "frozen_parameters": frozen}


def _settings_key(plan: dict, spec: dict, options: TrainingOptions) -> str:
    """What makes two trainings the same (to resume one): not the dataset's folder name, which is only a label
    (Slicer trains from a new temporary folder each time)."""
    plan = {key: value for key, value in plan.items() if key != "dataset"}
    text = json.dumps([plan, spec, options.fold, options.folds, options.seed, str(options.init),
                       options.freeze_encoder, sorted(options.exclude)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def known_per_class(target, classes: int):
    """``(exact, weight)``: voxels with one known class, and per class ``(B, C, ...)`` whether the voxel counts for
    that class: every class for exact voxels, the absent classes for partly known ones (codes from
    :func:`mark_known_absent`)."""
    import torch

    exact = (target >= 0) & (target < classes)
    bits = (target - classes).clamp(min=0)
    shifts = torch.arange(classes, device=target.device).view((1, classes) + (1,) * (target.ndim - 1))
    absent = ((bits.unsqueeze(1) >> shifts) & 1).bool() & (target >= classes).unsqueeze(1)
    return exact, exact.unsqueeze(1) | absent


def dice_ce_loss(logits, target):
    """Cross-entropy + (1 - soft Dice over the foreground classes, batch Dice); voxels with target -1 are left out
    of both terms. Partly known voxels (target >= classes, see :func:`mark_known_absent`) count as negatives of
    their absent classes in the Dice and as "one of the other classes" in the cross-entropy."""
    import torch
    import torch.nn.functional as nnf

    logits = logits.float()
    classes = logits.shape[1]
    exact, valid = known_per_class(target, classes)
    partial = target >= classes
    if not bool(valid.any()):
        return logits.sum() * 0.0
    if bool(partial.any()):
        log_all = torch.logsumexp(logits, 1)
        log_allowed = torch.logsumexp(logits.masked_fill(valid, -1e4), 1)  # the classes not ruled out
        ce_exact = nnf.cross_entropy(logits, torch.where(exact, target, IGNORE_INDEX), ignore_index=IGNORE_INDEX,
                                     reduction="sum")
        ce = (ce_exact + (log_all - log_allowed)[partial].sum()) / (exact.sum() + partial.sum())
    else:
        ce = nnf.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    probabilities = torch.softmax(logits, 1) * valid
    onehot = nnf.one_hot(torch.where(exact, target, 0), classes).movedim(-1, 1).to(probabilities.dtype) * valid
    dims = (0,) + tuple(range(2, logits.ndim))
    intersection = (probabilities * onehot).sum(dims)
    denominator = probabilities.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + 1e-5) / (denominator + 1e-5)
    return ce + (1 - dice[1:].mean())


def deep_supervision_loss(outputs, target):
    weights = DEEP_SUPERVISION_WEIGHTS[: len(outputs)]
    total = sum(w * dice_ce_loss(o, target) for w, o in zip(weights, outputs))
    return total / sum(weights)


class _Loop:
    """The epoch loop with its sampler; kept in one object so that resume state is explicit."""

    def __init__(self, network, optimizer, plan: dict, options: TrainingOptions, device: str,
                 train_samples: list[_Sample], val_samples: list[_Sample], seed: int) -> None:
        self.network, self.optimizer, self.plan, self.options = network, optimizer, plan, options
        self.device, self.train_samples, self.val_samples, self.seed = device, train_samples, val_samples, seed
        settings = plan["training"]
        self.iterations = int(options.iterations_per_epoch or settings["iterations_per_epoch"])
        self.epochs = options.epochs if options.epochs is not None else (
            None if options.time_budget_minutes is not None else int(settings["epochs"]))
        self.budget = options.time_budget_minutes * 60 if options.time_budget_minutes is not None else None
        self.patch = array_patch(plan)
        self.batch = int(plan["batch_size"])
        self.classes = len(class_values_of(plan))
        self.autocast = bool(settings.get("mixed_precision", True)) and bf16_supported(device)
        self.val_batch = self._fixed_validation_patches(int(settings.get("validation_patches", 16)))

    def run(self, model_dir: Path, state: dict, progress: ProgressCallback | None,
            cancel: CancelToken | None, log: Callable[[str], None] | None = None) -> dict:
        import torch

        settings = self.plan["training"]
        last_loss, dice = math.nan, [math.nan]
        while not self._finished(state):
            epoch = state["epoch"]
            rng = np.random.default_rng(self.seed * 1000 + epoch)
            torch.manual_seed(self.seed * 1000 + epoch)
            self.network.train()
            losses, start = [], time.perf_counter()
            for _ in range(self.iterations):
                fraction = self._fraction(state, time.perf_counter() - start)
                if fraction >= 1.0:
                    break
                for group in self.optimizer.param_groups:
                    group["lr"] = settings["learning_rate"] * (1 - fraction) ** 0.9
                losses.append(self._step(rng))
                state["iterations"] += 1
                last_loss = float(np.mean(losses[-10:]))
                report(progress, fraction, f"epoch {epoch + 1} loss {last_loss:.3f} val Dice "
                       f"{_mean(dice):.3f}", cancel)
            state["seconds"] += time.perf_counter() - start
            dice = self.validate()
            state["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else math.nan,
                                     "validation_dice": dice, "iterations": state["iterations"],
                                     "seconds": round(state["seconds"], 1)})
            state["epoch"] = epoch + 1
            save_checkpoint(model_dir, self.network, self.optimizer, state)
            plot_curve(state["history"], model_dir / CURVE)
            if log is not None:
                log(self._epoch_line(state, float(np.mean(losses)) if losses else math.nan, dice))
            report(progress, self._fraction(state, 0.0), f"epoch {epoch + 1} loss {last_loss:.3f} val Dice "
                   f"{_mean(dice):.3f}", cancel)
        final = state["history"][-1]["validation_dice"] if state["history"] else [math.nan]
        return {"epochs": state["epoch"], "iterations": state["iterations"], "seconds": round(state["seconds"], 1),
                "iterations_per_epoch": self.iterations, "mixed_precision": self.autocast,
                "final_loss": state["history"][-1]["loss"] if state["history"] else math.nan,
                "final_validation_dice": _mean(final), "validation_dice_per_class": final,
                "history": state["history"]}

    def _epoch_line(self, state: dict, loss: float, dice: list[float]) -> str:
        """``epoch 3/50: loss 0.512, validation Dice 0.734, 14 s, about 9 min left`` (for logs)."""
        done = self._fraction(state, 0.0)
        left = state["seconds"] * (1 - done) / done if done > 0 else math.nan
        total = f"/{self.epochs}" if self.epochs is not None else ""
        return (f"epoch {state['epoch']}{total}: loss {loss:.3f}, validation Dice {_mean(dice):.3f}, "
                f"{state['history'][-1]['seconds']:.0f} s, about {_duration(left)} left")

    def _finished(self, state: dict) -> bool:
        return self._fraction(state, 0.0) >= 1.0

    def _fraction(self, state: dict, running_seconds: float) -> float:
        """Share of the training done: by time with a budget, else by iterations."""
        if self.budget is not None:
            by_time = (state["seconds"] + running_seconds) / self.budget
            if self.epochs is None:
                return by_time
            return max(by_time, state["iterations"] / (self.epochs * self.iterations))
        return state["iterations"] / (self.epochs * self.iterations)

    def _step(self, rng: np.random.Generator) -> float:
        import torch

        images, labels = self._batch(self.train_samples, rng, self.batch)
        images, labels = augment(images, labels, self.plan["augmentation"], rng)
        images, labels = images.to(self.device), labels.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            outputs = self.network(images)
        loss = deep_supervision_loss(outputs, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12.0)
        self.optimizer.step()
        return float(loss.detach())

    def _batch(self, samples: list[_Sample], rng: np.random.Generator, size: int):
        import torch

        fraction = float(self.plan["training"].get("foreground_fraction", 0.34))
        images, labels = sample_patches(samples, self.patch, size, rng, fraction)
        images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels).long()
        if len(self.plan["patch_size"]) == 2:  # 2D network: drop the length-1 depth axis
            images_t, labels_t = images_t[:, :, 0], labels_t[:, 0]
        return images_t, labels_t

    def _fixed_validation_patches(self, count: int):
        rng = np.random.default_rng(12345)
        return self._batch(self.val_samples, rng, max(1, count))

    def validate(self) -> list[float]:
        """Dice per foreground class over the fixed validation patches (annotated voxels only)."""
        import torch

        self.network.eval()
        images, labels = self.val_batch
        tp = np.zeros(self.classes)
        fp = np.zeros(self.classes)
        fn = np.zeros(self.classes)
        with torch.no_grad(), torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            for start in range(0, len(images), self.batch):
                logits = self.network(images[start:start + self.batch].to(self.device))
                predicted = logits.float().argmax(1).cpu()
                target = labels[start:start + self.batch]
                valid = known_per_class(target, self.classes)[1]
                for c in range(1, self.classes):
                    p, t = (predicted == c) & valid[:, c], (target == c) & valid[:, c]
                    tp[c] += int((p & t).sum())
                    fp[c] += int((p & ~t).sum())
                    fn[c] += int((~p & t).sum())
        return [float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])) if tp[c] + fp[c] + fn[c] else math.nan
                for c in range(1, self.classes)]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "? min"
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


def _mean(values: list[float]) -> float:
    """Mean of the defined values (nan when there are none)."""
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan


def sample_patches(samples: list[_Sample], patch: tuple[int, int, int], size: int, rng: np.random.Generator,
                   foreground_fraction: float = 0.34) -> tuple[np.ndarray, np.ndarray]:
    """``size`` patches (N, C, D, H, W) and their labels (N, D, H, W); the first ``foreground_fraction`` of them
    (rounded up) centred on a foreground voxel, the others on any annotated voxel."""
    forced = math.ceil(size * foreground_fraction)
    images, labels = [], []
    for index in range(size):
        sample = samples[int(rng.integers(len(samples)))]
        classes = [c for c in sample.foreground if len(c)]
        pool = classes[int(rng.integers(len(classes)))] if index < forced and classes else sample.annotated
        image, label = _crop(sample, pool[int(rng.integers(len(pool)))], patch, rng)
        images.append(image)
        labels.append(label)
    return np.stack(images), np.stack(labels)


def array_patch(plan: dict) -> tuple[int, int, int]:
    """The plan's patch (x, y(, z)) as a (depth, height, width) crop; depth 1 for 2D networks."""
    patch = list(reversed(plan["patch_size"]))
    return (1, patch[0], patch[1]) if len(patch) == 2 else (patch[0], patch[1], patch[2])


def _crop(sample: _Sample, centre: np.ndarray, patch: tuple[int, int, int], rng: np.random.Generator):
    """A patch around ``centre`` (jittered by up to a quarter patch); padded with 0 / ignore only where the image
    is smaller than the patch."""
    shape = sample.labels.shape
    start = [int(c) - p // 2 + (int(rng.integers(-(p // 4), p // 4 + 1)) if p > 3 else 0)
             for c, p in zip(centre, patch)]
    # Stay inside the image where it is large enough: padded borders never occur in inference windows.
    start = [int(np.clip(s, min(0, n - p), max(0, n - p))) for s, n, p in zip(start, shape, patch)]
    image = np.zeros((sample.image.shape[0],) + tuple(patch), dtype=np.float32)
    label = np.full(patch, IGNORE_INDEX, dtype=np.int16)
    source, target = [], []
    for axis in range(3):
        lo, hi = max(0, start[axis]), min(shape[axis], start[axis] + patch[axis])
        source.append(slice(lo, hi))
        target.append(slice(lo - start[axis], hi - start[axis]))
    image[(slice(None), *target)] = sample.image[(slice(None), *source)]
    label[tuple(target)] = sample.labels[tuple(source)]
    return image, label


def plot_curve(history: list[dict], path: Path) -> None:
    """Training loss and validation Dice per epoch as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from ...io import atomic_output

    epochs = [h["epoch"] for h in history]
    figure, loss_axis = plt.subplots(figsize=(6, 4))
    loss_axis.plot(epochs, [h["loss"] for h in history], color="tab:blue", label="training loss")
    loss_axis.set_xlabel("epoch")
    loss_axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    loss_axis.set_ylabel("loss (Dice + CE)", color="tab:blue")
    dice_axis = loss_axis.twinx()
    dice_axis.plot(epochs, [_mean(h["validation_dice"]) for h in history], color="tab:red",
                   label="validation Dice")
    dice_axis.set_ylabel("validation Dice", color="tab:red")
    dice_axis.set_ylim(0, 1)
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    plt.close(figure)
