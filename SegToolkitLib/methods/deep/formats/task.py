"""A task made of several nnU-Net models (parts) predicted into one label map with the task's class names and
values, such as TotalSegmentator's "total" (five parts, 117 classes).

``classes`` runs only the parts that hold the classes asked for; when the task names a locator (a fast,
coarse model of the same classes, for "total" TotalSegmentator's 6 mm model) and it is in the store, the locator
runs first and the parts then predict only the box around those classes (with a margin), as TotalSegmentator's
``roi_subset`` does. Later parts overwrite earlier ones where both find a structure (TotalSegmentator's order).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ....errors import InputError
from ....io import LabelMap, LabelTable
from ....progress import CancelToken, ProgressCallback, report, scaled

MARGIN_MM = 20.0


@dataclass
class TaskModel:
    """A multi-part task from the store: its parts are loaded when first needed."""

    folder: Path
    entry: dict
    device: str = "cpu"
    runtime: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def classes(self) -> dict[int, str]:
        return {int(k): v for k, v in self.entry["classes"].items()}

    @property
    def parts(self) -> list[dict]:
        return self.entry["parts"]

    def part_model(self, index: int):
        from .nnunet import load_nnunet

        if index not in self.runtime:
            self.runtime[index] = load_nnunet(self.folder / self.parts[index]["folder"], device=self.device)
        return self.runtime[index]


def class_values(task: TaskModel, classes: Sequence[str | int] | None) -> list[int]:
    """The task's label values for ``classes`` (names or values); all when None."""
    if classes is None:
        return sorted(task.classes)
    by_name = {name: value for value, name in task.classes.items()}
    values, unknown = [], []
    for item in classes:
        text = str(item).strip()
        if text.isdigit() and int(text) in task.classes:
            values.append(int(text))
        elif text in by_name:
            values.append(by_name[text])
        else:
            unknown.append(text)
    if unknown:
        raise InputError(f"{task.folder.name}: unknown class(es) {', '.join(unknown)}; see 'segtoolkit models info "
                         f"{task.folder.name}' for the {len(task.classes)} classes")
    return sorted(set(values))


def parts_needed(task: TaskModel, values: Sequence[int]) -> list[int]:
    names = {task.classes[v] for v in values}
    return [index for index, part in enumerate(task.parts) if names & set(part["classes"])]


def predict_task(task: TaskModel, images: sitk.Image | Sequence[sitk.Image], *, classes=None, tta: bool | None = None,
                 backend: str = "auto", probabilities: bool = False, uncertainty: bool = False,
                 largest_component: bool | None = None, name: str = "input",
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None):
    """Segment one case with every needed part and merge the labels into the task's values."""
    from ..inference import Prediction
    from .nnunet import predict_nnunet

    start = time.perf_counter()
    channels = [images] if isinstance(images, sitk.Image) else list(images)
    values = class_values(task, classes)
    needed = parts_needed(task, values)
    if (probabilities or uncertainty) and len(needed) > 1:
        raise InputError(f"{name}: probabilities and uncertainty come from one network; this task runs "
                         f"{len(needed)} parts for these classes (ask for classes of one part, or drop them)")
    reference = channels[0]
    region = None
    if classes is not None:
        region = locate(task, channels, values, backend, scaled(progress, 0.0, 0.15), cancel)
    cropped = [_crop(image, region) for image in channels] if region else channels
    merged = np.zeros(tuple(reversed(cropped[0].GetSize())), dtype=np.uint8 if max(task.classes) < 256 else
                      np.uint16)
    lookup_names = {name_: value for value, name_ in task.classes.items()}
    backends, extra = [], None
    first = 0.15 if region else 0.0
    for step, index in enumerate(needed):
        share = (1 - first) / len(needed)
        span = scaled(progress, first + share * step, first + share * (step + 1))
        model = task.part_model(index)
        report(span, 0.0, f"part {step + 1}/{len(needed)}: {task.parts[index]['folder'].split('/')[0]}", cancel)
        part = predict_nnunet(model, cropped, tta=tta, backend=backend, probabilities=probabilities,
                              uncertainty=uncertainty, largest_component=largest_component, name=name,
                              progress=span, cancel=cancel)
        backends.append(part.backend)
        extra = part
        local = sitk.GetArrayViewFromImage(part.label_map.image)
        table = np.zeros(max(model.labels) + 1, dtype=merged.dtype)
        for local_value, class_name in enumerate(task.parts[index]["classes"], start=1):
            value = lookup_names.get(class_name)
            if value is not None and value in values and local_value < len(table):
                table[local_value] = value
        mapped = table[local]
        merged[mapped > 0] = mapped[mapped > 0]
    labels = sitk.GetImageFromArray(merged)
    labels.CopyInformation(cropped[0])
    if region:
        labels = _paste(labels, reference)
    present = [v for v in values]
    table = LabelTable.from_names({v: task.classes[v] for v in present})
    result = Prediction(LabelMap(labels, table), backend="+".join(sorted(set(backends))) or backend)
    if extra is not None and not region:
        result.probabilities, result.uncertainty = extra.probabilities, extra.uncertainty
    result.seconds = time.perf_counter() - start
    report(progress, 1.0, "done", cancel)
    return result


def locate(task: TaskModel, channels: list[sitk.Image], values: list[int], backend: str,
           progress: ProgressCallback | None, cancel: CancelToken | None) -> tuple[list[int], list[int]] | None:
    """The index box (start, size) around ``values`` found by the task's locator model, with a margin; None
    when the task has no locator, it is not in the store, or it finds none of the classes."""
    from ..catalog import CATALOG
    from ..store import installed, model_path, verify_installed

    locator = task.entry.get("locator") or CATALOG.get(task.folder.name, {}).get("locator")
    if not locator or not installed(locator):
        report(progress, 1.0, "no locator model in the store: predicting the whole image", cancel)
        return None
    key = ("locator", locator)
    if key not in task.runtime:
        task.runtime[key] = TaskModel(model_path(locator), verify_installed(model_path(locator)), task.device)
    finder = task.runtime[key]
    names = {task.classes[v] for v in values}
    wanted = [v for v, n in finder.classes.items() if n in names]
    found = predict_task(finder, channels, backend=backend, progress=progress, cancel=cancel)
    array = sitk.GetArrayViewFromImage(found.label_map.image)
    mask = np.isin(array, wanted)
    if not mask.any():
        return None
    image = channels[0]
    spacing = list(reversed(image.GetSpacing()))
    lows, highs = [], []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        margin = int(np.ceil(MARGIN_MM / spacing[axis]))
        lows.append(max(0, int(present[0]) - margin))
        highs.append(min(mask.shape[axis], int(present[-1]) + 1 + margin))
    start = list(reversed(lows))
    size = [h - lo for h, lo in zip(reversed(highs), reversed(lows))]
    return start, size


def _crop(image: sitk.Image, region: tuple[list[int], list[int]]) -> sitk.Image:
    start, size = region
    return sitk.RegionOfInterest(image, [int(s) for s in size], [int(s) for s in start])


def _paste(labels: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """``labels`` (on a sub-grid of ``reference``) placed on the full grid, background elsewhere."""
    full = sitk.Image(reference.GetSize(), labels.GetPixelID())
    full.CopyInformation(reference)
    start = reference.TransformPhysicalPointToIndex(labels.GetOrigin())
    return sitk.Paste(full, labels, labels.GetSize(), [0] * labels.GetDimension(), start)
