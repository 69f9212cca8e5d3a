"""Small phantom cohorts for the cohort tests: clean subjects plus one case per injected fault."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from SegToolkitLib.io import LabelMap, LabelTable, write_label_map
from SegToolkitLib.samples.phantom import LEFT_KIDNEY, LIVER, ORGANS, RIGHT_KIDNEY, make_phantom

SHAPE = (48, 42, 24)  # the default field of view (192 x 168 x 144 mm) at coarse voxels
SPACING = (4.0, 4.0, 6.0)

# fault -> words its reason must contain in qc.csv
FAULTS = {
    "corrupt": "failed:",
    "flipped": "orientation",
    "not_hu": "implausible for CT",
    "empty": "empty segmentation",
    "cut_off": "touches the scan's edge",
    "volume": "volume",
    "left_right": "left and right swapped",
    "oblique": "axes turned",
    "thick_slices": "spacing 4x4x12 mm unlike",
    "few_slices": "only 8 slices",
}
# faults that are a different acquisition grid: (shape, spacing)
GRIDS = {"thick_slices": ((48, 42, 12), (4.0, 4.0, 12.0)), "few_slices": ((48, 42, 8), (4.0, 4.0, 6.0))}


def phantom_case(subject: int, shape=SHAPE, spacing=SPACING) -> tuple[sitk.Image, sitk.Image]:
    phantom = make_phantom(subject, noise_seed=subject, shape=shape, spacing=spacing)
    return phantom.image, phantom.labels.image


def write_case(folder: Path, name: str, image: sitk.Image, labels: sitk.Image) -> tuple[Path, Path]:
    """The image as NIfTI, the labels as .seg.nrrd with the phantom's organ names."""
    image_path, label_path = folder / "images" / f"{name}.nii.gz", folder / "labels" / f"{name}.seg.nrrd"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(image_path))
    table = LabelTable()
    for value, (organ, color, _) in ORGANS.items():
        table.add(value, organ, color)
    write_label_map(LabelMap(sitk.Cast(labels, sitk.sitkUInt8), table), label_path)
    return image_path, label_path


def inject(fault: str, image: sitk.Image, labels: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """The phantom case with one fault of the kind a cohort meets."""
    if fault == "flipped":  # same anatomy, stored upside down (slices reversed, direction says so)
        return sitk.DICOMOrient(image, "LPI"), sitk.DICOMOrient(labels, "LPI")
    if fault == "not_hu":  # raw scanner values: the rescale intercept was lost
        return sitk.Cast(image + 1024.0, sitk.sitkFloat32), labels
    if fault == "empty":
        return image, labels * 0
    if fault == "cut_off":  # the field of view misses the patient's right side (liver, right kidney)
        return image[14:], labels[14:]
    if fault == "volume":  # the liver leaks into its surroundings
        liver = sitk.BinaryDilate(labels == LIVER, [2, 2, 1])
        array = sitk.GetArrayFromImage(labels)
        array[(sitk.GetArrayFromImage(liver) > 0) & (array == 0)] = LIVER
        leaked = sitk.GetImageFromArray(array)
        leaked.CopyInformation(labels)
        return image, leaked
    if fault == "oblique":  # a tilted acquisition: the grid turned by 20 degrees about the z axis
        angle = np.radians(20.0)
        direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
        image, labels = sitk.Image(image), sitk.Image(labels)
        image.SetDirection(direction)
        labels.SetDirection(direction)
        return image, labels
    if fault == "left_right":  # the kidneys' labels exchanged
        array = sitk.GetArrayFromImage(labels)
        swapped = array.copy()
        swapped[array == LEFT_KIDNEY], swapped[array == RIGHT_KIDNEY] = RIGHT_KIDNEY, LEFT_KIDNEY
        result = sitk.GetImageFromArray(swapped)
        result.CopyInformation(labels)
        return image, result
    return image, labels


def make_fault_cohort(folder: Path, clean: int = 14) -> tuple[Path, list[str], dict[str, str]]:
    """A manifest of ``clean`` phantom subjects and one case per fault (measure task: image + label map).
    Returns the manifest, the clean case ids and the fault case ids by fault."""
    rows, clean_ids, fault_ids = [], [], {}
    for subject in range(clean):
        name = f"clean{subject:02d}"
        image_path, label_path = write_case(folder, name, *phantom_case(subject))
        rows.append({"case": name, "image": image_path.relative_to(folder), "labels": label_path.relative_to(folder)})
        clean_ids.append(name)
    for number, fault in enumerate(FAULTS):
        name = f"fault_{fault}"
        image_path, label_path = write_case(folder, name, *inject(fault, *phantom_case(40 + number,
                                                                              *GRIDS.get(fault, (SHAPE, SPACING)))))
        if fault == "corrupt":
            data = image_path.read_bytes()
            image_path.write_bytes(data[: len(data) // 2])
        rows.append({"case": name, "image": image_path.relative_to(folder), "labels": label_path.relative_to(folder)})
        fault_ids[fault] = name
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "image", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, clean_ids, fault_ids


def make_grow_cohort(folder: Path, cases: int) -> Path:
    """A manifest of phantom subjects with a seed in the liver each (grow task)."""
    rows = []
    for subject in range(cases):
        phantom = make_phantom(subject, noise_seed=subject, shape=SHAPE, spacing=SPACING)
        name = f"subject{subject:03d}"
        image_path, _ = write_case(folder, name, phantom.image, phantom.labels.image)
        seed = ",".join(f"{v:.2f}" for v in phantom.seeds[LIVER])
        rows.append({"case": name, "image": image_path.relative_to(folder), "seeds": seed})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "image", "seeds"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def label_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
