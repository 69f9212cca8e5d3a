"""Synthetic DICOM series written with pydicom for the DICOM tests (any orientation, files out of order)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

AXIAL = np.eye(3)
# direction matrices: columns are the i (along a row), j (down a column) and k (slice) directions in LPS
SAGITTAL = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], dtype=float).T
CORONAL = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float).T
NEGATED = np.diag([-1.0, -1.0, 1.0])  # row and column directions negated (the TotalSegmentator bug case)


def oblique(angle_deg: float = 20.0) -> np.ndarray:
    a = np.radians(angle_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a / 2), -np.sin(a / 2)], [0, np.sin(a / 2), np.cos(a / 2)]])
    return rx @ rz


def make_volume(shape=(12, 32, 32), spacing=(0.9, 0.8, 2.5), direction=AXIAL, origin=(-12.0, 30.0, 40.0),
                seed: int = 0) -> sitk.Image:
    """A small CT-like int16 volume (k, j, i) = shape with the given geometry (direction columns = i, j, k)."""
    rng = np.random.default_rng(seed)
    array = (rng.normal(40, 10, size=shape)).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.asarray(direction, float).ravel()))
    return image


def write_series(folder: Path, image: sitk.Image, series_uid: str | None = None, study_uid: str | None = None,
                 frame_of_reference: str | None = None, shuffle: bool = True, modality: str = "CT",
                 drop: Sequence[int] = (), duplicate: Sequence[int] = (), shift_mm: dict | None = None) -> str:
    """Write ``image`` as single-frame CT files named in scrambled order; returns the SeriesInstanceUID.

    ``drop`` leaves slices out, ``duplicate`` writes slices twice, ``shift_mm`` moves slice k by a vector (mm).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or "1.2.826.0.1.3680043.8.498.1"
    frame_of_reference = frame_of_reference or generate_uid()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    array = sitk.GetArrayFromImage(image)
    ks = [k for k in range(image.GetDepth()) if k not in drop] + list(duplicate)
    order = np.random.default_rng(7).permutation(len(ks)) if shuffle else range(len(ks))
    for name, k in zip(order, ks):
        position = np.array(image.TransformIndexToPhysicalPoint((0, 0, k)))
        if shift_mm and k in shift_mm:
            position = position + np.asarray(shift_mm[k], float)
        ds = _slice_dataset(array[k], position, direction, image.GetSpacing(), series_uid, study_uid,
                            frame_of_reference, modality, k)
        ds.save_as(folder / f"IM{int(name):04d}_{np.random.default_rng(int(name) + k * 31).integers(1e6)}.dcm",
                   enforce_file_format=True)
    return series_uid


def _slice_dataset(pixels, position, direction, spacing, series_uid, study_uid, frame_of_reference, modality, k):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "PHANTOM01", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_of_reference
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "ACC1"
    ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", modality, 3, k + 1
    ds.Manufacturer, ds.PositionReferenceIndicator = "Test", ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in list(direction[:, 0]) + list(direction[:, 1])]
    ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
    ds.SliceThickness = f"{spacing[2]:.6f}"
    ds.KVP, ds.AcquisitionNumber = "120", 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    return ds
