"""The work done for one case on a Dask worker: read, segment (or read the label map), write the label map,
measure, collect the case's QC values, draw its thumbnail and write its completion record (last).

Every error of a case is caught here and recorded (``status: failed`` with the one-line error): one bad case
never stops the cohort. Models and atlases are loaded once per worker process and kept (:func:`load_task_model`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError, OutputError, SegToolkitError
from ..io import LabelMap, LabelTable, check_same_grid, read_label_map, read_scalar_image, write_label_map
from ..measurement.boundary import labels_touching_edge
from ..measurement.shape import measure
from .cases import Case, parse_seeds, split_series
from .choices import TASKS
from .records import DONE, FAILED, LABELS, THUMBNAILS, output_entry, write_record
from .thumbnails import write_thumbnail

INTENSITY_SAMPLE_VOXELS = 1 << 20

_CACHE: dict = {}  # per worker process: loaded models and atlases, kept between cases
_CACHE_LOCK = threading.Lock()


@dataclass
class TaskSpec:
    """What to do with every case; pickled to the workers."""

    task: str
    outdir: str
    options: dict = field(default_factory=dict)
    format: str = "nii.gz"
    threads: int = 1  # ITK / torch threads per worker process (0: unchanged)
    run_id: str = ""

    def label_path(self, case: str) -> Path:
        return Path(self.outdir) / LABELS / f"{case}.{self.format}"


def run_case(case: Case, spec: TaskSpec) -> dict:
    """Process one case and write its record; never raises for a problem of the case itself."""
    started = time.time()
    clock = time.perf_counter()
    record = {"case": case.case, "status": FAILED, "run_id": spec.run_id, "task": spec.task,
              "worker": f"{socket.gethostname()}:{os.getpid()}", "started": started,
              "input_fingerprint": case.fingerprint(), "inputs": case.input_paths(), "group": case.group}
    try:
        _limit_threads(spec.threads, spec.task == "predict")
        record.update(_process(case, spec))
        record["status"] = DONE
    except SegToolkitError as error:
        record["error"] = str(error)
    except MemoryError:
        record["error"] = f"{case.case}: not enough memory for this case; give the workers more memory"
    except Exception as error:  # noqa: BLE001 - a cohort records every failure and goes on
        record["error"] = f"{case.case}: unexpected error {type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exc(limit=8)
    record["seconds"] = round(time.perf_counter() - clock, 3)
    if record["status"] == FAILED:  # a failed case leaves no label map or thumbnail that could pass for results
        for path in (spec.label_path(case.case), Path(spec.outdir) / THUMBNAILS / f"{case.case}.png"):
            path.unlink(missing_ok=True)
    write_record(Path(spec.outdir), record)
    return record


def _process(case: Case, spec: TaskSpec) -> dict:
    outdir = Path(spec.outdir)
    channels = [_read_channel(text, case) for text in case.images]
    image = channels[0] if channels else None
    result: dict = {"image": image_summary(image) if image is not None else None}
    if spec.task == "measure":
        label_map = _read_measured_labels(case, spec)
        outputs = {}
    else:
        label_map, details = segment(spec, case, channels)
        result.update(details)
        path = spec.label_path(case.case)
        write_labels(label_map, path, spec, case)
        outputs = {"label": output_entry(outdir, path)}
    if image is not None:
        check_same_grid(image, label_map.image, f"{case.case}: image {case.images[0]}", "its label map")
    report = measure(label_map, image)
    rows = [{"case": case.case, **row} for row in report.rows()]
    add_label_qc(rows, label_map.image)
    if case.reference:
        add_reference_metrics(rows, label_map, case.reference)
    result["measurements"] = rows
    result["labels_present"] = label_map.present_values()
    thumbnail = outdir / THUMBNAILS / f"{case.case}.png"
    ct_like = bool(result["image"] and result["image"]["intensity_p1"] is not None
                   and result["image"]["intensity_p1"] < -500)
    write_thumbnail(image, label_map.image, label_map.labels, thumbnail, ct_like)
    outputs["thumbnail"] = output_entry(outdir, thumbnail)
    result["outputs"] = outputs
    return result


# --- segmentation -----------------------------------------------------------------------------------------

def segment(spec: TaskSpec, case: Case, channels: list[sitk.Image]) -> tuple[LabelMap, dict]:
    """Run the task's method on one case; returns the label map and task details for the record."""
    if not channels:
        raise InputError(f"{case.case}: no image given")
    options = spec.options
    if spec.task == "predict":
        return _predict(options, case, channels)
    if spec.task == "atlas":
        return _atlas(options, case, channels[0]), {}
    seeds = parse_seeds(case.seeds)
    if not seeds:
        raise InputError(f"{case.case}: no seeds; give LPS points x,y,z (separated by ';') in the manifest's "
                         f"seeds column for --task {spec.task}")
    image = channels[0]
    if spec.task == "grow":
        from ..methods.classic import grow

        mask = grow(image, seeds, options.get("method", "connected"), lower=options.get("lower"),
                    upper=options.get("upper"), geometry=options.get("geometry", "auto"))
        return LabelMap(mask, _single_label(mask, options.get("label_name") or "grown region")), {}
    if spec.task == "snake":
        from ..methods.classic import snake

        mask = snake(image, seeds, iterations=int(options.get("iterations", 2000)),
                     model=options.get("snake_model", "geodesic"), feature=options.get("feature", "edge"),
                     expansion=options.get("expansion"), smoothness=float(options.get("smoothness", 0.3)),
                     edge_attraction=float(options.get("edge_attraction", 1.0)), radius_mm=options.get("radius"),
                     shape=options.get("shape", "auto"))
        return LabelMap(mask, _single_label(mask, options.get("label_name") or "snake")), {}
    raise InputError(f"task {spec.task!r}: choose one of {', '.join(TASKS)}")


def load_task_model(spec: str, device: str = "auto"):
    """The model ``spec`` (any format ``predict`` takes: a folder, an nnU-Net folder or zip, a store name), loaded
    once per worker process and kept for its next cases."""
    path = Path(spec)
    key = ("model", str(path.resolve()) if path.exists() else str(spec), device)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from ..methods.deep import require_deep

            require_deep()
            from ..methods.deep.formats.loading import open_model

            _CACHE[key] = (open_model(spec, device=device), f"{os.getpid()}-{time.time_ns()}")
        return _CACHE[key]


def _predict(options: dict, case: Case, channels: list[sitk.Image]) -> tuple[LabelMap, dict]:
    from ..methods.deep.dataset import is_ct_name
    from ..methods.deep.formats.loading import model_channels, predict_any

    model, load_id = load_task_model(options["model"], options.get("device", "auto"))
    needed = model_channels(model)
    if len(channels) != needed:
        raise InputError(f"{case.case}: {len(channels)} image channel(s) given but the model needs {needed}; "
                         "add image_0001... columns")
    method = options.get("uncertainty") or None
    result = predict_any(model, channels, tta=options.get("tta"), uncertainty=method is not None,
                         uncertainty_method=method or "entropy", largest_component=options.get("largest_component"),
                         fill_holes=options.get("fill_holes"), backend=options.get("backend", "auto"), name=case.case)
    first_channel = (getattr(model, "channels", None) or ["unknown"])[0]
    details = {"model_load_id": load_id, "backend": result.backend,
               "model_modality": "CT" if is_ct_name(first_channel) else first_channel}
    if result.uncertainty is not None:
        details["uncertainty_mean"] = _mean_inside(result.uncertainty, result.label_map.image)
    return result.label_map, details


def _atlas(options: dict, case: Case, target: sitk.Image) -> LabelMap:
    from ..methods.atlas.multi_atlas import RegistrationOptions, segment_with_atlases
    from ..methods.atlas.strategy import AUTO

    atlases = _load_atlases(tuple(tuple(pair) for pair in options["atlases"]), options.get("labels_json"))
    registration = RegistrationOptions(**options.get("registration", {}))
    return segment_with_atlases(target, atlases, options.get("fusion", AUTO), registration, 1,
                                target_name=case.case).label_map


def _load_atlases(pairs: tuple, labels_json: str | None) -> list:
    """The atlases, read once per worker process."""
    key = ("atlases", pairs, labels_json)
    with _CACHE_LOCK:
        if key not in _CACHE:
            from ..methods.atlas.multi_atlas import load_atlas

            table = LabelTable.from_json(labels_json) if labels_json else None
            atlases = [load_atlas(image, labels, table) for image, labels in pairs]
            for number, atlas in enumerate(atlases):
                atlas.name = f"atlas{number + 1}"
            _CACHE[key] = atlases
        return _CACHE[key]


def _single_label(mask: sitk.Image, name: str) -> LabelTable:
    table = LabelTable()
    table.add(1, name)
    return table


def _read_channel(text: str, case: Case) -> sitk.Image:
    path, series = split_series(text)
    return read_scalar_image(path, series)


def _read_measured_labels(case: Case, spec: TaskSpec) -> LabelMap:
    if not case.labels:
        raise InputError(f"{case.case}: no label map; the measure task needs a labels column in the manifest")
    names = spec.options.get("labels_json")
    return read_label_map(case.labels, LabelTable.from_json(names) if names else None)


def write_labels(label_map: LabelMap, path: Path, spec: TaskSpec, case: Case) -> None:
    """Write the case's label map: NIfTI / .seg.nrrd (header read back), or a DICOM SEG of its DICOM series
    (the SEG writer reads its file back itself)."""
    if spec.format != "dcm":
        write_label_map(label_map, path)
        _verify_written(path, label_map.image)
        return
    from ..io.dicom_seg import DicomOutput

    folder, series = split_series(case.images[0]) if case.images else ("", None)
    if not Path(folder).is_dir():
        raise InputError(f"{case.case}: --format dcm writes a DICOM SEG of the case's DICOM series, but its image "
                         f"{folder or '(none)'} is not a DICOM folder; use --format nii.gz or seg.nrrd")
    model = spec.options.get("model")
    write_label_map(label_map, path, dicom=DicomOutput(reference=Path(folder), series_uid=series, method=spec.task,
                                                      model_name=Path(model).name if model else None,
                                                      model_hash=spec.options.get("model_sha256")))


def _verify_written(path: Path, image: sitk.Image) -> None:
    """Read the written file's header back: its size must be the label map's."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise OutputError(f"{path}: the label map written cannot be read back; check the disk") from None
    if tuple(reader.GetSize()[: image.GetDimension()]) != tuple(image.GetSize()):
        raise OutputError(f"{path}: the label map written has size {reader.GetSize()}, not {image.GetSize()}")


def _limit_threads(threads: int, deep: bool) -> None:
    """Share the cores among the worker processes (0: leave the process's settings alone, for in-process
    workers)."""
    if threads <= 0:
        return
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    if deep:
        import torch

        torch.set_num_threads(int(threads))


# --- per-case QC values -----------------------------------------------------------------------------------

def image_summary(image: sitk.Image) -> dict:
    """Geometry and intensity percentiles of the input image (for the cohort's input checks)."""
    size = list(image.GetSize())
    spacing = [float(s) for s in image.GetSpacing()]
    array = sitk.GetArrayViewFromImage(image)
    step = max(1, int(round((array.size / INTENSITY_SAMPLE_VOXELS) ** (1 / array.ndim))))
    sample = np.asarray(array[(slice(None, None, step),) * array.ndim], dtype=np.float64)
    finite = sample[np.isfinite(sample)]
    p1, p50, p99 = (float(v) for v in np.percentile(finite, (1, 50, 99))) if finite.size else (None,) * 3
    return {"dimension": image.GetDimension(), "size": size, "spacing": spacing,
            "origin": [float(v) for v in image.GetOrigin()], "direction": [float(v) for v in image.GetDirection()],
            "orientation": orientation_code(image), "fov_mm": [n * s for n, s in zip(size, spacing)],
            "slices": _slice_count(image), "intensity_p1": p1, "intensity_p50": p50, "intensity_p99": p99}


def orientation_code(image: sitk.Image) -> str:
    """Where each index axis (i, j, k) points in the patient: L/R, P/A, S/I (identity direction = ``LPS``)."""
    dimension = image.GetDimension()
    matrix = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    letters = ("LR", "PA", "SI")
    code = ""
    for column in range(dimension):
        axis = int(np.argmax(np.abs(matrix[:, column])))
        code += letters[axis][0 if matrix[axis, column] > 0 else 1]
    return code


def _slice_count(image: sitk.Image) -> int:
    """The number of slices: the size along the index axis closest to the patient's z axis (3D)."""
    if image.GetDimension() != 3:
        return 1
    matrix = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return int(image.GetSize()[int(np.argmax(np.abs(matrix[2, :])))])


def add_label_qc(rows: list[dict], label_image: sitk.Image) -> None:
    """Add ``touches_edge`` (faces), ``components`` and ``holes`` to each measured label's row."""
    array = sitk.GetArrayViewFromImage(label_image)
    edges = labels_touching_edge(label_image)
    boxes = ndimage.find_objects(np.asarray(array)) if array.size else []
    for row in rows:
        value = int(row["label"])
        box = boxes[value - 1] if 0 < value <= len(boxes) else None
        row["touches_edge"] = " ".join(edges.get(value, [])) if box is not None else ""
        if box is None:
            row["components"], row["holes"] = 0, 0
            continue
        mask = np.pad(np.asarray(array[box]) == value, 1)
        full = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
        row["components"] = int(ndimage.label(mask, structure=full)[1])
        background, count = ndimage.label(~mask)  # face connectivity: a hole is a closed cavity
        outside = background[(0,) * mask.ndim]
        row["holes"] = int(count - (1 if outside else 0))


def add_reference_metrics(rows: list[dict], label_map: LabelMap, reference_path: str) -> None:
    """Dice and HD95 of each label against the case's reference label map (``dice``, ``hd95_mm``)."""
    from ..measurement.evaluation import compare

    reference = read_label_map(reference_path)
    metrics = {row["label"]: row for row in compare(label_map, reference, mean=False)}
    for row in rows:
        match = metrics.get(row["label"], {})
        row["dice"] = match.get("dice")
        row["hd95_mm"] = match.get("hd95_mm")


def _mean_inside(values: sitk.Image, labels: sitk.Image) -> float | None:
    """Mean of ``values`` over the labelled voxels (None when nothing is labelled)."""
    mask = sitk.GetArrayViewFromImage(labels) > 0
    if not mask.any():
        return None
    return float(np.asarray(sitk.GetArrayViewFromImage(values))[mask].mean())
