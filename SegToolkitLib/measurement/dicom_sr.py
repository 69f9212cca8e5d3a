"""Measurements as a DICOM Structured Report: a TID 1500 Measurement Report built by highdicom.

One Volumetric ROI group (TID 1411) per measured segment of a DICOM SEG, referencing that segment of the SEG and
coded like it (finding = the segment's property type). Measurements (TID 300): volume (mm³), maximum diameter
(Feret, mm) and, with an intensity image, mean intensity (Hounsfield units for CT, no unit otherwise). Patient and
study come from the SEG; the report is a Comprehensive 3D SR with fresh UIDs, verified by reading it back.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import InputError, OutputError
from ..io.atomic import atomic_output
from ..io.dicom_seg import derived_series_number, segment_label_values, software_version

ALGORITHM = "SegToolkit measure"


def write_measurement_sr(report, seg_path: Path | str, path: Path | str, modality: str | None = None) -> Path:
    """Write ``report`` (a :class:`~.shape.MeasurementReport` of the SEG's segments) as a TID 1500 SR."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    seg_path, path = Path(seg_path), Path(path)
    try:
        seg = hd.seg.segread(seg_path)
    except Exception as error:  # noqa: BLE001 - highdicom raises many types on unusable files
        raise InputError(f"{seg_path}: not a readable DICOM SEG ({str(error)[:120]}); --dicom-sr needs the label map "
                         "as a DICOM SEG, whose segments the report references") from None
    segment_of_value = {value: number for number, value in segment_label_values(seg).items()}
    groups = []
    for entry in report.entries:
        if not entry.get("present") or int(entry["label"]) not in segment_of_value:
            continue
        groups.append(_segment_group(seg, segment_of_value[int(entry["label"])], entry,
                                     modality or _source_modality(seg)))
    if not groups:
        raise OutputError(f"{path}: no segment of {seg_path} has voxels; there is nothing to report")
    procedure = codes.cid100.CTUnspecifiedBodyRegion if (modality or _source_modality(seg)) == "CT" else \
        codes.cid100.MRIUnspecifiedBodyRegion if (modality or _source_modality(seg)) == "MR" else \
        codes.SCT.ImagingProcedure
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                     observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                                         uid=hd.UID(), name=ALGORITHM, manufacturer_name="SegToolkit",
                                         model_name=software_version()))
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=procedure, imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sr = hd.sr.Comprehensive3DSR(
                evidence=[seg], content=content[0], series_instance_uid=hd.UID(),
                series_number=derived_series_number(seg, 1), sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="SegToolkit", is_complete=True, series_description="SegToolkit measurements")
    except (ValueError, TypeError, AttributeError) as error:
        raise OutputError(f"{path}: cannot build the structured report ({str(error)[:200]})") from None
    with atomic_output(path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
        written = pydicom.dcmread(tmp)
        if written.SOPInstanceUID != sr.SOPInstanceUID or len(hd.sr.srread(tmp).ContentSequence) == 0:
            raise OutputError(f"{path}: the report did not read back; nothing was written")
    return path


def _segment_group(seg, number: int, entry: dict, modality: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    description = seg.get_segment_description(number)
    measurements = []
    volume_ml = entry.get("volume_ml")
    if volume_ml is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.Volume, value=float(volume_ml) * 1000.0,
                                              unit=codes.UCUM.CubicMillimeter))
    diameter = entry.get("feret_diameter_mm")
    if diameter is not None:
        measurements.append(hd.sr.Measurement(name=codes.SCT.Diameter, value=float(diameter),
                                              unit=codes.UCUM.Millimeter, derivation=codes.SCT.Maximum))
    mean = entry.get("intensity_mean")
    if mean is not None:
        name = codes.DCM.AttenuationCoefficient if modality == "CT" else codes.SCT.Mean
        unit = codes.UCUM.HounsfieldUnit if modality == "CT" else codes.UCUM.NoUnits
        measurements.append(hd.sr.Measurement(name=name, value=float(mean), unit=unit, derivation=codes.SCT.Mean))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"segment {number} "
                                                     f"{description.segment_label}"[:64]),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
            source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)),
        finding_type=description.segmented_property_type, measurements=measurements)


def _source_modality(seg) -> str:
    """The modality of the images the SEG was made from, as its content label records it (e.g. ``CT_SEG``)."""
    label = str(seg.get("ContentLabel", ""))
    return label.split("_")[0] if "_" in label else ""
