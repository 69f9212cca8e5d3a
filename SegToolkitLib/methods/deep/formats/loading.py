"""Open a model of any format (detected by itself) and predict with it.

Python API::

    model = open_model("total")                     # a store name, or a folder / zip path
    result = predict_any(model, image, classes=["liver", "spleen"])
"""


from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ....errors import InputError
from ....progress import CancelToken, ProgressCallback, report, scaled


def detect_format(path: Path) -> str:
    """``segtoolkit``, ``store`` (a model folder of the store), ``nnunet`` or ``zip``; :class:`InputError` else."""
    from ..store import STORE_JSON
    from . import nnunet_files

    if path.is_file() and path.suffix.lower() == ".zip":
        return "zip"
    if (path / STORE_JSON).is_file():
        return "store"
    if (path / "model.json").is_file():
        return "segtoolkit"
    if path.is_dir():
        if nnunet_files.is_trained_folder(path) or any(
                nnunet_files.is_trained_folder(child) for child in path.iterdir() if child.is_dir()):
            return "nnunet"
    raise InputError(f"{path}: not a SegToolkit model folder (no model.json), nor an nnU-Net model (no "
                     "plans.json/dataset.json) or a zip of either; train one with 'segtoolkit train' or see "
                     "'segtoolkit models list'")


def open_model(spec: str | Path, configuration: str | None = None, folds: Sequence[str] | None = None,
               checkpoint: str = "final", device: str = "cpu", progress: ProgressCallback | None = None,
               cancel: CancelToken | None = None):
    """Load a model given as a path (any format above) or a store name: a ``DeepModel``, an
    :class:`~.nnunet.NnunetModel` or a :class:`~.task.TaskModel`."""
    from ..backends import resolve_device
    from ..model_package import load_model
    from ..store import resolve_model, verify_installed
    from .nnunet import load_nnunet
    from .task import TaskModel

    device = resolve_device(device)
    path = resolve_model(spec)
    kind = detect_format(path)
    nnunet_options = configuration is not None or folds is not None or checkpoint != "final"
    if kind == "zip":
        path = unpacked_zip(path, progress, cancel)
        kind = "store"
    if kind == "store":
        entry = verify_installed(path)
        _check_inside(path, entry)
        if entry["format"] == "segtoolkit":
            kind = "segtoolkit"
        elif entry["format"] == "nnunet":
            return load_nnunet(path / entry["folder"], configuration, folds, checkpoint, device)
        else:
            if nnunet_options:
                raise InputError(f"{path}: --configuration/--folds/--checkpoint apply to single nnU-Net models, "
                                 "not to a task of several")
            return TaskModel(path, entry, device)
    if kind == "segtoolkit":
        if nnunet_options:
            raise InputError(f"{path}: --configuration/--folds/--checkpoint apply to nnU-Net models; this is a "
                             "SegToolkit model")
        return load_model(path, device)
    return load_nnunet(path, configuration, folds, checkpoint, device)


def _check_inside(path: Path, entry: dict) -> None:
    """Folders named in ``store.json`` must lie inside the model folder (a copied store folder is not trusted)."""
    from ..model_package import inside_folder

    if entry.get("format") == "nnunet":
        inside_folder(path, entry.get("folder"), "model folder")
    for part in entry.get("parts", []) if entry.get("format") == "task" else []:
        inside_folder(path, part.get("folder") if isinstance(part, dict) else None, "part folder")


def unpacked_zip(path: Path, progress: ProgressCallback | None, cancel: CancelToken | None) -> Path:
    """A zip given to ``predict -m``: unpacked and converted once into the store's cache (keyed by its SHA-256)."""
    from ..backends import file_sha256
    from ..store import STORE_JSON, install, store_home

    digest = file_sha256(path)[:16]
    name = f"zip-{digest}"
    cached = store_home() / "models" / name
    if (cached / STORE_JSON).is_file():
        return cached
    report(progress, 0.0, f"unpacking {path.name} into the model store (once)", cancel)
    return install(name, [path], source=f"unpacked from {path.name}", progress=scaled(progress, 0.0, 0.05),
                   cancel=cancel)


def predict_any(model, images, *, classes: Sequence[str | int] | None = None, **options):
    """Predict with a model of any format (``options`` as :func:`..inference.predict`; ``classes``: names or label
    values to keep, for nnU-Net models and tasks)."""
    from ..inference import predict
    from ..model_package import DeepModel
    from .nnunet import NnunetModel, predict_nnunet
    from .task import TaskModel, predict_task

    if isinstance(model, TaskModel):
        _drop_unsupported(options, "a task")
        return predict_task(model, images, classes=classes, **options)
    if isinstance(model, NnunetModel):
        _drop_unsupported(options, "an nnU-Net model")
        keep = None
        if classes is not None:
            keep = nnunet_class_values(model, classes)
        return predict_nnunet(model, images, keep_classes=keep, **options)
    if isinstance(model, DeepModel):
        if classes is not None:
            raise InputError("--classes applies to nnU-Net models and tasks; a SegToolkit model predicts its labels")
        return predict(model, images, **options)
    raise TypeError(f"not a model: {type(model).__name__}")


def _drop_unsupported(options: dict, what: str) -> None:
    if options.pop("fill_holes", None):
        raise InputError(f"--fill-holes applies to SegToolkit models, not to {what}")
    if options.pop("uncertainty_method", "entropy") != "entropy":
        raise InputError(f"the disagreement uncertainty is not available for {what}; use entropy")
    options.pop("device", None)


def nnunet_class_values(model, classes: Sequence[str | int]) -> list[int]:
    by_name = {name: value for value, name in model.labels.items()}
    values, unknown = [], []
    for item in classes:
        text = str(item).strip()
        if text.isdigit() and int(text) in model.labels and int(text) > 0:
            values.append(int(text))
        elif text in by_name and by_name[text] > 0:
            values.append(by_name[text])
        else:
            unknown.append(text)
    if unknown:
        raise InputError(f"{model.folder}: unknown class(es) {', '.join(unknown)}; the model has "
                         f"{', '.join(n for v, n in model.labels.items() if v)}")
    return values


def model_channels(model) -> int:
    """How many input channels a loaded model of any format takes."""
    from .task import TaskModel

    if isinstance(model, TaskModel):
        return len(model.part_model(0).channels)
    return len(model.channels)


def model_sha256(model) -> str:
    """A SHA-256 naming the exact weights of a loaded model of any format (for provenance in the outputs)."""
    import hashlib

    from ..backends import file_sha256
    from ..model_package import DeepModel, weights_sha256
    from .nnunet import NnunetModel, fold_key

    if isinstance(model, DeepModel):
        return weights_sha256(model)
    if isinstance(model, NnunetModel):
        keys = [fold_key(model, index) for index in range(len(model.networks))]
    else:
        keys = [file_sha256(model.folder / "store.json")]
    return keys[0] if len(keys) == 1 else hashlib.sha256("".join(keys).encode()).hexdigest()


def model_classes(model) -> dict[int, str]:
    """Label value -> class name of a loaded model of any format (background left out)."""
    from .nnunet import NnunetModel
    from .task import TaskModel

    if isinstance(model, TaskModel):
        return model.classes
    if isinstance(model, NnunetModel):
        return {v: n for v, n in model.labels.items() if v}
    return {label.value: label.name for label in model.labels}
