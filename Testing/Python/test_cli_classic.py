import numpy as np
import pytest
import SimpleITK as sitk
from classic_helpers import centre_point, dice, disk_image, ellipsoid_image

from SegToolkitLib.interfaces.cli import app


@pytest.fixture(autouse=True)
def classic_commands_only(monkeypatch):
    """Build the parser from this issue's commands only, independent of the other command modules."""
    monkeypatch.setattr(app, "COMMAND_MODULES", ("threshold", "grow", "snake"))


@pytest.fixture
def volume(tmp_path):
    image, truth = ellipsoid_image()
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, truth


def point_text(point):
    """Seeds with negative coordinates go as --seed=X,Y,Z so argparse does not take them for options."""
    return ",".join(f"{v:.4f}" for v in point)


def test_threshold_command_writes_mask_with_input_geometry(volume, tmp_path):
    path, truth = volume
    out = tmp_path / "mask.nii.gz"
    assert app.main(["threshold", str(path), "-o", str(out), "--lower", "50", "--largest", "--fill-holes"]) == 0
    result = sitk.ReadImage(str(out))
    assert dice(result, truth) > 0.98
    assert np.allclose(result.GetDirection(), truth.GetDirection()) and np.allclose(result.GetOrigin(),
                                                                                    truth.GetOrigin())


def test_otsu_and_seg_nrrd_output(volume, tmp_path):
    path, truth = volume
    out = tmp_path / "mask.seg.nrrd"
    seed = "--seed=" + point_text(centre_point(truth))
    assert app.main(["threshold", str(path), "-o", str(out), "--otsu", seed]) == 0
    assert out.is_file()


def test_grow_command_with_lps_seed(volume, tmp_path):
    path, truth = volume
    out = tmp_path / "grown.nii.gz"
    assert app.main(["grow", str(path), "-o", str(out), "--seed=" + point_text(centre_point(truth))]) == 0
    assert dice(sitk.ReadImage(str(out)), truth) > 0.95


def test_grow_competitive_with_labelled_and_background_seeds(volume, tmp_path):
    path, truth = volume
    out = tmp_path / "labels.nii.gz"
    corner = sitk.ReadImage(str(path)).TransformIndexToPhysicalPoint((1, 1, 1))
    assert app.main(["grow", str(path), "-o", str(out), "--method", "competitive",
                     "--seed=2:" + point_text(centre_point(truth)), "--background-seed=" + point_text(corner)]) == 0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert set(np.unique(labels)) == {0, 2} and dice(labels == 2, sitk.GetArrayFromImage(truth)) > 0.95


def test_snake_command_2d(tmp_path):
    image, truth = disk_image()
    path, out = tmp_path / "disk.nii.gz", tmp_path / "snake.nii.gz"
    sitk.WriteImage(image, str(path))
    assert app.main(["snake", str(path), "-o", str(out), "--seed=" + point_text(centre_point(truth))]) == 0
    assert dice(sitk.ReadImage(str(out)), truth) > 0.9


@pytest.mark.parametrize("arguments, message", [
    (["grow", "{image}", "--seed", "900,900,900"], "outside the image"),
    (["grow", "{image}", "--seed", "1,2"], "3D"),
    (["grow", "{image}", "--seed={seed}", "--lower", "300", "--upper", "400"], "empty"),
    (["grow", "{image}", "--seed={seed}", "--lower", "-1000", "--upper", "1000"], "floods"),
    (["threshold", "{image}", "--lower", "10", "--upper", "5"], "above upper"),
    (["grow", "{image}", "--seed=1:{seed}"], "competitive"),
    (["snake", "{image}", "--seed", "900,900,900"], "outside the image"),
    (["snake", "{image}", "--seed={seed}", "--lower", "5"], "both --lower and --upper"),
    (["snake", "{image}", "--seed={seed}", "--iterations", "-1"], "iterations -1"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(volume, tmp_path, capsys, arguments, message):
    path, truth = volume
    out = tmp_path / "out.nii.gz"
    argv = [a.format(image=path, seed=point_text(centre_point(truth))) for a in arguments] + ["-o", str(out)]
    assert app.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("segtoolkit: error:") and message in error and "\n" not in error
    assert not out.exists()


def test_constant_and_nan_images_are_refused(tmp_path, capsys):
    for name, array in (("constant", np.zeros((8, 8, 8), np.float32)),
                        ("nan", np.where(np.eye(8)[None].repeat(8, 0) > 0, np.nan, 1.0).astype(np.float32))):
        path, out = tmp_path / f"{name}.mha", tmp_path / f"{name}_out.nii.gz"  # NIfTI would not keep NaN
        sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
        assert app.main(["grow", str(path), "-o", str(out), "--seed", "4,4,4", "--ijk"]) == 2
        assert not out.exists()
    assert "NaN" in capsys.readouterr().err


def test_grow_and_snake_say_what_they_segmented(volume, tmp_path, capsys):
    path, truth = volume
    seed = "--seed=" + point_text(centre_point(truth))
    assert app.main(["grow", str(path), "-o", str(tmp_path / "g.nii.gz"), seed]) == 0
    out = capsys.readouterr().out
    assert "volume" in out and "mL" in out and "intensity range" in out and "seed intensity" in out
    assert app.main(["snake", str(path), "-o", str(tmp_path / "s.nii.gz"), seed]) == 0
    out = capsys.readouterr().out
    assert "volume" in out and "feature: region probability" in out and "iterations" in out


def test_seed_unlike_its_surroundings_is_warned_about(tmp_path, capsys):
    image, truth = ellipsoid_image(noise=2.0, oblique=False)
    array = sitk.GetArrayFromImage(image)
    array[11:14, 31:34, 31:34] = 400.0  # a small bright spot (a calcification) right at the click
    spot = sitk.GetImageFromArray(array)
    spot.CopyInformation(image)
    path = tmp_path / "spot.nii.gz"
    sitk.WriteImage(spot, str(path))
    assert app.main(["grow", str(path), "-o", str(tmp_path / "g.nii.gz"), "--seed", "32,32,12", "--seed", "28,36,12",
                     "--ijk"]) == 0
    error = capsys.readouterr().err
    assert "warning: the seed at voxel (32, 32, 12) has value 400, unlike its surroundings" in error
    assert "(28, 36, 12)" not in error


def test_snake_refuses_nonsense_iterations_and_hints_at_ras(volume, tmp_path, capsys):
    path, truth = volume
    out = tmp_path / "s.nii.gz"
    for value in ("-1", "0"):
        assert app.main(["snake", str(path), "-o", str(out), "--seed=" + point_text(centre_point(truth)),
                         "--iterations", value]) == 2
        assert "iterations" in capsys.readouterr().err and not out.exists()
    x, y, z = centre_point(truth)
    assert app.main(["snake", str(path), "-o", str(out), f"--seed={-x:.3f},{-y:.3f},{z:.3f}"]) == 2
    assert "add --ras" in capsys.readouterr().err and not out.exists()
    assert app.main(["snake", str(path), "-o", str(out), f"--seed={-x:.3f},{-y:.3f},{z:.3f}", "--ras"]) == 0
