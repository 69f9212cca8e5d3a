"""DICOM RT Structure Sets (RTSTRUCT): label maps as closed planar contours for radiotherapy planning systems.

No maintained library writes RTSTRUCT from a label map without OpenCV (rt-utils needs it) and highdicom does not
cover it, so the contours are our own: on each slice of the reference series, scikit-image's marching squares
traces the 0.5 iso-line of each label's mask (sub-pixel, between voxel centres), collinear points are dropped, and
each closed line becomes one ``CLOSED_PLANAR`` contour in patient coordinates (LPS mm) that references the slice
it lies on. Several islands give several contours; a hole is its own contour inside the outer one, and readers fill
a slice's contours with the even-odd rule (what most planning systems do), which :func:`read_rtstruct` does too.
The writer rasterises what it wrote back onto the grid and refuses to publish a file whose contours do not give the
label map back (Dice below 0.95 for any structure).

File names: ``NAME.rtstruct.dcm``, or any ``.dcm`` with ``--format dicom-rtstruct`` on the command line.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError, OutputError
from .atomic import atomic_output
from .dicom_codes import code_for
from .dicom_seg import RTSTRUCT_SOP_CLASS, DicomOutput, derived_series_number, reference_for, software_version
from .label_map import LabelMap, label_values, merge_layers
from .labels import LabelTable

RTSTRUCT_SUFFIX = ".rtstruct.dcm"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RTSTRUCTs conventionally put in RTReferencedStudy
MIN_VERIFIED_DICE = 0.95
CONTOUR_DATA = 0x30060050


def is_rtstruct_name(path: Path | str) -> bool:
    return Path(path).name.lower().endswith(RTSTRUCT_SUFFIX)


def write_rtstruct(label_map: LabelMap | list[LabelMap], path: Path | str, options: DicomOutput) -> Path:
    """Write each label as an ROI of closed planar contours on the slices of ``options.reference``."""
    path = Path(path)
    layers = label_map if isinstance(label_map, list) else [label_map]
    image = layers[0].image
    if image.GetDimension() != 3:
        raise OutputError(f"{path}: an RTSTRUCT holds contours on the slices of a 3D series; this label map is "
                          f"{image.GetDimension()}D: write a .nii.gz or .seg.nrrd instead")
    series, geometry = reference_for(image, path, options)
    rois = [(layer, layer.labels.get(value)) for layer in layers for value in label_values(layer.image)]
    if not rois:
        raise OutputError(f"{path}: the label map is empty; an RTSTRUCT needs at least one structure, nothing "
                          "written")
    ds = _structure_set(series, options)
    boxes = [ndimage.find_objects(sitk.GetArrayViewFromImage(layer.image)) for layer in layers]
    for number, (layer, label) in enumerate(rois, start=1):
        box = boxes[layers.index(layer)][label.value - 1]  # contours are traced inside the label's bounding box
        mask = sitk.GetArrayViewFromImage(layer.image)[box] == label.value
        offset = np.array([box[1].start, box[2].start], dtype=float)
        contours = [(box[0].start + k, points + offset) for k in range(mask.shape[0])
                    for points in slice_contours(mask[k])]
        _add_roi(ds, number, label, options, [(series.frames[k], _to_patient(image, points, k))
                                             for k, points in contours])
    with atomic_output(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
        _verify(tmp, path, rois, geometry.empty_image())
    return path


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours (N x 2, (row, column) voxel indices) around the islands and holes of a 2D mask."""
    from skimage.measure import find_contours

    if not np.any(mask):
        return []
    padded = np.pad(mask.astype(np.float32), 1)
    contours = []
    for line in find_contours(padded, 0.5):
        if len(line) > 1 and np.allclose(line[0], line[-1]):
            line = line[:-1]
        line = _without_collinear_points(line - 1.0)
        if len(line) >= 3:
            contours.append(line)
    return contours


def _without_collinear_points(points: np.ndarray) -> np.ndarray:
    """Drop the vertices of a closed polygon that lie on the straight line through their neighbours."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    return points[np.abs(turn) > 1e-9]


def read_rtstruct(path: Path | str, reference: sitk.Image) -> LabelMap:
    """An RTSTRUCT rasterised onto ``reference``'s grid (ROIs as labels 1..N); overlaps raise InputError."""
    layers = read_rtstruct_layers(path, reference)
    return layers[0] if len(layers) == 1 else merge_layers(layers, str(path))


def read_rtstruct_layers(path: Path | str, reference: sitk.Image) -> list[LabelMap]:
    """An RTSTRUCT's ROIs rasterised (even-odd rule per slice) onto ``reference``; overlapping ROIs in layers."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputError(f"{path}: not a readable DICOM file ({str(error)[:120]})") from None
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_SOP_CLASS:
        raise InputError(f"{path}: not a DICOM RTSTRUCT")
    if reference.GetDimension() != 3:
        raise InputError(f"{path}: an RTSTRUCT can only be placed on a 3D image")
    names = {int(item.ROINumber): str(item.get("ROIName", "")) for item in ds.get("StructureSetROISequence") or []}
    shape = tuple(reversed(reference.GetSize()))
    layers: list[np.ndarray] = []
    tables: list[LabelTable] = []
    for number, item in enumerate(ds.get("ROIContourSequence") or [], start=1):
        mask = _rasterise(item, reference, shape, path)
        if not np.any(mask):
            continue
        color = tuple(float(c) / 255 for c in item.ROIDisplayColor) if "ROIDisplayColor" in item else None
        layer = next((i for i, array in enumerate(layers) if not np.any(array[mask])), None)
        if layer is None:
            layers.append(np.zeros(shape, dtype=np.uint16))
            tables.append(LabelTable())
            layer = len(layers) - 1
        layers[layer][mask] = number
        tables[layer].add(number, names.get(int(item.get("ReferencedROINumber", number)), f"ROI {number}"), color)
    if not layers:
        raise InputError(f"{path}: the RTSTRUCT holds no contours on this image's slices")
    result = []
    for array, table in zip(layers, tables):
        image = sitk.GetImageFromArray(array.astype(np.uint8) if array.max() < 256 else array)
        image.CopyInformation(reference)
        result.append(LabelMap(image, table))
    return result


def _rasterise(item, reference: sitk.Image, shape, path: Path) -> np.ndarray:
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    for contour in item.get("ContourSequence") or []:
        try:
            points = _contour_points(contour)
        except ValueError:
            raise InputError(f"{path}: a contour's ContourData is damaged (not numbers in triplets)") from None
        index = _to_index(reference, points)
        k = np.round(index[:, 2])
        if np.ptp(index[:, 2]) > 0.01 or not 0 <= k[0] < shape[0]:
            raise InputError(f"{path}: a contour is not on a slice of the image (it belongs to another series or "
                             "grid)")
        rows, columns = polygon(index[:, 1], index[:, 0], shape[1:])
        mask[int(k[0]), rows, columns] ^= True  # even-odd: a contour inside another is a hole
    return mask


def _raw_decimal_strings(values: np.ndarray):
    """ContourData as an encoded DS element: pydicom validates each of thousands of numbers one by one otherwise."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    text = "\\".join(_decimal_string(v) for v in values).encode("ascii")
    text += b" " * (len(text) % 2)
    return RawDataElement(Tag(CONTOUR_DATA), "DS", len(text), text, 0, False, True)


def _decimal_string(value: float) -> str:
    """At most 16 characters (the DS limit), 0.1 micrometre resolution."""
    text = f"{value:.4f}"
    return text if len(text) <= 16 else f"{value:.6g}"


def _contour_points(contour) -> np.ndarray:
    element = contour.get_item(CONTOUR_DATA)
    raw = getattr(element, "value", None)
    if isinstance(raw, bytes):  # not converted by pydicom yet: parse it in one go
        values = np.array(raw.replace(b" ", b"").split(b"\\"), dtype=float)
    else:
        values = np.asarray(contour.ContourData, dtype=float)
    if values.size % 3 or values.size < 9:
        raise ValueError("ContourData does not hold triplets of at least three points")
    return values.reshape(-1, 3)


def _to_patient(image: sitk.Image, points: np.ndarray, k: int) -> np.ndarray:
    """(row, column) voxel indices on slice ``k`` -> LPS millimetres."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    index = np.column_stack([points[:, 1], points[:, 0], np.full(len(points), float(k))])
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def _to_index(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return ((points - np.asarray(image.GetOrigin())) @ direction) / np.asarray(image.GetSpacing())


def _structure_set(series, options: DicomOutput):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    source = series.datasets[0]
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = source.get("SpecificCharacterSet", "ISO_IR 192") or "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
                    "PatientAge", "PatientWeight", "PatientSize"):
        if keyword in source or keyword not in ("StudyDescription", "PatientAge", "PatientWeight", "PatientSize"):
            setattr(ds, keyword, source.get(keyword, "") or "")
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "") or ""
    ds.Modality, ds.SeriesInstanceUID = "RTSTRUCT", generate_uid()
    ds.SeriesNumber = derived_series_number(source, 2000)
    ds.SeriesDescription = f"SegToolkit {options.method}"[:64]
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName = "SegToolkit", f"SegToolkit {options.method}"[:64]
    ds.SoftwareVersions = software_version()
    ds.InstanceNumber = 1
    ds.StructureSetLabel = f"SegToolkit {options.method}"[:16]
    ds.StructureSetName = ds.StructureSetLabel
    ds.StructureSetDescription = _algorithm_text(options)[:1024]
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    contour_images = []
    for frame, dataset in zip(series.frames, _datasets_of(series)):
        item = pydicom.Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = dataset.SOPClassUID, frame.sop_instance_uid
        if frame.index is not None:
            item.ReferencedFrameNumber = frame.index + 1
        contour_images.append(item)
    referenced_series = pydicom.Dataset()
    referenced_series.SeriesInstanceUID = series.uid
    referenced_series.ContourImageSequence = contour_images
    study = pydicom.Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = STUDY_COMPONENT_SOP_CLASS, source.StudyInstanceUID
    study.RTReferencedSeriesSequence = [referenced_series]
    frame_of_reference = pydicom.Dataset()
    frame_of_reference.FrameOfReferenceUID = source.FrameOfReferenceUID
    frame_of_reference.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame_of_reference]
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = [], [], []
    return ds


def _add_roi(ds, number: int, label, options: DicomOutput, contours) -> None:
    import pydicom

    roi = pydicom.Dataset()
    roi.ROINumber, roi.ROIName = number, label.name[:64]
    roi.ReferencedFrameOfReferenceUID = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    roi.ROIGenerationAlgorithm, roi.ROIGenerationDescription = "AUTOMATIC", _algorithm_text(options)[:64]
    ds.StructureSetROISequence.append(roi)
    contour_items = []
    for contour_number, (frame, points) in enumerate(contours, start=1):
        item = pydicom.Dataset()
        image_item = pydicom.Dataset()
        image_item.ReferencedSOPClassUID = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
            .RTReferencedSeriesSequence[0].ContourImageSequence[0].ReferencedSOPClassUID
        image_item.ReferencedSOPInstanceUID = frame.sop_instance_uid
        if frame.index is not None:
            image_item.ReferencedFrameNumber = frame.index + 1
        item.ContourImageSequence = [image_item]
        item.ContourGeometricType, item.NumberOfContourPoints = "CLOSED_PLANAR", len(points)
        item.ContourNumber = contour_number
        item[CONTOUR_DATA] = _raw_decimal_strings(points.ravel())
        contour_items.append(item)
    roi_contour = pydicom.Dataset()
    roi_contour.ROIDisplayColor = [int(round(255 * min(max(c, 0.0), 1.0))) for c in label.color]
    roi_contour.ReferencedROINumber = number
    roi_contour.ContourSequence = contour_items
    ds.ROIContourSequence.append(roi_contour)
    coded = code_for(label.name)
    observation = pydicom.Dataset()
    observation.ObservationNumber, observation.ReferencedROINumber = number, number
    observation.RTROIInterpretedType = "ORGAN" if coded.known and coded.category.meaning == "Anatomical Structure" \
        else ""
    observation.ROIInterpreter = ""
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator = coded.type.value, coded.type.scheme_designator
    code.CodeMeaning = coded.type.meaning
    observation.RTROIIdentificationCodeSequence = [code]
    ds.RTROIObservationsSequence.append(observation)


def _datasets_of(series) -> list:
    """The dataset each frame comes from, in frame order."""
    by_path = {Path(ds.filename): ds for ds in series.datasets}
    return [by_path[frame.path] for frame in series.frames]


def _verify(tmp: Path, path: Path, rois, grid: sitk.Image) -> None:
    try:
        layers = read_rtstruct_layers(tmp, grid)
    except InputError as error:
        raise OutputError(f"{path}: the written RTSTRUCT does not read back ({error}); nothing was written") from None
    masks = {}
    for layer in layers:
        array = sitk.GetArrayViewFromImage(layer.image)
        for label in layer.labels:
            masks[label.value] = array == label.value
    for number, (layer, label) in enumerate(rois, start=1):
        expected = sitk.GetArrayViewFromImage(layer.image) == label.value
        got = masks.get(number, np.zeros_like(expected))
        dice = 2 * np.count_nonzero(got & expected) / max(1, np.count_nonzero(got) + np.count_nonzero(expected))
        if dice < MIN_VERIFIED_DICE:
            raise OutputError(f"{path}: the contours of {label.name!r} give the mask back with Dice {dice:.3f} only "
                              f"(below {MIN_VERIFIED_DICE}); nothing was written")


def _algorithm_text(options: DicomOutput) -> str:
    text = f"SegToolkit {software_version()} {options.method}"
    if options.model_name:
        text += f" model {options.model_name}"
    if options.model_hash:
        text += f" sha256 {options.model_hash}"
    return text
