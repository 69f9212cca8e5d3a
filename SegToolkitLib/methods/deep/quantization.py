"""INT8 networks for fast CPU prediction: post-training quantization with OpenVINO and NNCF, kept only when its
labels agree with the fp32 network's.

Per 96x96x48 window of the benchmark 3D U-Net on two cores with AVX-512 VNNI: int8 0.08-0.13 s, OpenVINO f32
0.23-0.26 s, eager torch fp32 0.61 s (``benchmarks/deep_speed.py``; the cores are shared, so timings vary). Calibration
runs windows of the training cases (a third centred on foreground, as in training) through the network. NNCF's mixed
preset (symmetric weights, asymmetric activations) is used because the symmetric default lost up to 0.013 Dice
against fp32 on that model (mixed: 0.004), with activation ranges from histograms (see ``_quantize``). Then up to two
validation cases are predicted whole (Gaussian-blended sliding windows) by both networks; the int8 network is saved
into the model folder (``network-int8.xml`` / ``.bin``, OpenVINO IR: no pickle) only when every label's Dice against
fp32 reaches 0.995, and the ``auto`` backend uses it from then on. The check is recorded in model.json under
``int8``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
from importlib.metadata import version
from pathlib import Path

import numpy as np

from ...errors import InputError
from ...io import write_text_atomic
from ...progress import CancelToken, ProgressCallback, report
from .dataset import Dataset, load_dataset
from .model_package import MODEL_JSON, DeepModel, load_model

INT8_FILE = "network-int8.xml"
MIN_AGREEMENT = 0.995
CALIBRATION_WINDOWS = 32
CHECK_CASES = 2
# how many of the finest-resolution layers stay in floating point at each attempt (0: the whole network in int8)
F32_LAYER_STEPS = (0, 1, 2, 3, 4, 6)


def quantization_available() -> bool:
    """Whether OpenVINO and NNCF are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def _require_quantization() -> None:
    if not quantization_available():
        raise InputError("int8 quantization needs the openvino and nncf packages (pip install openvino nncf)")


def int8_path(model: DeepModel) -> Path:
    return model.folder / model.meta.get("int8", {}).get("file", INT8_FILE)


def int8_ready(model: DeepModel) -> bool:
    """Whether the model has an accepted int8 network made from its current weights."""
    from .inference import weights_sha256

    entry = model.meta.get("int8")
    if not entry or not entry.get("accepted"):
        return False
    path = int8_path(model)
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise InputError(f"{model.folder / MODEL_JSON}: lists the int8 network {entry.get('file')} but its files are "
                         "missing; copy the whole model folder or run 'segtoolkit quantize' again")
    return entry.get("weights_sha256") == weights_sha256(model)


def quantize_model(model: DeepModel, calibration: np.ndarray, check: list[np.ndarray],
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
    """Quantize the network to int8 on ``calibration`` windows (N, C, *window) and compare its sliding-window labels
    with fp32 on the ``check`` cases (working-grid arrays (C, D, H, W)). While a label disagrees (Dice < 0.995),
    quantize again with more of the finest-resolution layers left in floating point (``F32_LAYER_STEPS``); the first
    network that agrees is saved into the model folder. Returns the ``int8`` entry written to model.json
    (``accepted`` says whether an int8 network is used)."""
    _require_quantization()
    from .inference import compile_for_cpu, openvino_model, sliding_window, weights_sha256

    window = [1] + [int(n) for n in calibration.shape[1:]]
    report(progress, 0.0, "int8: converting the network", cancel)
    converted = openvino_model(model, window)
    finest = layers_finest_first(converted)
    reference = [sliding_window(model, array, False, "torch", cancel=cancel).argmax(0) for array in check]
    windows = [calibration[i:i + 1] for i in range(len(calibration))]
    steps = [n for n in F32_LAYER_STEPS if n <= len(finest)]
    for attempt, kept in enumerate(steps):
        report(progress, 0.1 + 0.85 * attempt / len(steps),
               f"int8: calibrating on {len(calibration)} windows ({kept} layers kept in f32)", cancel)
        quantized = _quantize(converted, windows, finest[:kept])
        agreement = label_agreement(model, reference, compile_for_cpu(quantized), check, cancel)
        defined = [value for value in agreement.values() if value is not None]
        accepted = bool(defined) and min(defined) >= MIN_AGREEMENT
        if accepted:
            break
    entry = {"file": INT8_FILE, "accepted": accepted, "window": window, "weights_sha256": weights_sha256(model),
             "agreement_dice": agreement, "min_agreement": MIN_AGREEMENT, "f32_layers": finest[:kept],
             "attempts": attempt + 1, "calibration_windows": len(calibration), "check_cases": len(check),
             "preset": "mixed", "activation_ranges": "histogram", "openvino": version("openvino"),
             "nncf": version("nncf")}
    _save(model, quantized if accepted else None, entry)
    report(progress, 1.0, describe(entry), cancel)
    return entry


def layers_finest_first(converted) -> list[str]:
    """The network's convolutions (plain and transposed) ordered by output resolution, finest first, in graph order
    within a resolution: the full-resolution layers are where int8 rounding moves boundaries most."""
    layers = []
    for order, op in enumerate(converted.get_ordered_ops()):
        if op.get_type_name() in ("Convolution", "ConvolutionBackpropData"):
            shape = op.get_output_partial_shape(0)
            voxels = math.prod(shape[i].get_length() for i in range(2, shape.rank.get_length()))
            layers.append((-voxels, order, op.get_friendly_name()))
    return [name for _, _, name in sorted(layers)]


def _quantize(converted, windows: list[np.ndarray], keep_f32: list[str]):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # Activation ranges from histograms (NNCF's error-minimising choice) instead of the mean of per-window
    # minima and maxima: on the benchmark model the whole network in int8 went from Dice 0.9924 / 0.9773 to
    # 0.9956 / 0.9946 against fp32 (liver / spleen; benchmarks/RESULTS.md), for about 4x the calibration time
    # (about 65 s for 32 windows).
    ranges = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.HISTOGRAM)
    with _quiet():  # NNCF draws its own progress bars
        return nncf.quantize(converted, nncf.Dataset(windows), preset=nncf.QuantizationPreset.MIXED,
                             subset_size=len(windows), fast_bias_correction=True, advanced_parameters=ranges,
                             ignored_scope=nncf.IgnoredScope(names=keep_f32) if keep_f32 else None)


def label_agreement(model: DeepModel, reference: list[np.ndarray], int8_run, cases: list[np.ndarray],
                    cancel: CancelToken | None = None) -> dict[str, float | None]:
    """Dice per foreground label between the fp32 labels ``reference`` and the int8 network's labels, both from the
    same Gaussian-blended sliding windows over ``cases`` (None for a label that neither predicts)."""
    from .inference import sliding_window

    classes = len(model.class_values)
    overlap, total = np.zeros(classes), np.zeros(classes)
    for array, expected in zip(cases, reference):
        fast = sliding_window(model, array, False, "openvino-int8", cancel=cancel, network=int8_run).argmax(0)
        for c in range(1, classes):
            overlap[c] += int(((expected == c) & (fast == c)).sum())
            total[c] += int((expected == c).sum() + (fast == c).sum())
    return {str(model.class_values[c]): (round(float(2 * overlap[c] / total[c]), 5) if total[c] else None)
            for c in range(1, classes)}


def describe(entry: dict) -> str:
    """One line on the outcome, for the command line and the training summary."""
    defined = [v for v in entry["agreement_dice"].values() if v is not None]
    worst = f"{min(defined):.4f}" if defined else "nothing predicted to compare"
    if entry["accepted"]:
        return f"int8 network saved: labels agree with fp32 (lowest Dice {worst})"
    return f"int8 network not kept: labels differ from fp32 (lowest Dice {worst} < {MIN_AGREEMENT}); fp32 stays"


def quantize_folder(model_dir: Path | str, dataset: Dataset | Path | str, seed: int = 0,
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
    """``segtoolkit quantize``: calibrate on the model's training cases in ``dataset`` and check on its
    validation cases (cases the model never saw, when the dataset is another one)."""
    from .training import array_patch, class_values_of, prepare_samples

    _require_quantization()  # before preparing any sample
    model = load_model(model_dir, "cpu")
    dataset = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    if len(dataset.channels) != len(model.channels):
        raise InputError(f"{dataset.root}: has {len(dataset.channels)} channels, the model takes "
                         f"{len(model.channels)}; use the dataset the model was trained on")
    samples = prepare_samples(dataset, model.plan, class_values_of(model.plan), None, cancel)
    validation = set(model.meta.get("training", {}).get("validation_cases", []))
    calibration_samples = [s for s in samples if s.name not in validation] or samples
    check_samples = [s for s in samples if s.name in validation] or samples
    calibration, check = training_windows(calibration_samples, check_samples, model.plan, array_patch(model.plan),
                                          seed)
    return quantize_model(model, calibration, check, progress, cancel)


def training_windows(calibration_samples: list, check_samples: list, plan: dict, patch: tuple[int, int, int],
                     seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Calibration windows (N, C, *network window) sampled as in training, and the check cases' arrays (at most
    ``CHECK_CASES``)."""
    from .training import sample_patches

    rng = np.random.default_rng(seed)
    fraction = float(plan["training"].get("foreground_fraction", 0.34))
    calibration = sample_patches(calibration_samples, patch, CALIBRATION_WINDOWS, rng, fraction)[0]
    if len(plan["patch_size"]) == 2:  # 2D network: drop the length-1 depth axis
        calibration = calibration[:, :, 0]
    return np.ascontiguousarray(calibration), [sample.image for sample in check_samples[:CHECK_CASES]]


def remove_int8(folder: Path | str) -> None:
    """Delete int8 files left by an earlier training in this folder."""
    xml = Path(folder) / INT8_FILE
    xml.unlink(missing_ok=True)
    xml.with_suffix(".bin").unlink(missing_ok=True)


def _save(model: DeepModel, quantized, entry: dict) -> None:
    """Write (or remove) the int8 files, then model.json: a reader never sees an entry without its files."""
    import openvino as ov

    xml = model.folder / INT8_FILE
    if quantized is None:
        remove_int8(model.folder)
    else:
        tmp = model.folder / f".{xml.stem}.{os.getpid()}.xml"
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    model.meta["int8"] = entry
    write_text_atomic(model.folder / MODEL_JSON, json.dumps(model.meta, indent=1) + "\n")


@contextlib.contextmanager
def _quiet():
    """Silence NNCF's logging and progress bars."""
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
