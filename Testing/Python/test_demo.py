"""The demo runner: results, measurements, agreement with the truth, the overview picture and the command."""

from __future__ import annotations

import csv
import re
import time

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.errors import OutputError
from SegToolkitLib.interfaces import demo as demo_module
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.interfaces.demo import DemoResult, run_demo
from SegToolkitLib.io import LabelMap, LabelTable, read_label_map
from SegToolkitLib.samples.phantom import LEFT_KIDNEY, ORGANS, VERTEBRAE


def bone_threshold_step(phantom, progress):
    """A real (if simple) method: bone is the only tissue above 300 HU."""
    started = time.perf_counter()
    smooth = sitk.SmoothingRecursiveGaussian(phantom.image, 1.0)
    bone = sitk.BinaryThreshold(smooth, 300.0, 3000.0, VERTEBRAE, 0)
    if progress:
        progress(1.0, "bone")
    labels = LabelTable()
    labels.add(VERTEBRAE, "bone")
    return [DemoResult("bone threshold", LabelMap(sitk.Cast(bone, sitk.sitkUInt8), labels),
                       time.perf_counter() - started)]


def broken_step(phantom, progress):
    raise RuntimeError("this method is broken")


def wrong_grid_step(phantom, progress):
    image = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    return [DemoResult("wrong grid", LabelMap(image, LabelTable()), 0.0)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "out"  # does not exist yet: the demo creates it
    fractions = []
    report = run_demo(folder, steps=[bone_threshold_step], progress=lambda f, m: fractions.append(f))
    return report, folder, fractions


def test_demo_writes_every_output(demo_run):
    report, folder, fractions = demo_run
    names = {"phantom.nii.gz", "truth.nii.gz", "truth.seg.nrrd", "bone_threshold.nii.gz", "bone_threshold.seg.nrrd",
             "measurements.csv", "agreement.csv", "overview.png"}
    assert names <= {path.name for path in folder.iterdir()}
    assert {path.name for path in report.files} == names
    assert not [path for path in folder.iterdir() if path.name.startswith(".")]  # no temporary files left
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert report.failures == [] and report.skipped == []


def test_result_files_keep_names_and_values(demo_run):
    _, folder, _ = demo_run
    segmentation = read_label_map(folder / "bone_threshold.seg.nrrd")
    assert segmentation.present_values() == [VERTEBRAE]
    assert segmentation.labels.name(VERTEBRAE) == "bone"  # the method's own name wins over the phantom's
    truth = read_label_map(folder / "truth.seg.nrrd")
    assert {label.name for label in truth.labels} == {name for name, _, _ in ORGANS.values()}


def test_agreement_with_the_truth(demo_run):
    report, folder, _ = demo_run
    rows = {int(row["label"]): row for row in csv.DictReader((folder / "agreement.csv").open())}
    assert set(rows) == set(ORGANS)
    assert float(rows[VERTEBRAE]["dice"]) > 0.9
    assert rows[VERTEBRAE]["segmented"] == "yes"
    assert rows[LEFT_KIDNEY]["segmented"] == "no" and rows[LEFT_KIDNEY]["dice"] == ""
    assert float(rows[LEFT_KIDNEY]["truth_volume_ml"]) > 10


def test_measurements_csv_has_rows_for_each_label(demo_run):
    _, folder, _ = demo_run
    rows = list(csv.DictReader((folder / "measurements.csv").open()))
    truth = {int(row["label"]): row for row in rows if row["source"] == "truth"}
    assert set(truth) == set(ORGANS)
    for value, (_, _, hu) in ORGANS.items():
        assert float(truth[value]["intensity_mean"]) == pytest.approx(hu, abs=60)  # edges pull the mean a bit
    assert [int(row["label"]) for row in rows if row["source"] == "bone threshold"] == [VERTEBRAE]


def test_overview_png_is_a_real_picture(demo_run):
    _, folder, _ = demo_run
    picture = sitk.ReadImage(str(folder / "overview.png"))
    width, height = picture.GetSize()
    assert width >= 1000 and 300 <= height <= width
    pixels = sitk.GetArrayFromImage(picture)
    assert pixels.std() > 20  # not a blank canvas
    # The result's contour colour (tab10 blue, 31,119,180) appears in the picture.
    assert np.any(np.all(np.abs(pixels[..., :3].astype(int) - [31, 119, 180]) < 30, axis=-1))


def test_table_shows_volumes_and_dice(demo_run):
    report, _, _ = demo_run
    lines = report.table.splitlines()
    assert lines[0].split()[:3] == ["method", "seconds", "liver"]
    bone_line = next(line for line in lines if line.startswith("bone threshold"))
    volume, dice = re.search(r"(\d+\.\d) \((\d\.\d\d)\)", bone_line).groups()
    assert float(dice) > 0.9
    row = next(row for row in report.agreement if row["label"] == VERTEBRAE)
    assert float(volume) == pytest.approx(row["volume_ml"], abs=0.05)


def test_a_failing_step_does_not_hide_the_others(tmp_path):
    report = run_demo(tmp_path / "out", steps=[broken_step, wrong_grid_step, bone_threshold_step,
                                               "no_such_package_xyz.methods:step"])
    assert [result.name for result in report.results] == ["bone threshold"]
    assert len(report.failures) == 2
    assert "RuntimeError: this method is broken" in report.failures[0]
    assert "not on the phantom grid" in report.failures[1]
    assert report.skipped and "no_such_package_xyz" in report.skipped[0]
    assert (tmp_path / "out" / "bone_threshold.seg.nrrd").is_file()


def test_output_folder_rules(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        run_demo(tmp_path / "missing" / "out", steps=[])
    assert not (tmp_path / "missing").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        run_demo(tmp_path / "file", steps=[])


def test_registered_steps_resolve():
    for step in demo_module.DEMO_STEPS:
        module, _, function = step.partition(":")
        assert module.startswith("SegToolkitLib.") and function, step
        try:
            assert callable(demo_module.resolve_step(step)), step
        except ModuleNotFoundError as error:  # optional extras (torch) may be missing
            assert not (error.name or "").startswith("SegToolkitLib"), step


@pytest.mark.slow
def test_demo_command(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["demo"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    folder = tmp_path / "segtoolkit_demo"
    assert (folder / "overview.png").is_file() and (folder / "truth.seg.nrrd").is_file()
    assert "truth" in captured.out and "liver lesion" in captured.out
    if demo_module.DEMO_STEPS:
        assert re.search(r"\d+\.\d \(\d\.\d\d\)", captured.out), captured.out
    assert main(["demo", "-o", str(tmp_path / "no" / "such")]) == 2
    assert "does not exist" in capsys.readouterr().err
