"""The foundation's bad-input contract, through the real command line: one line naming the file and the
problem, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.interfaces.cli import main


def _image(tmp_path, name="ct.nii.gz", shape=(8, 10, 12)):
    array = np.zeros(shape, np.int16)
    array[2:6, 3:7, 4:9] = 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.0))
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path, image


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def _assert_clean_failure(code, error, *fragments):
    assert code == 2
    assert "Traceback" not in error
    assert len(error.splitlines()) == 1, error
    assert error.startswith("segtoolkit: error: ")
    for fragment in fragments:
        assert fragment in error, error


def test_unreadable_file(tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    out = tmp_path / "out.nii.gz"
    code, error = _run(capsys, ["threshold", bad, "-o", out, "--lower", "50"])
    _assert_clean_failure(code, error, "broken.nii.gz")
    assert not out.exists()


def test_unsupported_extension(tmp_path, capsys):
    bad = tmp_path / "scan.xyz"
    bad.write_text("not an image")
    code, error = _run(capsys, ["threshold", bad, "-o", tmp_path / "out.nii.gz", "--lower", "50"])
    _assert_clean_failure(code, error, "scan.xyz", "unsupported file type")


def test_vector_image_where_scalar_needed(tmp_path, capsys):
    _, image = _image(tmp_path)
    vector = tmp_path / "vector.nrrd"
    sitk.WriteImage(sitk.Compose([image, image, image]), str(vector))
    code, error = _run(capsys, ["threshold", vector, "-o", tmp_path / "out.nii.gz", "--lower", "50"])
    _assert_clean_failure(code, error, "vector.nrrd", "values per voxel")


def test_4d_image_where_3d_needed(tmp_path, capsys):
    _, image = _image(tmp_path)
    series = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([image, image]), str(series))
    code, error = _run(capsys, ["threshold", series, "-o", tmp_path / "out.nii.gz", "--lower", "50"])
    _assert_clean_failure(code, error, "series.nii.gz", "4D")


@pytest.mark.parametrize("values,problem", [((0.0, 0.4, 1.0), "non-integer"), ((0, -2, 1), "negative")])
def test_bad_label_map_values(tmp_path, capsys, values, problem):
    array = np.zeros((4, 5, 6), np.float32)
    array.flat[: len(values)] = values
    labels = tmp_path / "labels.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(labels))
    code, error = _run(capsys, ["measure", labels])
    _assert_clean_failure(code, error, "labels.nii.gz", problem)


def test_image_and_labels_on_different_grids(tmp_path, capsys):
    image_path, image = _image(tmp_path)
    labels = sitk.Cast(image > 50, sitk.sitkUInt8)
    labels.SetSpacing((1.0, 1.0, 1.0))
    labels_path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(labels, str(labels_path))
    code, error = _run(capsys, ["measure", labels_path, "--image", image_path])
    _assert_clean_failure(code, error, "same voxel grid")


def test_missing_output_folder(tmp_path, capsys):
    image_path, _ = _image(tmp_path)
    out = tmp_path / "missing" / "out.nii.gz"
    code, error = _run(capsys, ["threshold", image_path, "-o", out, "--lower", "50"])
    _assert_clean_failure(code, error, "does not exist")
    assert not out.parent.exists()


def test_output_equal_to_input(tmp_path, capsys):
    image_path, _ = _image(tmp_path)
    before = image_path.read_bytes()
    code, error = _run(capsys, ["threshold", image_path, "-o", image_path, "--lower", "50"])
    _assert_clean_failure(code, error, "same as an input")
    assert image_path.read_bytes() == before
