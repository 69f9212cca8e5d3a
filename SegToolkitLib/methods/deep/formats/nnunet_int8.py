"""Checked int8 networks for imported nnU-Net models (``segtoolkit quantize -m MODEL IMAGE...``).

An imported model comes without its training data, so calibration runs on images the user names: each is
preprocessed as nnU-Net does, and windows centred on its content (CT: tissue above the lower clip; others: non-zero
voxels) calibrate the int8 network of every fold. The same agreement check as for our own models follows: up to two
of the images are predicted whole (Gaussian-weighted windows) by the fp32 and the int8 network of the fold, and the
int8 network is kept only when every label's Dice reaches 0.995 (:data:`..quantization.MIN_AGREEMENT`), else more
of the finest layers stay in f32 and it is tried again (:func:`..quantization.search_int8`). Kept networks are
written beside the fold's weights in the store (``network-int8.xml`` / ``.bin``, OpenVINO IR, and
``network-int8.json`` with the check); the ``auto`` backend uses them from then on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ....errors import InputError
from ....progress import CancelToken, ProgressCallback, report, scaled
from .nnunet import INT8_FILE, INT8_JSON, NnunetModel, fold_key, preprocess, sliding_window_logits

CALIBRATION_WINDOWS = 32
CHECK_IMAGES = 2


def quantize_imported(model, images: Sequence[Sequence[sitk.Image]], seed: int = 0,
                      progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[dict]:
    """Quantize every fold of an nnU-Net model in the store (or every part of a task) on ``images`` (one list of
    channels per case); returns the check of each network."""
    from ..quantization import require_quantization
    from .task import TaskModel

    require_quantization()
    if not images:
        raise InputError("quantize: name at least one typical image to calibrate on")
    if isinstance(model, TaskModel):
        entries = []
        for index in range(len(model.parts)):
            share = 1.0 / len(model.parts)
            entries += quantize_imported(model.part_model(index), images, seed,
                                         scaled(progress, index * share, (index + 1) * share), cancel)
        return entries
    if not isinstance(model, NnunetModel):
        raise InputError("quantize with images is for imported nnU-Net models; a SegToolkit model calibrates on its "
                         "training dataset: segtoolkit quantize -m MODEL DATA")
    if not all(path.suffix == ".safetensors" for path in model.fold_files):
        raise InputError(f"{model.folder}: int8 networks are kept in the model store; import the model first "
                         "('segtoolkit models import PATH') and quantize it by its store name")
    report(progress, 0.0, "int8: preprocessing the calibration images", cancel)
    cases = [preprocess(model, channels).data for channels in images]
    calibration = calibration_windows(model, cases, np.random.default_rng(seed))
    check = cases[:CHECK_IMAGES]
    entries = []
    for index in range(len(model.networks)):
        share = 1.0 / len(model.networks)
        entries.append(quantize_fold(model, index, calibration, check, len(images),
                                     scaled(progress, 0.05 + 0.95 * index * share, 0.05 + 0.95 * (index + 1) * share),
                                     cancel))
    model.runtime.clear()  # the backends see the new networks on the next prediction
    return entries


def calibration_windows(model: NnunetModel, cases: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """``CALIBRATION_WINDOWS`` network windows (N, C, *patch) centred on content voxels of the preprocessed cases."""
    from ..quantization import window_around
    from .nnunet import _pad_to_patch

    patch = model.patch
    windows = []
    for number in range(CALIBRATION_WINDOWS):
        data, _ = _pad_to_patch(cases[number % len(cases)], patch)
        content = np.argwhere(_content(data, model))
        centre = content[int(rng.integers(len(content)))] if len(content) else np.array(data.shape[1:]) // 2
        if model.two_d:
            plane = data[:, int(centre[0])]
            windows.append(window_around(plane, centre[1:], tuple(patch), rng))
        else:
            windows.append(window_around(data, centre, tuple(patch), rng))
    return np.ascontiguousarray(np.stack(windows))


def _content(data: np.ndarray, model: NnunetModel) -> np.ndarray:
    """Voxels worth calibrating on: above the lower clip for CT, non-zero otherwise (subsampled)."""
    first = data[0]
    if model.config["normalization_schemes"][0] == "CTNormalization":
        mask = first > first.min() + 1e-3
    else:
        mask = first != 0
    if mask.sum() > 200000:
        mask &= np.random.default_rng(0).random(mask.shape) < 200000 / mask.sum()
    return mask


def quantize_fold(model: NnunetModel, index: int, calibration: np.ndarray, check: list[np.ndarray], images: int,
                  progress: ProgressCallback | None, cancel: CancelToken | None) -> dict:
    from ..backends import compile_for_cpu, convert_to_openvino, publish
    from ..quantization import search_int8

    window = [1, len(model.channels), *model.patch]
    report(progress, 0.0, f"int8: converting fold {model.folds[index]}", cancel)
    converted = convert_to_openvino(model.networks[index], window, fold_key(model, index))
    fp32 = compile_for_cpu(converted)
    reference = [sliding_window_logits(model, case, [fp32], [()], cancel=cancel).argmax(0) for case in check]

    def agreement_of(int8_run) -> dict:
        overlap, total = np.zeros(len(model.labels)), np.zeros(len(model.labels))
        for case, expected in zip(check, reference):
            labels = sliding_window_logits(model, case, [int8_run], [()], cancel=cancel).argmax(0)
            for c in range(1, len(model.labels)):
                overlap[c] += int(((expected == c) & (labels == c)).sum())
                total[c] += int((expected == c).sum() + (labels == c).sum())
        return {str(c): (round(float(2 * overlap[c] / total[c]), 5) if total[c] else None)
                for c in range(1, len(model.labels))}

    quantized, found = search_int8(converted, calibration, agreement_of, progress, cancel)
    entry = {"file": INT8_FILE, "fold": model.folds[index], "window": window, "weights_sha256": fold_key(model, index),
             **found, "calibration_images": images, "check_images": len(check)}
    _save(model.fold_files[index].parent, quantized, entry, publish)
    return entry


def _save(folder: Path, quantized, entry: dict, publish) -> None:
    """Write (or remove) the int8 files, then their description: a reader never sees an entry without files."""
    import openvino as ov

    xml = folder / INT8_FILE
    description = folder / INT8_JSON
    description.unlink(missing_ok=True)
    if quantized is None:
        xml.unlink(missing_ok=True)
        xml.with_suffix(".bin").unlink(missing_ok=True)
    else:
        tmp = folder / f".{xml.stem}.{os.getpid()}.xml"
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        publish(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        publish(tmp, xml)
    tmp_json = folder / f".{INT8_JSON}.{os.getpid()}"
    tmp_json.write_text(json.dumps(entry, indent=1) + "\n", encoding="utf-8")
    publish(tmp_json, description)
