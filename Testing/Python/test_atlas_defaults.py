"""Atlas defaults: same subject versus another subject is recognised and answered with the right settings,
labels are adapted to the target's intensities between subjects, bad images and Ctrl-C end cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import LabelMap, LabelTable
from SegToolkitLib.methods.atlas import (
    Atlas,
    RegistrationOptions,
    compare_images,
    label_dice,
    plan_registration,
    refine_with_intensities,
    register,
    segment_with_atlases,
)
from SegToolkitLib.methods.atlas.multi_atlas import _start_worker
from SegToolkitLib.methods.atlas.refinement import MAX_LABELS
from SegToolkitLib.methods.atlas.strategy import label_fit
from SegToolkitLib.methods.atlas.walls import apply_offsets, calibrate_offsets, fill_cavities, find_walls

SPACING = (1.5, 1.5, 5.0)


def heart(centre=(0.0, 0.0), radius=12.0, wall=6.0, scale=1.0, size=(56, 56, 9), origin=(-42.0, -42.0, -20.0),
          seed=0) -> tuple[sitk.Image, sitk.Image]:
    """A short-axis-like stack: a bright pool (label 1) in a darker wall (label 2), an unlabelled bright
    neighbour, noise; sizes in mm, ``centre`` in physical x/y of the grid."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in size[::-1]], indexing="ij")
    x = x * SPACING[0] + origin[0] - centre[0]
    y = y * SPACING[1] + origin[1] - centre[1]
    taper = 1.0 - 0.04 * np.abs(z - size[2] / 2)  # the pool narrows towards both ends
    distance = np.hypot(x, y)
    pool = distance < radius * taper
    wall_mask = ~pool & (distance < (radius + wall) * taper)
    neighbour = np.hypot(x - radius - wall - 9, y + 4) < 7
    rng = np.random.default_rng(seed)
    intensity = scale * (40 + 160 * pool + 50 * wall_mask + 150 * neighbour) + rng.normal(0, 6 * scale, pool.shape)
    labels = np.where(pool, 1, np.where(wall_mask, 2, 0)).astype(np.uint8)
    image, label_image = sitk.GetImageFromArray(intensity.astype(np.float32)), sitk.GetImageFromArray(labels)
    for item in (image, label_image):
        item.SetSpacing(SPACING)
        item.SetOrigin(origin)
    return image, label_image


def other_subject(seed=1):
    """Another 'patient' scanned elsewhere: pool and wall of other sizes, brighter, its field of view (centred
    near its heart, as cardiac planning does) 25 mm away in the scanner."""
    return heart(centre=(28.0, -22.0), radius=10.0, wall=7.0, scale=1.4, origin=(-17.0, -62.0, -24.0), seed=seed)


def test_same_subject_and_other_subjects_are_told_apart():
    target, _ = heart()
    same_phase, _ = heart(radius=11.0, seed=3)  # another phase of the same scan
    other, _ = other_subject()
    assert compare_images(target, same_phase).aligned
    check = compare_images(target, other)
    assert not check.aligned and check.correlation < 0.45
    far = sitk.Image(other)
    far.SetOrigin((500.0, 0.0, 0.0))
    assert compare_images(target, far).overlap == 0.0 and not compare_images(target, far).aligned


def test_auto_settings_follow_the_relation_and_explicit_ones_are_kept():
    target, _ = heart()
    same = plan_registration(target, heart(radius=11.0, seed=3)[0])
    assert (same.relation, same.transform, same.init, same.mask_margin_mm) == ("aligned", "diffeomorphic", "none",
                                                                                None)
    assert same.check.correlation > 0.8  # same contrast: demons; a less alike aligned pair gets a B-spline
    noisy = sitk.AdditiveGaussianNoise(heart(radius=11.0, seed=3)[0], standardDeviation=70.0, seed=2)
    template_space = plan_registration(target, noisy)  # aligned, but intensities less alike than demons needs
    assert 0.45 < template_space.check.correlation < 0.8
    assert (template_space.relation, template_space.transform) == ("aligned", "deformable")
    other = plan_registration(target, other_subject()[0])
    assert (other.relation, other.transform, other.init) == ("between subjects", "affine", "geometry")
    assert other.mask_margin_mm == 20.0 and "different subject" in other.describe()
    assert other.metric == "auto"  # both metrics are tried between subjects
    mixed = plan_registration(target, other_subject()[0], transform="rigid", mask_margin_mm=None)
    assert (mixed.transform, mixed.init, mixed.mask_margin_mm) == ("rigid", "geometry", None)
    assert same.metric == "mi"
    given = plan_registration(target, other_subject()[0], "affine", "moments", "correlation", 5.0)
    assert (given.relation, given.init, given.metric, given.mask_margin_mm) == ("as given", "moments",
                                                                                "correlation", 5.0)
    assert given.check is None


def test_label_fit_prefers_labels_on_the_structures():
    target, truth = heart()
    shifted = sitk.Resample(truth, truth, sitk.TranslationTransform(3, (6.0, -4.5, 0.0)), sitk.sitkNearestNeighbor)
    assert label_fit(target, truth) > label_fit(target, shifted) + 0.1
    assert 0.0 <= label_fit(target, shifted) <= 1.0


def test_refinement_moves_misplaced_labels_onto_the_target_structures():
    target, truth = heart()
    shifted = sitk.Resample(truth, truth, sitk.TranslationTransform(3, (4.5, -3.0, 0.0)), sitk.sitkNearestNeighbor)
    refined = refine_with_intensities(target, [shifted], shifted)
    assert refined.applied and "intensities" in refined.note
    before, after = label_dice(shifted, truth), label_dice(refined.image, truth)
    assert after[1] > before[1] + 0.05 and after[2] > before[2] + 0.1
    assert after[1] > 0.9 and after[2] > 0.8
    assert refined.image.GetOrigin() == truth.GetOrigin()


def test_refinement_keeps_the_vote_when_it_cannot_model_the_labels():
    target, truth = heart()
    many = sitk.Cast(sitk.Clamp(sitk.Cast(target, sitk.sitkInt32) // 10, lowerBound=0, upperBound=40), sitk.sitkUInt8)
    result = refine_with_intensities(target, [many], many)
    assert not result.applied and f"more than {MAX_LABELS}" in result.note and result.image is many
    noise = sitk.GetImageFromArray(np.random.default_rng(5).normal(100, 10, (9, 56, 56)).astype(np.float32))
    noise.CopyInformation(target)
    tiny = sitk.Image(truth.GetSize(), sitk.sitkUInt8)
    tiny.CopyInformation(truth)
    tiny[28, 28, 4] = 1  # one voxel: an intensity model would grow it into the noise
    kept = refine_with_intensities(noise, [tiny], tiny)
    assert not kept.applied and "kept the atlas vote" in kept.note


def test_a_wall_is_recognised_and_its_cavity_filled_within_it():
    _, truth = heart()  # a wall (label 2) all around the pool (label 1)
    array = sitk.GetArrayFromImage(truth)
    assert find_walls([array], [1, 2], truth.GetSpacing()) == [(2, 1)]
    holed = array.copy()
    holed[:, 26:30, 23:26] = 2  # a dark papillary muscle in the pool, taken for wall by an intensity model
    filled = fill_cavities(holed, [(2, 1)])
    block = (slice(None), slice(26, 30), slice(23, 26))
    assert np.all(filled[block][array[block] == 1] == 1)  # back in the cavity
    assert np.array_equal(filled == 0, array == 0)  # nothing outside the wall's outline changes
    assert np.sum(filled != array) < 0.05 * np.sum(array == 2)  # the wall keeps its shape (a digital disc's hull)
    assert np.array_equal(fill_cavities(holed, []), holed)


def test_labels_side_by_side_are_not_taken_for_a_wall():
    _, truth = heart()
    array = sitk.GetArrayFromImage(truth)
    apart = np.where(array == 2, 0, array)
    apart[:, 5:15, 5:15] = 2  # a second structure beside the pool, not around it
    assert find_walls([apart], [1, 2], truth.GetSpacing()) == []


def test_outline_offsets_are_learnt_from_how_the_atlas_contours_sit():
    image, truth = heart()
    array = sitk.GetArrayFromImage(truth)
    # contours drawn 3 mm (two voxels) outside the edges the intensities show, as some experts draw them
    drawn = apply_offsets(array, {1: 3.0, 2: 3.0}, [(2, 1)], truth)
    assert label_dice(_like(drawn, truth), truth)[2] < 0.85

    def relabel(atlas_image, prior):  # stands in for the intensity model: it finds the true edges
        return array.copy()

    offsets = calibrate_offsets([image], [drawn], [1, 2], [(2, 1)], relabel)
    assert 2.0 <= offsets[1] <= 3.5 and 2.0 <= offsets[2] <= 3.5
    assert label_dice(_like(apply_offsets(array, offsets, [(2, 1)], truth), truth),
                      _like(drawn, truth))[2] > 0.95
    same = calibrate_offsets([image], [array], [1, 2], [(2, 1)], relabel)
    assert same == {1: 0.0, 2: 0.0}  # contours on the edges: nothing to grow


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def test_between_subjects_defaults_register_affine_and_refine():
    target, truth = heart()
    atlases = [Atlas(*pair_to_atlas(other_subject(seed)), f"subject{seed}") for seed in (1, 2)]
    result = segment_with_atlases(target, atlases, options=RegistrationOptions(preset="fast"))
    assert all(item.plan.between_subjects for item in result.atlases)
    assert [stage.name for stage in result.atlases[0].registration.stages] == ["initialisation", "rigid", "affine"]
    assert "intensity-refined" in result.fusion and result.refinement
    assert any("different subject" in line for line in result.summary)
    dice = label_dice(result.label_map.image, truth)
    assert dice[1] > 0.85 and dice[2] > 0.6


def test_same_subject_defaults_deform_without_refinement():
    target, truth = heart()
    atlas_image, atlas_labels = heart(radius=11.0, seed=3)
    result = segment_with_atlases(target, [Atlas(atlas_image, LabelMap(atlas_labels, LabelTable()), "phase")],
                                  options=RegistrationOptions(preset="fast"))
    item = result.atlases[0]
    assert item.plan.relation == "aligned" and item.registration.stages[-1].name == "diffeomorphic"
    assert result.refinement == "" and result.summary[0].startswith("phase: same subject")
    assert label_dice(result.label_map.image, truth)[1] > 0.85


def pair_to_atlas(pair):
    image, labels = pair
    return image, LabelMap(labels, LabelTable())


@pytest.fixture
def files(tmp_path):
    target, _ = heart()
    atlas, labels = other_subject()
    paths = {}
    for name, image in (("target", target), ("atlas", atlas), ("labels", labels)):
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    return paths


def test_atlas_command_prints_what_it_chose(files, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    code = main(["atlas", str(files["target"]), "-o", str(out), "--atlas", str(files["atlas"]), str(files["labels"]),
                 "--preset", "fast"])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists()
    assert "a different subject" in printed and "on its labels dilated by 20 mm" in printed
    assert "kept mi" in printed or "kept correlation" in printed
    assert "adapted to the target's intensities" in printed


def test_atlas_command_keeps_settings_given_by_hand(files, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    code = main(["atlas", str(files["target"]), "-o", str(out), "--atlas", str(files["atlas"]), str(files["labels"]),
                 "--preset", "fast", "--transform", "affine", "--init", "geometry", "--metric", "mi",
                 "--mask-margin", "none", "--refine", "off"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "settings as given: start from the geometric centres, rigid + affine (mi) on the whole image" in printed
    assert "adapted" not in printed


@pytest.mark.parametrize("problem", ["constant target", "constant atlas", "tiny", "flat slab"])
@pytest.mark.parametrize("command", ["register", "atlas"])
def test_constant_or_tiny_images_fail_with_one_line(files, tmp_path, capsys, problem, command):
    bad = tmp_path / "bad.nii.gz"
    if problem.startswith("constant"):
        image = sitk.Image(heart()[0].GetSize(), sitk.sitkFloat32) + 7.0
        image.CopyInformation(heart()[0])
    elif problem == "tiny":
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 3, 3)).astype(np.float32))
    else:
        image = sitk.GetImageFromArray(np.random.default_rng(0).random((2, 40, 40)).astype(np.float32))
    sitk.WriteImage(image, str(bad))
    target, atlas = (files["target"], bad) if problem == "constant atlas" else (bad, files["atlas"])
    out = tmp_path / ("t.tfm" if command == "register" else "seg.nii.gz")
    if command == "register":
        argv = ["register", str(target), str(atlas), "-o", str(out)]
    else:
        labels = files["labels"]
        if problem == "constant atlas":
            labels = tmp_path / "bad_labels.nii.gz"
            label_image = sitk.Image(image.GetSize(), sitk.sitkUInt8)
            label_image.CopyInformation(image)
            label_image[5, 5, 2] = 1
            sitk.WriteImage(label_image, str(labels))
        argv = ["atlas", str(target), "-o", str(out), "--atlas", str(atlas), str(labels)]
    code = main(argv)
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.startswith("segtoolkit: error:") and len(error.strip().splitlines()) == 1
    assert ("constant image" in error) if problem.startswith("constant") else ("too small" in error)
    assert not out.exists()


def test_ctrl_c_inside_itk_stops_the_registration_without_a_traceback(capfd):
    fixed, _ = heart()
    moving, _ = heart(radius=11.0, seed=3)
    calls = []

    def press_ctrl_c(fraction, message):  # called from ITK's iteration event, i.e. while ITK runs
        calls.append(message)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        register(fixed, moving, "deformable", "fast", init="none", progress=press_ctrl_c)
    assert "Traceback" not in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    assert not any("deformable" in message for message in calls)  # stopped in the first stage


def test_atlas_workers_ignore_ctrl_c():
    previous = signal.getsignal(signal.SIGINT)
    try:
        _start_worker(1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(os.cpu_count() or 1)


def test_ctrl_c_during_atlas_with_two_workers_prints_one_line(files, tmp_path):
    """The terminal sends Ctrl-C to the whole process group: parent and workers."""
    out = tmp_path / "seg.nii.gz"
    argv = [sys.executable, "-c", "import sys; from SegToolkitLib.interfaces.cli import main; sys.exit(main())",
            "atlas", str(files["target"]), "-o", str(out), "--workers", "2", "--preset", "accurate",
            "--transform", "deformable", "--atlas", str(files["atlas"]), str(files["labels"]),
            "--atlas", str(files["atlas"]), str(files["labels"])]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                               cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_children(process.pid)) < 2 and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGINT)
    _, error = process.communicate(timeout=120)
    text = error.decode()
    assert process.returncode == 130, text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1 and "interrupted" in text
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".seg")]
    assert not _children(process.pid)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = task / "children"
        if children.exists():
            found += [int(value) for value in children.read_text().split()]
    return found


def sunnybrook(folder: Path, case: str) -> dict:
    meta = {item["case"]: item for item in json.loads((folder / "dataset.json").read_text())["cases"]}[case]
    return {"image": sitk.ReadImage(str(folder / meta["image"]), sitk.sitkFloat32),
            "labels": sitk.ReadImage(str(folder / meta["label"])),
            "slices": {int(k): v for k, v in meta["annotated_slices_0_based"].items()}}


@pytest.mark.shared_data
def test_sunnybrook_atlas_of_another_patient_with_defaults(shared_data):
    folder = shared_data / "sunnybrook_cardiac_lv"
    target, atlas = sunnybrook(folder, "SCD0000401_ED"), sunnybrook(folder, "SCD0000301_ED")
    assert compare_images(target["image"], sunnybrook(folder, "SCD0000401_ES")["image"]).aligned
    result = segment_with_atlases(target["image"], [Atlas(atlas["image"], LabelMap(atlas["labels"], LabelTable()),
                                                          "SCD0000301")])
    assert result.atlases[0].plan.between_subjects and result.refinement.startswith("labels adapted")
    slices = target["slices"][1]
    found = sitk.GetArrayViewFromImage(result.label_map.image)[slices] == 1
    truth = sitk.GetArrayViewFromImage(target["labels"])[slices] == 1
    assert 2 * np.sum(found & truth) / (found.sum() + truth.sum()) > 0.8  # measured 0.855
