"""Deep engine: dataset folders (both layouts, sparse annotation, bad data) and the self-configured plan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from deep_synthetic import blob_case, make_blob_dataset

from SegToolkitLib.errors import InputError
from SegToolkitLib.methods.deep.dataset import load_dataset
from SegToolkitLib.methods.deep.planning import (
    check_plan,
    field_of_view_follows_object,
    load_plan,
    plan_dataset,
    save_plan,
    structure_thickness_voxels,
    target_spacing,
)
from SegToolkitLib.methods.deep.preprocessing import plan_grid, preprocess_images


def test_simple_layout_with_extra_channel(tmp_path):
    folder = make_blob_dataset(tmp_path / "data", cases=3, size=(20, 20, 6))
    extra = sitk.ReadImage(str(folder / "images" / "case00.nii.gz"))
    for index in range(3):
        sitk.WriteImage(extra * 2, str(folder / "images" / f"case{index:02d}_0001.nii.gz"))
    dataset = load_dataset(folder)
    assert [case.name for case in dataset.cases] == ["case00", "case01", "case02"]
    assert all(len(case.images) == 2 for case in dataset.cases)
    assert dataset.labels.values() == [1] and dataset.ignore_label == 255 and dataset.dimension == 3
    images, labels = dataset.load_case(dataset.cases[0])
    assert len(images) == 2 and labels.shape == (6, 20, 20) and set(np.unique(labels)) == {0, 1}


def test_nnunet_layout_and_ignore_label(tmp_path):
    folder = make_blob_dataset(tmp_path / "raw", cases=2, size=(20, 20, 6), nnunet=True, modality="CT")
    meta = json.loads((folder / "dataset.json").read_text())
    meta["labels"]["ignore"] = 7
    (folder / "dataset.json").write_text(json.dumps(meta))
    dataset = load_dataset(folder)
    assert len(dataset.cases) == 2 and dataset.channels == ["CT"] and dataset.is_ct
    assert dataset.ignore_label == 7 and dataset.labels.values() == [1]


def test_annotated_slices_become_ignore(tmp_path):
    folder = make_blob_dataset(tmp_path / "data", cases=1, size=(16, 16, 5), labels=2)
    meta = json.loads((folder / "dataset.json").read_text())
    meta["cases"] = [{"case": "case00", "image": "images/case00.nii.gz", "label": "labels/case00.nii.gz",
                      "annotated_slices_0_based": {"1": [1, 2, 3], "2": [2, 3]}}]
    (folder / "dataset.json").write_text(json.dumps(meta))
    dataset = load_dataset(folder)
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels" / "case00.nii.gz")))
    _, labels = dataset.load_case(dataset.cases[0])
    for z in (0, 1, 4):  # not annotated for every label: unknown background, drawn labels kept
        assert np.all(labels[z][raw[z] == 0] == 255) and np.array_equal(labels[z][raw[z] > 0], raw[z][raw[z] > 0])
    for z in (2, 3):
        assert np.array_equal(labels[z], raw[z])
    # slices 1 has label 1 drawn but not label 2: its unlabelled voxels are known not to be label 1
    assert dataset.cases[0].partly_annotated_slices(5) == {1: [1]}


def test_bad_datasets(tmp_path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    (empty / "dataset.json").write_text(json.dumps({"labels": {"1": "a"}}))
    with pytest.raises(InputError, match="no cases"):
        load_dataset(empty)
    with pytest.raises(InputError, match="not a dataset folder"):
        load_dataset(tmp_path)
    folder = make_blob_dataset(tmp_path / "data", cases=1, size=(16, 16, 4), labels=2)
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "blob1"}}))
    dataset = load_dataset(folder)
    with pytest.raises(InputError, match=r"label values \[2\] are not declared"):
        dataset.load_case(dataset.cases[0])
    (folder / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_dataset(folder)


def test_anisotropic_target_spacing_rule():
    spacings = [[0.8, 0.8, 5.0], [0.7, 0.7, 6.0], [0.9, 0.9, 4.0], [0.8, 0.8, 5.0]]
    sizes = [[256, 256, 20]] * 4
    spacing = target_spacing(spacings, sizes)
    assert spacing[:2] == pytest.approx([0.8, 0.8])
    assert spacing[2] == pytest.approx(np.percentile([5.0, 6.0, 4.0, 5.0], 10))
    assert target_spacing([[1, 1, 1.2], [1, 1, 1.4]], [[64, 64, 64]] * 2) == pytest.approx([1, 1, 1.3])


def test_plan_thick_slices_is_2d_and_editable(tmp_path):
    folder = make_blob_dataset(tmp_path / "data", cases=3, size=(48, 48, 6), spacing=(1.0, 1.0, 5.0))
    plan = plan_dataset(load_dataset(folder))
    assert plan["configuration"] == "2d" and len(plan["patch_size"]) == 2
    assert plan["target_spacing"][2] is None and plan["normalisation"] == [{"scheme": "zscore"}]
    assert plan["target_size"] is None  # same field of view everywhere: resampled by spacing
    stride_product = np.prod(plan["network"]["strides"], axis=0)
    assert all(p % s == 0 for p, s in zip(plan["patch_size"], stride_product))
    assert plan["memory_estimate_gb"] <= plan["memory_budget_gb"]
    path = save_plan(plan, tmp_path / "plan.json")
    assert load_plan(path) == json.loads(json.dumps(plan))
    broken = dict(plan, patch_size=[32, 32, 8])
    with pytest.raises(InputError, match="2 values each"):
        check_plan(broken, "plan.json")


def test_plan_isotropic_ct_is_3d_with_ct_normalisation(tmp_path):
    folder = make_blob_dataset(tmp_path / "data", cases=3, size=(40, 40, 24), spacing=(1.0, 1.0, 1.5),
                               modality="CT")
    plan = plan_dataset(load_dataset(folder))
    assert plan["configuration"] == "3d" and len(plan["patch_size"]) == 3
    ct = plan["normalisation"][0]
    assert ct["scheme"] == "ct" and ct["clip"][0] < ct["mean"] < ct["clip"][1]
    cuda = plan_dataset(load_dataset(folder), device="cuda")
    assert cuda["network"]["filters"][0] > plan["network"]["filters"][0]


def write_zoomed_dataset(folder, spacings, size=(40, 32)):
    """2D images of one pixel size whose spacing follows the object (as when a sonographer zooms to the head)."""
    rng = np.random.default_rng(3)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for index, spacing in enumerate(spacings):
        image, label = blob_case(rng, size, (spacing, spacing))
        sitk.WriteImage(image, str(folder / "images" / f"case{index}.nii.gz"))
        sitk.WriteImage(label, str(folder / "labels" / f"case{index}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "head"}}))
    return folder


def test_zoomed_field_of_view_is_resampled_to_a_common_size(tmp_path):
    dataset = load_dataset(write_zoomed_dataset(tmp_path / "data", [0.1, 0.15, 0.2, 0.3, 0.4]))
    plan = plan_dataset(dataset)
    assert plan["target_size"] == [40, 32]
    shapes = set()
    for case in dataset.cases:
        images, labels = dataset.load_case(case)
        array, grid = preprocess_images(images, plan)
        shapes.add(array.shape)
        # the working grid covers exactly the image's extent, whatever its spacing
        extent = np.multiply(images[0].GetSize(), images[0].GetSpacing())
        assert np.allclose(np.multiply(grid.GetSize(), grid.GetSpacing()), extent)
    assert shapes == {(1, 1, 32, 40)}
    plan["target_size"] = [20, None]  # edited by hand: x resampled to 20 voxels, y kept
    kept_y = round(32 * images[0].GetSpacing()[1] / plan["target_spacing"][1])
    assert plan_grid(images[0], plan).GetSize() == (20, kept_y)
    check_plan(plan, "plan.json")
    with pytest.raises(InputError, match="target_size needs one whole number"):
        check_plan(dict(plan, target_size=[20]), "plan.json")
    with pytest.raises(InputError, match="target_size needs one whole number"):
        check_plan(dict(plan, target_size=[0, 10]), "plan.json")


def ring_and_disc(size=256, radius=60.0, wall=5.0):
    """A disc (label 1) inside a ring ``wall`` voxels wide (label 2), on one 2D slice."""
    y, x = np.mgrid[:size, :size] - size / 2
    distance = np.hypot(x, y)
    return np.where(distance < radius, 1, np.where(distance < radius + wall, 2, 0)).astype(np.int32)[None]


def test_structure_thickness_is_a_rings_width_and_a_discs_radius():
    thickness = structure_thickness_voxels(ring_and_disc(), (0.5, 0.5, 8.0), 255)
    assert 0.75 * 60 < thickness[1] <= 60 and 0.75 * 5 < thickness[2] <= 5  # edge counting errs on the thin side
    assert structure_thickness_voxels(ring_and_disc(), (1.0, 2.0, 8.0), 255)[2] > thickness[2]  # finest spacing


def write_thick_slice_dataset(folder, wall):
    """Thick-slice cine-like stacks 192x192 (1.4 mm): a disc in a ring ``wall`` voxels wide."""
    rng = np.random.default_rng(5)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    for index in range(3):
        labels = np.repeat(ring_and_disc(192, 30.0, wall), 6, axis=0)
        image = sitk.GetImageFromArray((labels * 40 + rng.normal(0, 5, labels.shape)).astype(np.float32))
        label = sitk.GetImageFromArray(labels.astype(np.uint8))
        for item in (image, label):
            item.SetSpacing((1.4, 1.4, 8.0))
        sitk.WriteImage(image, str(folder / "images" / f"case{index}.nii.gz"))
        sitk.WriteImage(label, str(folder / "labels" / f"case{index}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"1": "pool", "2": "wall"}, "modality": "MR"}))
    return folder


def test_cpu_plan_keeps_thin_structures_four_voxels_across(tmp_path):
    thin = plan_dataset(load_dataset(write_thick_slice_dataset(tmp_path / "thin", wall=4.0)))
    thick = plan_dataset(load_dataset(write_thick_slice_dataset(tmp_path / "thick", wall=16.0)))
    assert thin["configuration"] == thick["configuration"] == "2d"
    # a thick wall may be coarsened until the image is about one patch; a 4-voxel wall keeps the pixel size
    assert thick["target_spacing"][0] > 1.6 and thin["target_spacing"][0] == pytest.approx(1.4, rel=0.02)
    assert thin["fingerprint"]["structure_thickness_voxels"]["2"] <= 4.0


def test_scaling_augmentation_widens_to_the_datasets_size_spread(tmp_path):
    from SegToolkitLib.methods.deep.planning import augmentation_settings, object_size_spread, size_spread

    spread = size_spread({1: [10.0, 20.0, 20.0, 20.0, 40.0], 2: [5.0, 5.0, 5.0]})
    assert spread["1"][0] == pytest.approx(np.percentile([10, 20, 20, 20, 40], 5) / 20) and spread["2"] == [1, 1]
    assert augmentation_settings(2)["scale"] == [0.7, 1.4]  # nnU-Net's range at least
    assert augmentation_settings(2, (0.6, 1.5))["scale"] == [0.6, 1.5]  # heads at 0.6x the median size
    assert augmentation_settings(2, (0.2, 5.0))["scale"] == [0.5, 2.0]  # within bounds
    fingerprint = {"structure_size_spread": {"voxels": {"1": [0.55, 1.2]}, "mm": {"1": [0.4, 1.7], "2": [0.9, 2.2]}}}
    assert object_size_spread(fingerprint, zoomed=True) == (0.55, 1.2)  # every image resampled to one size
    assert object_size_spread(fingerprint, zoomed=False) == (0.4, 2.2)
    assert object_size_spread({}, zoomed=False) == (1.0, 1.0)  # plans from before the spread was recorded
    plan = plan_dataset(load_dataset(write_thick_slice_dataset(tmp_path / "same", wall=6.0)))
    assert plan["augmentation"]["scale"] == [0.7, 1.4]  # every case the same size: nnU-Net's range


def test_field_of_view_rule_needs_constant_size_and_varying_extent():
    assert field_of_view_follows_object([[0.1, 0.1], [0.3, 0.3]], [[800, 540], [800, 540]], 2)
    assert not field_of_view_follows_object([[0.1, 0.1], [0.3, 0.3]], [[800, 540], [300, 200]], 2)  # CT-like crops
    assert not field_of_view_follows_object([[0.7, 0.7], [0.8, 0.8]], [[256, 256], [256, 256]], 2)  # same FOV
    assert not field_of_view_follows_object([[0.1, 0.1]], [[800, 540]], 2)  # one case: nothing to compare


@pytest.mark.shared_data
def test_shared_sunnybrook_and_hc18_load(shared_data):
    sunnybrook = load_dataset(shared_data / "sunnybrook_cardiac_lv")
    assert len(sunnybrook.cases) == 8 and sunnybrook.labels.values() == [1, 2]
    ed = next(case for case in sunnybrook.cases if case.name.endswith("_ED"))
    _, labels = sunnybrook.load_case(ed)
    annotated = set(ed.annotated_slices)
    assert annotated and all(np.all(labels[z] != 0) for z in range(labels.shape[0]) if z not in annotated)
    hc18 = load_dataset(shared_data / "hc18_fetal_head_ultrasound")
    assert hc18.dimension == 2 and len(hc18.cases) == 150
    # sonographers zoom to the head: HC18 pixel sizes span 5x at one image size, so the plan fixes the size
    plan = plan_dataset(hc18)
    assert plan["configuration"] == "2d" and plan["target_size"] is not None
    assert np.prod(plan["target_size"]) <= 1.1 * np.prod(plan["patch_size"])


def test_deep_commands_register_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys, argparse\n"
            "from SegToolkitLib.interfaces.cli import plan, predict, train\n"
            "from SegToolkitLib.methods.deep import dataset, model_package, planning, preprocessing\n"
            "parser = argparse.ArgumentParser(); sub = parser.add_subparsers()\n"
            "[m.register(sub) for m in (plan, train, predict)]\n"
            "assert 'torch' not in sys.modules and 'monai' not in sys.modules, 'torch imported eagerly'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
