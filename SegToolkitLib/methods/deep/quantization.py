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
from .backends import compile_for_cpu, publish
from .model_package import INT8_FILE, MODEL_JSON, DeepModel, int8_path, int8_ready, weights_sha256

__all__ = ["INT8_FILE", "MIN_AGREEMENT", "describe", "int8_path", "int8_ready", "quantization_available",
           "quantize_model", "remove_int8", "training_windows"]
MIN_AGREEMENT = 0.995
CALIBRATION_WINDOWS = 32
CHECK_CASES = 2
# how many of the finest-resolution layers stay in floating point at each attempt (0: the whole network in int8)
F32_LAYER_STEPS = (0, 1, 2, 3, 4, 6)


def quantization_available() -> bool:
    """Whether OpenVINO and NNCF are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def require_quantization() -> None:
    if not quantization_available():
        raise InputError("int8 quantization needs the openvino and nncf packages (pip install openvino nncf)")


def quantize_model(model: DeepModel, calibration: np.ndarray, check: list[np.ndarray],
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
    """Quantize the network to int8 on ``calibration`` windows (N, C, *window) and compare its sliding-window labels
    with fp32 on the ``check`` cases (working-grid arrays (C, D, H, W)). While a label disagrees (Dice < 0.995),
    quantize again with more of the finest-resolution layers left in floating point (``F32_LAYER_STEPS``); the first
    network that agrees is saved into the model folder. Returns the ``int8`` entry written to model.json
    (``accepted`` says whether an int8 network is used)."""
    require_quantization()
    from .inference import openvino_model, sliding_window

    window = [1] + [int(n) for n in calibration.shape[1:]]
    report(progress, 0.0, "int8: converting the network", cancel)
    converted = openvino_model(model, window)
    reference = [sliding_window(model, array, False, "torch", cancel=cancel).argmax(0) for array in check]

    def agreement_of(int8_run) -> dict:
        return label_agreement(model, reference, int8_run, check, cancel)

    quantized, found = search_int8(converted, calibration, agreement_of, progress, cancel)
    entry = {"file": INT8_FILE, "window": window, "weights_sha256": weights_sha256(model), **found,
             "check_cases": len(check)}
    _save(model, quantized, entry)
    report(progress, 1.0, describe(entry), cancel)
    return entry


def search_int8(converted, calibration: np.ndarray, agreement_of, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> tuple[object | None, dict]:
    """Quantize ``converted`` (an OpenVINO model) on ``calibration`` windows (N, C, *window); ``agreement_of`` gets
    the compiled int8 network and returns the Dice per label against fp32. While a label disagrees
    (< ``MIN_AGREEMENT``), quantize again with more of the finest-resolution layers left in floating point
    (``F32_LAYER_STEPS``). Returns the first network that agrees (None when none does) and what was found."""
    require_quantization()
    finest = layers_finest_first(converted)
    windows = [calibration[i:i + 1] for i in range(len(calibration))]
    steps = [n for n in F32_LAYER_STEPS if n <= len(finest)]
    for attempt, kept in enumerate(steps):
        report(progress, 0.1 + 0.85 * attempt / len(steps),
               f"int8: calibrating on {len(calibration)} windows ({kept} layers kept in f32)", cancel)
        quantized = _quantize(converted, windows, finest[:kept])
        agreement = agreement_of(compile_for_cpu(quantized))
        defined = [value for value in agreement.values() if value is not None]
        accepted = bool(defined) and min(defined) >= MIN_AGREEMENT
        if accepted:
            break
    found = {"accepted": accepted, "agreement_dice": agreement, "min_agreement": MIN_AGREEMENT,
             "f32_layers": finest[:kept], "attempts": attempt + 1, "calibration_windows": len(calibration),
             "preset": "mixed", "activation_ranges": "histogram", "openvino": version("openvino"),
             "nncf": version("nncf")}
    return (quantized if accepted else None), found


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


def training_windows(calibration_samples: list, check_samples: list, plan: dict, patch: tuple[int, int, int],
                     seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Calibration windows (N, C, *network window) from preprocessed training cases (objects with ``image``,
    ``foreground`` and ``annotated`` as training prepares them): the plan's foreground fraction of them centred on
    a foreground voxel, as in training; and the check cases' arrays (at most ``CHECK_CASES``)."""
    rng = np.random.default_rng(seed)
    fraction = float(plan["training"].get("foreground_fraction", 0.34))
    forced = math.ceil(CALIBRATION_WINDOWS * fraction)
    windows = []
    for index in range(CALIBRATION_WINDOWS):
        sample = calibration_samples[int(rng.integers(len(calibration_samples)))]
        classes = [c for c in sample.foreground if len(c)]
        pool = classes[int(rng.integers(len(classes)))] if index < forced and classes else sample.annotated
        windows.append(window_around(sample.image, pool[int(rng.integers(len(pool)))], patch, rng))
    calibration = np.stack(windows)
    if len(plan["patch_size"]) == 2:  # 2D network: drop the length-1 depth axis
        calibration = calibration[:, :, 0]
    return np.ascontiguousarray(calibration), [sample.image for sample in check_samples[:CHECK_CASES]]


def window_around(array: np.ndarray, centre, window: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A window of ``array`` (C, *spatial) around ``centre`` (jittered by up to a quarter window), kept inside the
    array where it is large enough and padded with 0 where it is smaller."""
    shape = array.shape[1:]
    start = [int(c) - w // 2 + (int(rng.integers(-(w // 4), w // 4 + 1)) if w > 3 else 0)
             for c, w in zip(centre, window)]
    start = [int(np.clip(s, min(0, n - w), max(0, n - w))) for s, n, w in zip(start, shape, window)]
    out = np.zeros((array.shape[0],) + tuple(window), dtype=np.float32)
    source, target = [], []
    for first, size, width in zip(start, shape, window):
        lo, hi = max(0, first), min(size, first + width)
        source.append(slice(lo, hi))
        target.append(slice(lo - first, hi - first))
    out[(slice(None), *target)] = array[(slice(None), *source)]
    return out


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
        publish(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        publish(tmp, xml)
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
