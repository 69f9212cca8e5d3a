"""``segtoolkit measure`` and ``segtoolkit compare``: formats, output files and one-line errors on bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.measurement.evaluation import COLUMNS as COMPARE_COLUMNS
from SegToolkitLib.measurement.shape import COLUMNS_3D, INTENSITY_COLUMNS

SPACING = (0.8, 0.9, 2.5)


def write(path: Path, array: np.ndarray, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def case(tmp_path) -> dict[str, Path]:
    """A label map with labels 1 and 2, a shifted prediction, a CT-like image and a names file."""
    labels = np.zeros((8, 20, 24), np.uint8)
    labels[2:6, 4:14, 5:15] = 1
    labels[3:5, 15:18, 17:21] = 2
    prediction = np.roll(labels, 1, axis=2)
    ct = np.random.default_rng(0).normal(50, 10, labels.shape).astype(np.float32)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"1": "liver", "2": "lesion", "5": "spleen"}))
    return {"labels": write(tmp_path / "labels.nii.gz", labels),
            "prediction": write(tmp_path / "prediction.nrrd", prediction),
            "image": write(tmp_path / "ct.nii.gz", ct), "names": names}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_measure_table_csv_and_json(case, capsys):
    code, table, _ = run_cli(capsys, "measure", case["labels"], "--labels", case["names"])
    assert code == 0
    assert "volume_ml" in table.splitlines()[0] and "liver" in table and "lesion" in table

    code, text, _ = run_cli(capsys, "measure", case["labels"], "--image", case["image"], "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0
    assert list(rows[0]) == list(COLUMNS_3D) + list(INTENSITY_COLUMNS)
    assert float(rows[0]["volume_ml"]) == pytest.approx(400 * 0.8 * 0.9 * 2.5 / 1000.0, abs=0.01)

    code, text, _ = run_cli(capsys, "measure", case["labels"], "--labels", case["names"], "--format", "json")
    document = json.loads(text)
    assert code == 0 and document["schema"] == "segtoolkit.measurements"
    assert document["sources"]["label_map"] == str(case["labels"])
    spleen = next(row for row in document["labels"] if row["label"] == 5)
    assert spleen["name"] == "spleen" and spleen["present"] is False and spleen["volume_ml"] is None


def test_measure_writes_the_output_file(case, capsys, tmp_path):
    output = tmp_path / "measurements.csv"
    code, out, _ = run_cli(capsys, "measure", case["labels"], "--format", "csv", "-o", output)
    assert code == 0 and out == ""
    assert output.read_text().startswith("label,name,present,voxel_count,volume_ml")


def test_compare_formats_and_resample(case, capsys, tmp_path):
    code, table, _ = run_cli(capsys, "compare", case["prediction"], case["labels"])
    assert code == 0 and "dice" in table.splitlines()[0] and "mean" in table

    code, text, _ = run_cli(capsys, "compare", case["prediction"], case["labels"], "--format", "json",
                            "--labels", case["names"])
    document = json.loads(text)
    rows = {row["label"]: row for row in document["labels"]}
    assert code == 0 and document["schema"] == "segtoolkit.comparison"
    assert list(rows[1]) == list(COMPARE_COLUMNS)
    assert rows[1]["dice"] == pytest.approx(9 / 10)
    assert rows[5]["status"] == "both_empty"

    shifted = write(tmp_path / "shifted.nii.gz", sitk.GetArrayFromImage(sitk.ReadImage(str(case["labels"]))),
                    origin=(0.0, 0.0, 2.5))
    code, _, err = run_cli(capsys, "compare", shifted, case["labels"])
    assert code == 2 and "--resample" in err
    code, text, _ = run_cli(capsys, "compare", shifted, case["labels"], "--resample", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0 and float(rows[0]["dice"]) < 1.0 and rows[0]["status"] == "ok"


def test_compare_on_annotated_slices_or_a_mask_and_2d_areas(case, capsys, tmp_path):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case["labels"])))
    sparse = labels.copy()
    sparse[[2, 4, 5]] = 0  # the reference is annotated on slices 3 only
    prediction = labels.copy()
    prediction[2] = 0      # the prediction differs from the full labels on slice 2 only
    reference_path = write(tmp_path / "sparse.nii.gz", sparse)
    prediction_path = write(tmp_path / "pred.nii.gz", prediction)
    code, text, _ = run_cli(capsys, "compare", prediction_path, reference_path, "--format", "json")
    assert code == 0 and json.loads(text)["labels"][0]["dice"] < 0.8
    for option in (["--slices", "annotated"], ["--slices", "3"]):
        code, text, _ = run_cli(capsys, "compare", prediction_path, reference_path, "--format", "json", *option)
        rows = json.loads(text)["labels"]
        assert code == 0 and rows[0]["dice"] == 1.0 and rows[0]["volume_difference_ml"] == 0.0
    region = np.zeros_like(labels)
    region[3] = 1
    mask = write(tmp_path / "region.nii.gz", region)
    code, text, _ = run_cli(capsys, "compare", prediction_path, reference_path, "--format", "json", "--mask", mask)
    assert code == 0 and json.loads(text)["labels"][0]["dice"] == 1.0
    code, _, err = run_cli(capsys, "compare", prediction_path, reference_path, "--slices", "3,x")
    assert code == 2 and "--slices" in err
    flat = write(tmp_path / "flat.nii.gz", labels[3], spacing=(0.5, 0.5))
    code, table, _ = run_cli(capsys, "compare", flat, flat)
    assert code == 0 and "area_reference_mm2" in table and "volume" not in table
    code, table, _ = run_cli(capsys, "measure", flat)
    assert code == 0 and "ellipse_circumference_mm" in table and "area_cm2" in table and "volume" not in table


def _bad_inputs(case: dict[str, Path], tmp: Path) -> dict[str, tuple[list, str]]:
    corrupt = tmp / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b this is not an image")
    fractional = write(tmp / "prob.nii.gz", np.full((4, 5, 6), 0.5, np.float32))
    negative = write(tmp / "negative.nii.gz", np.full((4, 5, 6), -1, np.int16))
    other_grid = write(tmp / "other.nii.gz", np.zeros((8, 20, 24), np.float32), spacing=(1.0, 1.0, 1.0))
    labels = case["labels"]
    return {
        "unreadable": (["measure", corrupt], "corrupt.nii.gz"),
        "missing file": (["compare", tmp / "nope.nii.gz", labels], "nope.nii.gz"),
        "non-integer": (["measure", fractional], "non-integer"),
        "negative": (["measure", negative], "negative"),
        "image on another grid": (["measure", labels, "--image", other_grid], "same voxel grid"),
        "output is an input": (["measure", labels, "-o", labels], "same as an input"),
        "compare output is an input": (["compare", case["prediction"], labels, "-o", case["prediction"]],
                                       "same as an input"),
        "missing output folder": (["measure", labels, "-o", tmp / "missing" / "out.csv"], "does not exist"),
    }


@pytest.mark.parametrize("problem", ["unreadable", "missing file", "non-integer", "negative", "image on another grid",
                                     "output is an input", "compare output is an input", "missing output folder"])
def test_bad_input_gives_one_line_error_and_writes_nothing(case, capsys, tmp_path, problem):
    argv, expected = _bad_inputs(case, tmp_path)[problem]
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    code, out, err = run_cli(capsys, *argv)

    assert code == 2
    assert out == ""
    assert err.startswith("segtoolkit: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert expected in err
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == before  # nothing written
