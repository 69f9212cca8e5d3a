"""Training datasets: a folder of images and label maps with a ``dataset.json``.

Two layouts are accepted as they are:

* SegToolkit / shared-data layout: ``images/<case>.nii.gz`` and ``labels/<case>.nii.gz``; extra channels as
  ``images/<case>_0001.nii.gz``, ... (or per case under ``extra_images`` in ``dataset.json``'s ``cases`` list);
  ``dataset.json`` maps label values to names (``{"labels": {"1": "liver"}}``), may name the ``modality`` or
  ``channel_names``, and may list ``cases`` with per-case notes. A case note ``annotated_slices_0_based``
  (label value -> annotated slice indices along the third image axis) marks the other slices as unannotated.
* nnU-Net v2 raw layout: ``imagesTr/<case>_0000.nii.gz`` (+ ``_0001``...), ``labelsTr/<case>.nii.gz`` and
  nnU-Net's ``dataset.json`` (``channel_names``, ``labels`` as name -> value, optional ``ignore`` label).

Voxels carrying the ignore value (default 255, or nnU-Net's ``ignore`` label) are not annotated: they take no part
in the loss or in validation. Every case's image channels are brought onto its primary channel's grid.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ...errors import InputError
from ...io import LabelTable, check_same_grid, read_image
from ...io.atomic import compound_suffix
from ...io.json_files import interpreting, read_json, require

DEFAULT_IGNORE_LABEL = 255
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_CHANNEL_PATTERN = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

log = logging.getLogger(__name__)


@dataclass
class Case:
    """One training case: its channel files, its label file and which slices are annotated (None = all)."""

    name: str
    images: list[Path]
    label: Path
    annotated_slices: list[int] | None = None
    label_slices: dict[int, list[int]] | None = None  # label value -> the slices where it was drawn (or checked)

    def partly_annotated_slices(self, depth: int) -> dict[int, list[int]]:
        """Slices where some labels were drawn and others not (as end-systole with only the endocardium): slice
        -> the label values annotated there. Their other voxels are known to be none of those labels."""
        if not self.label_slices:
            return {}
        result: dict[int, list[int]] = {}
        for value, slices in self.label_slices.items():
            for index in slices:
                if 0 <= index < depth:
                    result.setdefault(index, []).append(value)
        return {index: sorted(values) for index, values in sorted(result.items())
                if len(values) < len(self.label_slices)}


@dataclass
class Dataset:
    """A training dataset: cases, label names, channel names and the value that marks unannotated voxels."""

    root: Path
    cases: list[Case]
    labels: LabelTable
    channels: list[str]
    modality: str = ""
    ignore_label: int = DEFAULT_IGNORE_LABEL
    dimension: int = 3
    notes: dict = field(default_factory=dict)

    @property
    def is_ct(self) -> bool:
        """True when the primary channel is CT (drives the CT intensity normalisation)."""
        return is_ct_name(self.channels[0] if self.channels else self.modality) or is_ct_name(self.modality)

    def load_case(self, case: Case) -> tuple[list[sitk.Image], np.ndarray]:
        """The case's channels (on the primary grid, float32) and its label array (ignore value where
        unannotated), after checking the labels against the declared set."""
        images = [read_image(path) for path in case.images]
        primary = images[0]
        for index, path in enumerate(case.images):
            if images[index].GetNumberOfComponentsPerPixel() != 1:
                raise InputError(f"{path}: has several values per voxel; give each channel as its own file")
        images = [sitk.Cast(primary, sitk.sitkFloat32)] + [_onto_grid(image, primary) for image in images[1:]]
        label_image = read_image(case.label)
        # the whole grid, not only the size: a label map shifted or scaled against its image teaches wrong outlines
        check_same_grid(label_image, primary, str(case.label), f"its image {case.images[0].name}")
        labels = sitk.GetArrayFromImage(label_image)
        if np.issubdtype(labels.dtype, np.floating) and np.any(labels != np.round(labels)):
            raise InputError(f"{case.label}: label map has non-integer values")
        labels = labels.astype(np.int32)
        self._check_label_values(case, labels)
        if case.annotated_slices is not None and labels.ndim == 3:
            unannotated = np.ones(labels.shape[0], dtype=bool)
            unannotated[[s for s in case.annotated_slices if 0 <= s < labels.shape[0]]] = False
            # Keep drawn labels on partly annotated slices (positive examples), drop their unknown background.
            labels[unannotated[:, None, None] & (labels == 0)] = self.ignore_label
        return images, labels

    def _check_label_values(self, case: Case, labels: np.ndarray) -> None:
        allowed = set(self.labels.values()) | {0, self.ignore_label}
        present = set(np.unique(labels).tolist())
        unknown = sorted(present - allowed)
        if unknown:
            raise InputError(f"{case.label}: label values {unknown} are not declared in {self.root / 'dataset.json'}"
                             f" (declared: {sorted(allowed - {self.ignore_label})}, ignore {self.ignore_label}); "
                             "add them to its labels or fix the label map")


def is_ct_name(text: str) -> bool:
    """Whether a modality or channel name denotes CT."""
    return bool(re.search(r"(^|[^a-z])ct([^a-z]|$)", text.lower()))


LAYOUT_HELP = ("DATA is a folder with images/<case>.nii.gz, labels/<case>.nii.gz (same grid as the image; 0 = "
               "background) and dataset.json naming the labels ({\"labels\": {\"1\": \"liver\"}}); extra "
               "channels as images/<case>_0001.nii.gz; or nnU-Net's imagesTr/<case>_0000.nii.gz, labelsTr/ and "
               "dataset.json")


def load_dataset(folder: Path | str, ignore_label: int | None = None, exclude: Sequence[str] = ()) -> Dataset:
    """Read a dataset folder in either accepted layout; raise :class:`InputError` when it is empty or broken.

    Cases named in ``exclude`` are left out (held out for testing)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: dataset folder not found")
    if not (folder / "imagesTr").is_dir() and not (folder / "images").is_dir():
        raise InputError(f"{folder}: not a dataset folder; {LAYOUT_HELP}")
    meta = _read_json(folder / "dataset.json")
    with interpreting(folder / "dataset.json", "dataset description", "see the layout in 'segtoolkit train --help'"):
        if (folder / "imagesTr").is_dir():
            dataset = _load_nnunet(folder, meta, ignore_label)
        else:
            dataset = _load_simple(folder, meta, ignore_label)
    dataset.cases = _without(dataset.cases, exclude, folder)
    if not dataset.cases:
        raise InputError(f"{folder}: dataset holds no cases with both an image and a label map")
    counts = {len(case.images) for case in dataset.cases}
    if len(counts) != 1:
        raise InputError(f"{folder}: cases have different numbers of channels ({sorted(counts)}); every case needs "
                         "the same channels")
    return dataset


def _without(cases: list[Case], exclude: Sequence[str], folder: Path) -> list[Case]:
    """``cases`` without those named in ``exclude`` (every name must be a case of the dataset)."""
    names = {case.name for case in cases}
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise InputError(f"{folder}: cannot exclude {', '.join(unknown)}: no such case (cases: "
                         f"{', '.join(sorted(names)[:10])}{' ...' if len(names) > 10 else ''})")
    return [case for case in cases if case.name not in set(exclude)]


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: dataset.json not found; it must name the labels (e.g. {{\"labels\": "
                         "{\"1\": \"liver\"}})")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
        raise InputError(f"{path}: needs a \"labels\" object mapping label values to names")
    return data


def _label_table(meta: dict, source: Path, ignore_label: int | None) -> tuple[LabelTable, int]:
    """Label names without the ignore entry, and the ignore value (argument > dataset.json > default)."""
    entries = dict(meta["labels"])
    declared_ignore = entries.pop("ignore", None)
    if ignore_label is None:
        ignore_label = int(declared_ignore) if declared_ignore is not None else int(
            meta.get("ignore_label", DEFAULT_IGNORE_LABEL))
    table = LabelTable.from_mapping(entries, str(source))
    if ignore_label in table:
        raise InputError(f"{source}: ignore value {ignore_label} is also a declared label; choose another "
                         "ignore value")
    return table, ignore_label


def _image_files(folder: Path) -> dict[str, Path]:
    """Image files in ``folder`` by name without extension."""
    files = {}
    for path in sorted(folder.iterdir()):
        suffix = compound_suffix(path)
        if path.is_file() and suffix in IMAGE_SUFFIXES:
            files[path.name[: -len(suffix)]] = path
    return files


def _load_nnunet(folder: Path, meta: dict, ignore_label: int | None) -> Dataset:
    table, ignore = _label_table(meta, folder / "dataset.json", ignore_label)
    channel_names = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    channels = [str(channel_names[key]) for key in sorted(channel_names, key=int)]
    images = _image_files(folder / "imagesTr")
    labels = _image_files(folder / "labelsTr") if (folder / "labelsTr").is_dir() else {}
    cases = []
    for name, label in labels.items():
        files = [images.get(f"{name}_{index:04d}") for index in range(len(channels))]
        if files[0] is None:
            continue
        missing = [f"{name}_{index:04d}" for index, path in enumerate(files) if path is None]
        if missing:
            raise InputError(f"{folder / 'imagesTr'}: channel files {missing} are missing for case {name}")
        cases.append(Case(name, files, label))
    _warn_unlabelled(folder / "imagesTr", images, {case.name for case in cases})
    return Dataset(folder, cases, table, channels, " ".join(channels), ignore, _dimension(meta, cases))


def _load_simple(folder: Path, meta: dict, ignore_label: int | None) -> Dataset:
    table, ignore = _label_table(meta, folder / "dataset.json", ignore_label)
    modality = str(meta.get("modality", ""))
    if isinstance(meta.get("cases"), list):
        cases = [_case_from_entry(folder, entry) for entry in meta["cases"]]
        cases = [case for case in cases if case is not None]
    else:
        cases = _cases_from_files(folder)
    count = len(cases[0].images) if cases else 1
    names = meta.get("channel_names")
    if isinstance(names, dict):
        channels = [str(names[key]) for key in sorted(names, key=int)]
    else:
        channels = [modality or "image"] + [f"channel {index}" for index in range(1, count)]
    channels = (channels + [f"channel {index}" for index in range(len(channels), count)])[:count]
    return Dataset(folder, cases, table, channels, modality, ignore, _dimension(meta, cases))


def _case_from_entry(folder: Path, entry: dict) -> Case | None:
    """A case from a ``cases`` entry of dataset.json (None when it has no label)."""
    require(isinstance(entry, dict), f"each entry of \"cases\" must be an object with \"image\" and \"label\", "
            f"not {entry!r:.40}")
    if not entry.get("label"):
        return None
    images = [folder / entry["image"]] + [folder / path for path in (entry.get("extra_images") or {}).values()]
    for path in images + [folder / entry["label"]]:
        if not path.is_file():
            raise InputError(f"{path}: listed in {folder / 'dataset.json'} but not found")
    per_label = entry.get("annotated_slices_0_based")
    label_slices = ({int(value): [int(s) for s in slices] for value, slices in per_label.items()
                     if str(value).isdigit() and isinstance(slices, list)}
                    if isinstance(per_label, dict) and per_label else None)
    return Case(str(entry.get("case", Path(entry["image"]).name)), images, folder / entry["label"],
                _fully_annotated_slices(per_label), label_slices)


def _fully_annotated_slices(per_label: object) -> list[int] | None:
    """Slices annotated for every label (None when the note is absent: everything is annotated)."""
    if not isinstance(per_label, dict) or not per_label:
        return None
    sets = [set(int(s) for s in slices) for slices in per_label.values()]
    return sorted(set.intersection(*sets))


def _cases_from_files(folder: Path) -> list[Case]:
    """Cases found by file name: ``images/<case>[_0000].ext`` with ``labels/<case>.ext``."""
    images = _image_files(folder / "images")
    labels = _image_files(folder / "labels") if (folder / "labels").is_dir() else {}
    cases = []
    for name, label in labels.items():
        primary = images.get(name) or images.get(f"{name}_0000")
        if primary is None:
            continue
        extra, index = [], 1
        while f"{name}_{index:04d}" in images:
            extra.append(images[f"{name}_{index:04d}"])
            index += 1
        cases.append(Case(name, [primary] + extra, label))
    _warn_unlabelled(folder / "images", images, {case.name for case in cases})
    return cases


def _warn_unlabelled(folder: Path, images: dict[str, Path], labelled: set[str]) -> None:
    """Say which images are left out for want of a label map (never drop a case without a word)."""
    unlabelled = sorted({re.sub(r"_\d{4}$", "", name) for name in images} - labelled)
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
        log.warning("%s: %d image(s) without a label map are left out of training: %s", folder, len(unlabelled),
                    shown)


def _dimension(meta: dict, cases: list[Case]) -> int:
    if meta.get("dimensionality") in (2, 3):
        return int(meta["dimensionality"])
    if not cases:
        return 3
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(cases[0].images[0]))
    reader.ReadImageInformation()
    return 2 if reader.GetDimension() == 2 or (reader.GetDimension() == 3 and reader.GetSize()[2] == 1) else 3


def _onto_grid(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    """An extra channel on the primary channel's grid (linear interpolation only when the grids differ)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    same = (image.GetSize() == reference.GetSize()
            and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)
            and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
            and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4))
    if same:
        image.CopyInformation(reference)
        return image
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
