"""DICOM series input: every orientation, files out of order, and broken series refused with a clear error."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_synthetic import AXIAL, CORONAL, NEGATED, SAGITTAL, make_volume, oblique, write_series
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from SegToolkitLib.errors import InputError
from SegToolkitLib.interfaces.cli import main
from SegToolkitLib.io import read_image
from SegToolkitLib.io.dicom_series import choose_series, scan_folder

ORIENTATIONS = {"axial": AXIAL, "sagittal": SAGITTAL, "coronal": CORONAL, "negated rows/columns": NEGATED,
                "oblique": oblique()}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_series_in_any_orientation_is_read_with_its_geometry(tmp_path, orientation):
    image = make_volume(direction=ORIENTATIONS[orientation], seed=1)
    write_series(tmp_path / "ct", image, shuffle=True)  # file names in scrambled order

    read = read_image(tmp_path / "ct")

    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetSpacing(), image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image))


def test_missing_slice_is_refused_not_spaced_evenly(tmp_path):
    write_series(tmp_path / "ct", make_volume(), drop=[5])
    with pytest.raises(InputError, match=r"1 slice\(s\) missing"):
        read_image(tmp_path / "ct")


def test_duplicate_slice_positions_are_refused(tmp_path):
    write_series(tmp_path / "ct", make_volume(), duplicate=[3])
    with pytest.raises(InputError, match="occur twice"):
        read_image(tmp_path / "ct")


def test_uneven_spacing_is_refused(tmp_path):
    image = make_volume()
    write_series(tmp_path / "ct", image, shift_mm={k: (0, 0, 0.9) for k in range(6, 12)})
    with pytest.raises(InputError, match="uneven slice spacing"):
        read_image(tmp_path / "ct")


def test_gantry_tilt_is_refused(tmp_path):
    write_series(tmp_path / "ct", make_volume(), shift_mm={k: (0, 0.4 * k, 0) for k in range(12)})
    with pytest.raises(InputError, match="shifted sideways"):
        read_image(tmp_path / "ct")


def test_truncated_slice_is_refused(tmp_path):
    write_series(tmp_path / "ct", make_volume())
    victim = sorted((tmp_path / "ct").iterdir())[4]
    victim.write_bytes(victim.read_bytes()[:-700])
    with pytest.raises(InputError, match="incomplete"):
        read_image(tmp_path / "ct")


def test_mixed_orientations_and_sizes_in_one_series_are_refused(tmp_path):
    uid = generate_uid()
    write_series(tmp_path / "mixed", make_volume(), series_uid=uid)
    write_series(tmp_path / "mixed" / "scout", make_volume(shape=(2, 32, 32), direction=CORONAL), series_uid=uid)
    with pytest.raises(InputError, match="different orientations"):
        read_image(tmp_path / "mixed")
    write_series(tmp_path / "sizes", make_volume(), series_uid=uid)
    write_series(tmp_path / "sizes" / "small", make_volume(shape=(2, 16, 16), origin=(0, 0, 100)), series_uid=uid)
    with pytest.raises(InputError, match="different sizes"):
        read_image(tmp_path / "sizes")


def test_series_are_listed_and_picked_by_uid(tmp_path, capsys):
    big = make_volume(seed=2)
    small = make_volume(shape=(4, 32, 32), direction=SAGITTAL, seed=3)
    big_uid = write_series(tmp_path / "study", big)
    small_uid = write_series(tmp_path / "study", small)

    found = {series.uid: series for series in scan_folder(tmp_path / "study")}
    assert set(found) == {big_uid, small_uid}
    assert choose_series(tmp_path / "study").uid == big_uid  # the largest by default
    picked = read_image(tmp_path / "study", series_uid=small_uid)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(picked), sitk.GetArrayFromImage(small))
    with pytest.raises(InputError, match="no DICOM series with SeriesInstanceUID 9.9"):
        read_image(tmp_path / "study", series_uid="9.9")

    assert main(["info", str(tmp_path / "study")]) == 0
    listing = capsys.readouterr().out
    assert big_uid in listing and small_uid in listing and "sagittal" in listing and "pick one with --series" \
        in listing
    assert main(["info", str(tmp_path / "study"), "--series", small_uid]) == 0
    described = capsys.readouterr().out
    assert "32 32 4" in described and "orientation       sagittal" in described


def test_broken_series_is_reported_by_info_without_failing(tmp_path, capsys):
    write_series(tmp_path / "ct", make_volume(), drop=[3, 4])
    assert main(["info", str(tmp_path / "ct"), "--format", "json"]) == 2  # the one series cannot be read
    captured = capsys.readouterr()
    assert "2 slice(s) missing" in captured.err


def test_enhanced_multiframe_ct_is_read_by_frame_positions(tmp_path):
    image = make_volume(shape=(5, 16, 16), direction=oblique(), seed=5)
    path = tmp_path / "mf" / "enhanced.dcm"
    path.parent.mkdir()
    _write_multiframe(path, image, order=[3, 0, 4, 1, 2], slope=2.0, intercept=-1000.0)

    read = read_image(tmp_path / "mf")

    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(image) * 2.0 - 1000.0)


@pytest.mark.shared_data
def test_real_series_is_described_by_info(shared_data, capsys):
    folder = shared_data / "totalsegmentator_ct_examples" / "dicom" / "ct_dicom_example"
    assert main(["info", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "512 512 20" in text and "axial" in text and "CT-like" in text and "extent_ras_mm" in text


def _write_multiframe(path, image, order, slope, intercept):
    """A minimal Enhanced CT image: frames stored in ``order``, each with its own plane position."""
    from pydicom.sequence import Sequence

    direction = np.array(image.GetDirection()).reshape(3, 3)
    array = sitk.GetArrayFromImage(image)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CT"
    ds.FrameOfReferenceUID, ds.PatientID, ds.PatientName, ds.PatientBirthDate = generate_uid(), "P1", "Test", ""
    ds.PatientSex, ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "O", "20260101", "1200", "1", ""
    ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 5, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = array.shape[1], array.shape[2], len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = pydicom.Dataset()
    orientation, measures, transform = pydicom.Dataset(), pydicom.Dataset(), pydicom.Dataset()
    orientation.ImageOrientationPatient = [f"{v:.6f}" for v in list(direction[:, 0]) + list(direction[:, 1])]
    measures.PixelSpacing = [f"{image.GetSpacing()[1]:.6f}", f"{image.GetSpacing()[0]:.6f}"]
    measures.SliceThickness = f"{image.GetSpacing()[2]:.6f}"
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = slope, intercept, "HU"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    groups = []
    for k in order:
        group, position = pydicom.Dataset(), pydicom.Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        group.PlanePositionSequence = Sequence([position])
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(groups)
    ds.PixelData = np.ascontiguousarray(array[order].astype(np.int16)).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_commands_refuse_a_broken_series_and_write_nothing(tmp_path, capsys):
    write_series(tmp_path / "ct", make_volume(), duplicate=[2])
    assert main(["threshold", str(tmp_path / "ct"), "--lower", "40", "-o", str(tmp_path / "mask.nii.gz")]) == 2
    assert "occur twice" in capsys.readouterr().err
    assert not (tmp_path / "mask.nii.gz").exists()
