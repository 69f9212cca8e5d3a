"""``segtoolkit register`` and ``segtoolkit atlas`` end to end, bad inputs, and one real-data check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import InputError
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import LabelMap, LabelTable, read_label_map
from SegToolkitLib.methods.atlas import label_dice, load_transform, register, warp_labels
from SegToolkitLib.methods.atlas.multi_atlas import Atlas, atlas_mask


def blobs(shift=(0.0, 0.0, 0.0), size=(40, 36, 20)) -> tuple[sitk.Image, sitk.Image]:
    """An image with two touching bright structures and their labels (1 and 3), shifted by ``shift`` mm."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in size[::-1]], indexing="ij")
    x, y, z = x * 1.5 - shift[0], y * 1.5 - shift[1], z * 2.5 - shift[2]
    first = ((x - 22) / 10) ** 2 + ((y - 27) / 9) ** 2 + ((z - 25) / 12) ** 2 < 1
    second = ((x - 38) / 8) ** 2 + ((y - 27) / 8) ** 2 + ((z - 25) / 10) ** 2 < 1
    labels = np.where(first, 1, np.where(second, 3, 0)).astype(np.uint8)
    intensity = 100.0 * first + 60.0 * (second & ~first) + 20.0 * np.exp(-((x - 30) ** 2 + (y - 10) ** 2) / 200)
    image = sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(intensity.astype(np.float32)), 1.0)
    label_image = sitk.GetImageFromArray(labels)
    for item in (image, label_image):
        item.SetSpacing((1.5, 1.5, 2.5))
        item.SetOrigin((-30.0, 12.0, 40.0))
    return image, label_image


@pytest.fixture
def files(tmp_path):
    target, target_labels = blobs()
    atlas, atlas_labels = blobs(shift=(3.0, -2.0, 2.0))
    paths = {name: tmp_path / f"{name}.nii.gz" for name in ("target", "target_labels", "atlas", "atlas_labels")}
    for name, image in zip(paths, (target, target_labels, atlas, atlas_labels)):
        sitk.WriteImage(image, str(paths[name]))
    (tmp_path / "names.json").write_text(json.dumps({"1": "big", "3": "small"}))
    paths["names"] = tmp_path / "names.json"
    return paths


def test_register_writes_a_transform_and_the_resampled_image(files, tmp_path, capsys):
    out, resampled = tmp_path / "t.tfm", tmp_path / "r.nii.gz"
    code = main(["register", str(files["target"]), str(files["atlas"]), "-o", str(out), "--transform", "affine",
                 "--preset", "fast", "--init", "moments", "--resampled", str(resampled)])
    assert code == 0
    assert "rigid" in capsys.readouterr().out
    transform = load_transform(out)
    atlas_labels = sitk.ReadImage(str(files["atlas_labels"]))
    target_labels = sitk.ReadImage(str(files["target_labels"]))
    warped = warp_labels(atlas_labels, target_labels, transform)
    assert min(label_dice(warped, target_labels).values()) > 0.85
    assert sitk.ReadImage(str(resampled)).GetSize() == target_labels.GetSize()


def test_atlas_with_two_atlases_fuses_and_keeps_label_names(files, tmp_path):
    out, transforms = tmp_path / "seg.seg.nrrd", tmp_path / "transforms"
    transforms.mkdir()
    code = main(["atlas", str(files["target"]), "-o", str(out), "--atlas", str(files["atlas"]),
                 str(files["atlas_labels"]), "--atlas", str(files["target"]), str(files["target_labels"]),
                 "--labels", str(files["names"]), "--fusion", "staple", "--transform", "affine", "--preset", "fast",
                 "--workers", "2", "--save-transforms", str(transforms), "--mask-margin", "8"])
    assert code == 0
    result = read_label_map(out)
    assert result.labels.get(1).name == "big" and result.labels.get(3).name == "small"
    truth = sitk.ReadImage(str(files["target_labels"]))
    assert min(label_dice(result.image, truth).values()) > 0.9
    assert sorted(path.name for path in transforms.iterdir()) == ["atlas.h5", "target.h5"]


@pytest.mark.parametrize("problem", ["labels on another grid", "empty labels", "2D atlas", "no overlap",
                                     "negative mask margin"])
def test_bad_atlas_inputs_fail_cleanly_and_write_nothing(files, tmp_path, capsys, problem):
    atlas, labels = files["atlas"], files["atlas_labels"]
    extra = []
    if problem == "labels on another grid":
        labels = tmp_path / "small.nii.gz"
        sitk.WriteImage(sitk.Image([10, 10, 10], sitk.sitkUInt8) + 1, str(labels))
    elif problem == "empty labels":
        labels = tmp_path / "empty.nii.gz"
        sitk.WriteImage(sitk.Image(sitk.ReadImage(str(files["atlas_labels"])) * 0), str(labels))
    elif problem == "2D atlas":
        atlas, labels = tmp_path / "a2.nii.gz", tmp_path / "l2.nii.gz"
        sitk.WriteImage(sitk.Image([30, 30], sitk.sitkFloat32) + 1.0, str(atlas))
        sitk.WriteImage(sitk.Image([30, 30], sitk.sitkUInt8) + 1, str(labels))
    elif problem == "negative mask margin":
        extra = ["--mask-margin", "-5"]
    else:
        far = sitk.ReadImage(str(atlas))
        far.SetOrigin((900.0, 0.0, 0.0))
        atlas = tmp_path / "far.nii.gz"
        sitk.WriteImage(far, str(atlas))
        far_labels = sitk.ReadImage(str(labels))
        far_labels.SetOrigin((900.0, 0.0, 0.0))
        labels = tmp_path / "far_labels.nii.gz"
        sitk.WriteImage(far_labels, str(labels))
        extra = ["--init", "none"]
    out = tmp_path / "out.nii.gz"
    code = main(["atlas", str(files["target"]), "-o", str(out), "--atlas", str(atlas), str(labels),
                 "--transform", "rigid", "--preset", "fast", *extra])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("segtoolkit: error:") and len(error.strip().splitlines()) == 1
    expected = {"labels on another grid": "not on the grid", "empty labels": "empty", "2D atlas": "2D",
                "no overlap": "does not overlap", "negative mask margin": "--mask-margin -5.0"}[problem]
    assert expected in error
    assert not out.exists()


def test_atlas_mask_is_the_labels_dilated_by_the_margin_in_mm():
    image, labels = blobs()
    mask = sitk.GetArrayFromImage(atlas_mask(Atlas(image, LabelMap(labels, LabelTable())), 6.0))
    label_array = sitk.GetArrayFromImage(labels)
    assert np.all(mask[label_array > 0] == 1)
    z, y, _ = (int(round(v)) for v in np.argwhere(label_array > 0).mean(axis=0))  # through the structures
    edge = int(np.nonzero(label_array[z, y])[0].max())  # last labelled voxel along x in that row (1.5 mm spacing)
    assert mask[z, y, edge + 4] == 1 and mask[z, y, edge + 5] == 0  # 6 mm = 4 voxels
    with pytest.raises(InputError, match="margin"):
        atlas_mask(Atlas(image, LabelMap(labels, LabelTable())), -1.0)


def test_register_refuses_a_tfm_for_a_displacement_field_before_working(files, tmp_path, capsys):
    out = tmp_path / "t.tfm"
    code = main(["register", str(files["target"]), str(files["atlas"]), "-o", str(out), "--transform",
                 "diffeomorphic"])
    assert code == 2 and ".h5" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.shared_data
def test_sunnybrook_ed_to_es_diffeomorphic_improves_blood_pool_dice(shared_data):
    folder = shared_data / "sunnybrook_cardiac_lv"
    meta = {case["case"]: case for case in json.loads((folder / "dataset.json").read_text())["cases"]}
    ed, es = meta["SCD0000401_ED"], meta["SCD0000401_ES"]

    def read(path, pixel=sitk.sitkUnknown):  # the central 128 x 128 pixels hold the heart; keeps the test quick
        return sitk.ReadImage(str(folder / path), pixel)[64:192, 64:192, :]

    fixed, moving = read(es["image"], sitk.sitkFloat32), read(ed["image"], sitk.sitkFloat32)
    ed_labels, es_labels = read(ed["label"]), read(es["label"])
    assert sitk.GetArrayViewFromImage(es_labels).sum() == sitk.GetArrayViewFromImage(
        sitk.ReadImage(str(folder / es["label"]))).sum()  # the crop keeps the whole reference
    slices = es["annotated_slices_0_based"]["1"]

    def dice(transform):
        warped = sitk.GetArrayViewFromImage(warp_labels(ed_labels, fixed, transform))[slices] == 1
        truth = sitk.GetArrayViewFromImage(es_labels)[slices] == 1
        return 2 * np.sum(warped & truth) / (warped.sum() + truth.sum())

    identity = dice(sitk.Transform(3, sitk.sitkIdentity))
    result = register(fixed, moving, "diffeomorphic", "fast", init="none")
    assert dice(result.transform) > identity + 0.03
