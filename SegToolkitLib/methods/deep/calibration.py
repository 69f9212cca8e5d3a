"""int8 for an existing SegToolkit model: calibrated on windows of its training dataset (``segtoolkit quantize -m
MODEL DATA``). Training adds the int8 network itself; this is for older models or a copy on another machine.
Imported models (nnU-Net, TotalSegmentator) have no training data: they calibrate on images the user names (see
:func:`SegToolkitLib.methods.deep.formats.quantize_imported`).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ...progress import CancelToken, ProgressCallback
from .dataset import Dataset, load_dataset
from .model_package import load_model
from .quantization import quantize_model, require_quantization, training_windows
from .training import array_patch, class_values_of, prepare_samples


def quantize_folder(model_dir: Path | str, dataset: Dataset | Path | str, seed: int = 0,
                    progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict:
    """Calibrate on the model's training cases in ``dataset`` and check on its validation cases (cases the model
    never saw, when the dataset is another one)."""
    require_quantization()  # before preparing any sample
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
