"""``segtoolkit info IMAGE``: size, spacing, origin, direction, extent in LPS and RAS, intensities, a kind hint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SegToolkitLib.interfaces.cli import main


def test_info_describes_an_image_in_lps_and_ras(tmp_path, capsys):
    array = np.full((4, 5, 6), -1000, dtype=np.int16)
    array[1:3, 1:4, 1:5] = 300
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))

    assert main(["info", str(tmp_path / "ct.nii.gz"), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)["image"]

    assert info["size"] == [6, 5, 4] and info["spacing_mm"] == [0.5, 0.75, 2.0]
    assert info["origin_lps_mm"] == [10.0, -20.0, 30.0] and info["origin_ras_mm"] == [-10.0, 20.0, 30.0]
    assert info["extent_lps_mm"] == [[10.0, 12.5], [-20.0, -17.0], [30.0, 36.0]]
    assert info["extent_ras_mm"] == [[-12.5, -10.0], [17.0, 20.0], [30.0, 36.0]]
    assert (info["intensity_min"], info["intensity_max"]) == (-1000.0, 300.0)
    assert info["orientation"] == "axial" and info["kind"].startswith("CT-like")


def test_info_calls_a_mask_a_mask_and_refuses_a_missing_path(tmp_path, capsys):
    mask = sitk.GetImageFromArray(np.eye(5, dtype=np.uint8)[None].repeat(3, axis=0))
    sitk.WriteImage(mask, str(tmp_path / "mask.nrrd"))
    assert main(["info", str(tmp_path / "mask.nrrd")]) == 0
    assert "binary mask" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing.nii.gz")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["--series"])
def test_info_series_option_needs_a_known_uid(tmp_path, capsys, missing):
    from dicom_synthetic import make_volume, write_series

    write_series(tmp_path / "ct", make_volume())
    assert main(["info", str(tmp_path / "ct"), missing, "1.2.3"]) == 2
    assert "no DICOM series with SeriesInstanceUID 1.2.3" in capsys.readouterr().err
