"""DICOM Segmentation objects (SEG): label maps out with highdicom, SEG files in by their per-frame geometry.

Writing (:func:`write_dicom_seg`): the label map must lie on the voxel grid of the DICOM series it segments (the
*reference*; checked, within 0.01 mm). highdicom builds the SEG from the series' headers, so patient and study
attributes are the source's, UIDs are fresh, and every frame carries its own ``ImagePositionPatient`` computed
from the label map's geometry (never from file or list order). BINARY segments by default (what viewers read),
LABELMAP on request. Each segment gets its name, colour, SNOMED CT category/type/laterality
(:mod:`.dicom_codes`) and the algorithm that made it (SegToolkit, version, method, model name and hash). Label
values become segment numbers 1..N in increasing order (DICOM requires that); each label's own value is also
recorded in its algorithm parameters (``label_value=``), so reading a SegToolkit SEG gives the label map's values
back. What was written is read back and compared before the file is published.

Reading (:func:`read_dicom_seg_layers`): frames are placed by their ``PlanePositionSequence`` on a reference grid
(the image the SEG belongs to) or, without one, on the grid spanned by the frames themselves. Segments that
overlap go to separate layers; :func:`read_dicom_seg` refuses overlaps rather than losing voxels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, OutputError
from .atomic import atomic_output
from .dicom_codes import code_for
from .dicom_series import DicomSeries, SeriesGeometry, frame_attribute, load_reference_series
from .label_map import LabelMap, label_values, merge_layers
from .labels import LabelTable
from .messages import format_numbers

SEG_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
SR_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34")
SEG_TYPES = ("binary", "labelmap")
GRID_TOLERANCE_MM = 0.01
LABEL_VALUE_PARAMETER = "label_value"  # the label map value of a segment, recorded in its algorithm parameters
REFERENCE_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
# CID 7162 algorithm families by SegToolkit method (the closest the DICOM list has)
METHOD_FAMILIES = {"threshold": "HistogramAnalysis", "grow": "NeighborhoodAnalysis", "snake": "DeformableModels",
                   "atlas": "DeformableModels", "predict": "ArtificialIntelligence"}


@dataclass
class DicomOutput:
    """How to write a DICOM SEG or RTSTRUCT: the source series and the producer's identification."""

    reference: Path | None = None  # folder holding the DICOM series that was segmented
    series_uid: str | None = None  # which series of that folder (default: the largest image series)
    seg_type: str = "binary"
    method: str = "segmentation"
    model_name: str | None = None
    model_hash: str | None = None
    compress: bool = False


def dicom_sop_class(path: Path | str) -> str | None:
    """The SOPClassUID of a DICOM file, or None when ``path`` is not a readable DICOM file."""
    import pydicom

    path = Path(path)
    if not path.is_file():
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything unreadable is simply not a DICOM object
        return None
    return str(ds.get("SOPClassUID", "")) or None


def is_dicom_seg(path: Path | str) -> bool:
    return dicom_sop_class(path) in SEG_SOP_CLASSES


# ----------------------------------------------------------------------------------------------------------- write


def write_dicom_seg(label_map: LabelMap | list[LabelMap], path: Path | str, options: DicomOutput) -> Path:
    """Write a label map (or several overlapping layers on one grid) as a DICOM SEG of ``options.reference``."""
    import highdicom as hd

    path = Path(path)
    layers = label_map if isinstance(label_map, list) else [label_map]
    series, geometry = reference_for(layers[0].image, path, options)
    if options.seg_type not in SEG_TYPES:
        raise OutputError(f"{path}: unknown --seg-type {options.seg_type!r}; use binary or labelmap")
    segments = _segments(layers)
    if not segments:
        raise OutputError(f"{path}: the label map is empty; a DICOM SEG needs at least one segment, nothing written")
    if options.seg_type == "labelmap" and len(layers) > 1:
        raise OutputError(f"{path}: segments overlap; a LABELMAP SEG holds one segment per voxel: use --seg-type "
                          "binary")
    array = _segment_array(layers, segments)
    volume = hd.Volume(array, _affine(layers[0].image), coordinate_system="PATIENT",
                       frame_of_reference_uid=series.datasets[0].FrameOfReferenceUID,
                       channels={"SegmentNumber": list(range(1, len(segments) + 1))} if array.ndim == 4 else None)
    descriptions = [_description(number, label, options) for number, (_, label) in enumerate(segments, start=1)]
    source = series.datasets[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            seg = hd.seg.Segmentation(
                source_images=series.datasets, pixel_array=volume, segmentation_type=options.seg_type.upper(),
                segment_descriptions=descriptions, series_instance_uid=hd.UID(),
                series_number=derived_series_number(source, 1000), sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="SegToolkit", manufacturer_model_name=f"SegToolkit {options.method}",
                software_versions=software_version(), device_serial_number="none",
                series_description=f"SegToolkit {options.method}"[:64],
                content_description=f"{options.method} segmentation"[:64],
                transfer_syntax_uid=_transfer_syntax(options, path))
    except (ValueError, TypeError, AttributeError, KeyError) as error:
        raise OutputError(f"{path}: cannot build the DICOM SEG ({str(error)[:200]})") from None
    with atomic_output(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
        _verify_seg(tmp, path, layers, segments, geometry, series.uid)
    return path


def reference_for(image: sitk.Image, path: Path, options: DicomOutput) -> tuple[DicomSeries, SeriesGeometry]:
    """The reference series of a DICOM output, checked to share ``image``'s voxel grid."""
    if options.reference is None:
        raise OutputError(f"{path}: a DICOM SEG or RTSTRUCT must reference the DICOM series it segments, and the "
                          "input is not a DICOM series: give that series' folder with --dicom-reference DIR")
    if image.GetDimension() != 3:
        raise OutputError(f"{path}: DICOM SEG/RTSTRUCT output needs a 3D label map (this one is "
                          f"{image.GetDimension()}D); write a .nii.gz or .seg.nrrd instead")
    series, geometry = check_reference_series(options.reference, options.series_uid, path)
    problem = grid_problem(image, geometry)
    if problem:
        raise InputError(f"{path}: the label map is not on the voxel grid of the reference series "
                         f"{options.reference} ({problem}); resample it onto that series first or give the series "
                         "it was made from")
    return series, geometry


def check_reference_series(folder: Path, series_uid: str | None, path: Path) -> tuple[DicomSeries, SeriesGeometry]:
    """The reference series' headers and grid, checked to carry the UIDs a SEG or RTSTRUCT must reference."""
    series, geometry = load_reference_series(folder, series_uid)
    missing = sorted({keyword for ds in series.datasets for keyword in REFERENCE_UIDS if not ds.get(keyword)})
    if missing:
        raise OutputError(f"{path}: the reference series {folder} has no {', '.join(missing)} (an export with its "
                          "UIDs removed?); a DICOM SEG or RTSTRUCT must reference them: use the series as the "
                          "scanner or PACS exported it")
    return series, geometry


def grid_problem(image: sitk.Image, geometry: SeriesGeometry) -> str:
    """How ``image``'s grid differs from a DICOM series' grid ('' when they agree within 0.01 mm)."""
    if tuple(image.GetSize()) != tuple(geometry.size):
        return f"size {tuple(image.GetSize())} vs {tuple(geometry.size)}"
    if not np.allclose(image.GetDirection(), geometry.direction, atol=1e-4):
        return "different orientation"
    if not np.allclose(image.GetSpacing(), geometry.spacing, rtol=1e-4, atol=1e-4):
        return f"spacing {format_numbers(image.GetSpacing())} vs {format_numbers(geometry.spacing)} mm"
    if not np.allclose(image.GetOrigin(), geometry.origin, atol=GRID_TOLERANCE_MM):
        return f"origin {format_numbers(image.GetOrigin())} vs {format_numbers(geometry.origin)} mm"
    return ""


def _segments(layers: list[LabelMap]) -> list[tuple[int, object]]:
    """(layer index, Label) of every label present, in layer then value order: segment k+1 is entry k."""
    found = []
    for index, layer in enumerate(layers):
        for value in label_values(layer.image):
            found.append((index, layer.labels.get(value)))
    return found


def _segment_array(layers: list[LabelMap], segments: list) -> np.ndarray:
    """A (slices, rows, columns) label array of segment numbers, or a stacked 4D array when layers overlap."""
    if len(layers) == 1:
        array = sitk.GetArrayViewFromImage(layers[0].image)
        lookup = np.zeros(int(array.max()) + 1, dtype=np.uint16)
        for number, (_, label) in enumerate(segments, start=1):
            lookup[label.value] = number
        return lookup[array]
    stacked = np.zeros(sitk.GetArrayViewFromImage(layers[0].image).shape + (len(segments),), dtype=np.uint8)
    for number, (index, label) in enumerate(segments):
        stacked[..., number] = sitk.GetArrayViewFromImage(layers[index].image) == label.value
    return stacked


def _affine(image: sitk.Image) -> np.ndarray:
    """(slice, row, column) index -> LPS mm, the index order highdicom's Volume uses."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = image.GetSpacing()
    affine = np.eye(4)
    affine[:3, 0] = direction[:, 2] * spacing[2]
    affine[:3, 1] = direction[:, 1] * spacing[1]
    affine[:3, 2] = direction[:, 0] * spacing[0]
    affine[:3, 3] = image.GetOrigin()
    return affine


def _description(number: int, label, options: DicomOutput):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    coded = code_for(label.name)
    parameters = {"method": options.method, LABEL_VALUE_PARAMETER: str(label.value)}
    if options.model_name:
        parameters["model"] = options.model_name
    if options.model_hash:
        parameters["model_sha256"] = options.model_hash
    family = getattr(codes.cid7162, METHOD_FAMILIES.get(options.method, "ArtificialIntelligence"))
    algorithm = hd.AlgorithmIdentificationSequence(name=f"SegToolkit {options.method}"[:64], family=family,
                                                   version=software_version(), source="SegToolkit",
                                                   parameters=parameters)
    rgb = [int(round(255 * min(max(c, 0.0), 1.0))) for c in label.color]
    description = hd.seg.SegmentDescription(
        segment_number=number, segment_label=label.name[:64], segmented_property_category=coded.category,
        segmented_property_type=coded.type, algorithm_type="AUTOMATIC", algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*rgb))
    if coded.modifier is not None:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(coded.modifier.value, coded.modifier.scheme_designator, coded.modifier.meaning)]
    return description


def _transfer_syntax(options: DicomOutput, path: Path) -> str:
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    if not options.compress:
        return ExplicitVRLittleEndian
    if options.seg_type == "binary":
        raise OutputError(f"{path}: a BINARY SEG is already packed 8 pixels per byte and can only be compressed as "
                          "JPEG 2000; use --seg-type labelmap with compression (RLE lossless) or leave it "
                          "uncompressed")
    return RLELossless


def derived_series_number(source, offset: int) -> int:
    """A series number for an object derived from ``source`` (its number + ``offset``; the offset alone when the
    source has none), so SEG, RTSTRUCT and SR sort after the images they describe."""
    try:
        return int(source.get("SeriesNumber", 0) or 0) + offset
    except (TypeError, ValueError):
        return offset


def software_version() -> str:
    """SegToolkit's version, as the derived DICOM objects record it."""
    from .. import __version__

    return str(__version__)


def _verify_seg(tmp: Path, path: Path, layers: list[LabelMap], segments: list, geometry: SeriesGeometry,
                series_uid: str) -> None:
    """Read the written file back and check every segment's voxels are those of the label map."""
    reference = geometry.empty_image()
    reference.SetMetaData("0020|000e", series_uid)
    try:
        read = read_dicom_seg_layers(tmp, reference)
    except InputError as error:
        raise OutputError(f"{path}: the written SEG does not read back ({error}); nothing was written") from None
    masks = {}
    for layer in read:
        array = sitk.GetArrayViewFromImage(layer.image)
        for label in layer.labels:
            masks[label.value] = array == label.value
    values = [label.value for _, label in segments]
    distinct = len(set(values)) == len(values)  # else the reader falls back to segment numbers
    for number, (index, label) in enumerate(segments, start=1):
        expected = sitk.GetArrayViewFromImage(layers[index].image) == label.value
        key = label.value if distinct else number
        if key not in masks or not np.array_equal(masks[key], expected):
            raise OutputError(f"{path}: segment {label.name!r} read back differently from what was written (disk "
                              "full or a writer error); nothing was written")


# ------------------------------------------------------------------------------------------------------------ read


def read_dicom_seg(path: Path | str, reference: sitk.Image | None = None) -> LabelMap:
    """A DICOM SEG as one label map (segment numbers as labels); overlapping segments raise :class:`InputError`."""
    layers = read_dicom_seg_layers(path, reference)
    return layers[0] if len(layers) == 1 else merge_layers(layers, str(path))


def read_dicom_seg_layers(path: Path | str, reference: sitk.Image | None = None) -> list[LabelMap]:
    """A DICOM SEG as label maps whose segments do not overlap (one layer unless segments overlap).

    With ``reference`` each frame is placed on that image's grid by its position (a SEG referencing another series
    than the reference's ``0020|000e`` metadata, or frames off the grid, raise :class:`InputError`); without one,
    on the grid spanned by the SEG's frames.
    """
    path = Path(path)
    ds = _read_seg_dataset(path)
    segments = _segment_table(ds, path)
    values = _label_values(ds, segments)
    frames, numbers = _frames(ds, path)
    row, column, spacing, positions = _frame_geometry(ds, path)
    if reference is not None:
        _check_referenced_series(ds, reference, path)
        grid = reference
    else:
        grid = _grid_from_frames(row, column, spacing, positions, ds, path)
    slices = _slice_indices(grid, row, column, spacing, positions, path)
    layers: list[np.ndarray] = []
    owners: list[LabelTable] = []
    shape = (grid.GetSize()[2], grid.GetSize()[1], grid.GetSize()[0])
    for number, (name, color) in segments.items():
        placed = [(slices[f], frames[f] if ds.SegmentationType != "LABELMAP" else frames[f] == number)
                  for f in range(len(frames)) if numbers[f] in (number, None)]
        placed = [(k, mask.astype(bool)) for k, mask in placed if np.any(mask)]
        layer = _free_layer(layers, placed, shape)
        for k, mask in placed:
            layers[layer][k][mask] = values[number]
        owners.extend(LabelTable() for _ in range(len(layers) - len(owners)))
        owners[layer].add(values[number], name, color)
    if not layers:
        layers.append(np.zeros(shape, dtype=np.uint16))
        owners.append(LabelTable())
    result = []
    for array, table in zip(layers, owners):
        image = sitk.GetImageFromArray(array.astype(np.uint8) if array.max() < 256 else array)
        image.CopyInformation(grid) if reference is not None else _copy_grid(image, grid)
        result.append(LabelMap(image, table))
    return result


def seg_grid(paths: list[Path | str]) -> sitk.Image:
    """The smallest grid holding the frames of several SEGs of one series (for comparing two SEGs whose empty
    frames were left out differently)."""
    grids = []
    for path in paths:
        ds = _read_seg_dataset(Path(path))
        row, column, spacing, positions = _frame_geometry(ds, Path(path))
        grids.append(_grid_from_frames(row, column, spacing, positions, ds, Path(path)))
    first = grids[0]
    normal = np.array(first.GetDirection()).reshape(3, 3)[:, 2]
    step = first.GetSpacing()[2]
    depths = []
    for grid, path in zip(grids, paths):
        if not np.allclose(grid.GetDirection(), first.GetDirection(), atol=1e-4) or \
                not np.allclose(grid.GetSpacing()[:2], first.GetSpacing()[:2], rtol=1e-4):
            raise InputError(f"{path}: its frames are not oriented or spaced like those of {paths[0]}; the two SEGs "
                             "belong to different images")
        start = float(np.dot(grid.GetOrigin(), normal))
        depths += [start, start + (grid.GetSize()[2] - 1) * grid.GetSpacing()[2]]
        step = min(step, grid.GetSpacing()[2]) if grid.GetSize()[2] > 1 else step
    lowest = grids[int(np.argmin(depths[::2]))]
    union = sitk.Image([first.GetSize()[0], first.GetSize()[1], int(round((max(depths) - min(depths)) / step)) + 1],
                       sitk.sitkUInt8)
    union.SetSpacing((first.GetSpacing()[0], first.GetSpacing()[1], step))
    union.SetDirection(first.GetDirection())
    union.SetOrigin(lowest.GetOrigin())
    return union


def _read_seg_dataset(path: Path):
    import pydicom

    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on damaged files
        raise InputError(f"{path}: not a readable DICOM file ({str(error)[:120]})") from None
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in SEG_SOP_CLASSES:
        raise InputError(f"{path}: is a DICOM {ds.get('Modality', '')} object (SOP class {sop_class or 'none'}), "
                         "not a DICOM SEG; give a segmentation")
    if "PixelData" not in ds:
        raise InputError(f"{path}: DICOM SEG has no pixel data (the file is cut off); export it again")
    return ds


def _segment_table(ds, path: Path) -> dict[int, tuple[str, tuple[float, float, float] | None]]:
    import highdicom as hd

    items = ds.get("SegmentSequence") or []
    if not items:
        raise InputError(f"{path}: DICOM SEG holds no segments (empty SegmentSequence); nothing to read")
    table = {}
    for item in items:
        number = int(item.SegmentNumber)
        if number == 0:  # a LABELMAP SEG may describe its background as segment 0
            continue
        color = None
        if "RecommendedDisplayCIELabValue" in item:
            lab = [int(v) for v in item.RecommendedDisplayCIELabValue]
            try:
                color = tuple(c / 255 for c in hd.color.CIELabColor.from_dicom_value(lab).to_rgb(clip=True))
            except (ValueError, AttributeError):
                color = None
        table[number] = (str(item.get("SegmentLabel", "") or f"Segment {number}"), color)
    return dict(sorted(table.items()))


def segment_label_values(ds) -> dict[int, int]:
    """Segment number -> label value of a SEG dataset (see :func:`read_dicom_seg_layers`)."""
    return _label_values(ds, _segment_table(ds, Path(str(getattr(ds, "filename", "") or "SEG"))))


def _label_values(ds, segments: dict) -> dict[int, int]:
    """Segment number -> label value: the label values SegToolkit recorded when it wrote the SEG (so a label map
    keeps its values through a SEG), else the segment numbers."""
    recorded = {}
    for item in ds.get("SegmentSequence") or []:
        algorithm = (item.get("SegmentationAlgorithmIdentificationSequence") or [None])[0]
        if algorithm is None or not str(algorithm.get("AlgorithmName", "")).startswith("SegToolkit"):
            continue
        fields = dict(part.split("=", 1) for part in str(algorithm.get("AlgorithmParameters", "")).split(",")
                      if "=" in part)
        if fields.get(LABEL_VALUE_PARAMETER, "").isdigit() and int(fields[LABEL_VALUE_PARAMETER]) > 0:
            recorded[int(item.SegmentNumber)] = int(fields[LABEL_VALUE_PARAMETER])
    if set(recorded) == set(segments) and len(set(recorded.values())) == len(recorded):
        return recorded
    return {number: number for number in segments}


def _frames(ds, path: Path) -> tuple[np.ndarray, list[int | None]]:
    """Decoded frames (frames, rows, columns) and each frame's segment number (None for LABELMAP frames)."""
    try:
        pixels = ds.pixel_array
    except Exception as error:  # noqa: BLE001 - decoders raise many types on corrupt data
        raise InputError(f"{path}: cannot decode the SEG's pixel data ({str(error)[:120]}); the file is damaged "
                         "or compressed in a form this installation cannot read") from None
    count = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = pixels.reshape((count, int(ds.Rows), int(ds.Columns)))
    if ds.SegmentationType == "FRACTIONAL":
        pixels = pixels >= (int(ds.get("MaximumFractionalValue", 255)) + 1) // 2
    groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(groups) != count:
        raise InputError(f"{path}: DICOM SEG has {count} frames but {len(groups)} per-frame descriptions; the file "
                         "is damaged")
    numbers: list[int | None] = []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    for group in groups:
        if ds.SegmentationType == "LABELMAP":
            numbers.append(None)
            continue
        number = frame_attribute(group, shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        try:
            numbers.append(int(number))
        except (TypeError, ValueError):
            raise InputError(f"{path}: a frame of the SEG does not say which segment it belongs to; the file is "
                             "damaged") from None
    return pixels, numbers


def _frame_geometry(ds, path: Path):
    """Row and column directions, (row, column) pixel spacing and per-frame positions (LPS mm)."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    groups = ds.PerFrameFunctionalGroupsSequence
    positions = []
    orientation = spacing = None
    for group in groups:
        position = frame_attribute(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        frame_orientation = frame_attribute(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        frame_spacing = frame_attribute(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        if position is None or frame_orientation is None or frame_spacing is None:
            raise InputError(f"{path}: DICOM SEG frames lack a position, orientation or pixel spacing; it cannot be "
                             "placed in patient space")
        if orientation is not None and not np.allclose(frame_orientation, orientation, atol=1e-4):
            raise InputError(f"{path}: DICOM SEG frames have different orientations; not a volume segmentation")
        orientation, spacing = [float(v) for v in frame_orientation], [float(v) for v in frame_spacing]
        positions.append([float(v) for v in position])
    return np.array(orientation[:3]), np.array(orientation[3:]), spacing, np.array(positions)


def _check_referenced_series(ds, reference: sitk.Image, path: Path) -> None:
    if "0020|000e" not in reference.GetMetaDataKeys():
        return
    expected = reference.GetMetaData("0020|000e").strip()
    if not expected:  # an anonymised series without a SeriesInstanceUID: nothing to compare
        return
    referenced = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []}
    if referenced and expected not in referenced:
        raise InputError(f"{path}: the SEG references series {', '.join(sorted(referenced))}, not the image's series "
                         f"{expected}; give the SEG made for this series (or the series it was made for)")


def _grid_from_frames(row, column, spacing, positions, ds, path: Path) -> sitk.Image:
    """The regular grid spanned by the frames: in-plane as the frames, slices from the lowest to the highest."""
    normal = np.cross(row, column)
    depths = positions @ normal
    distinct = np.unique(np.round(depths, 3))
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    step = frame_attribute(None, shared, "PixelMeasuresSequence", "SpacingBetweenSlices")
    thickness = frame_attribute(None, shared, "PixelMeasuresSequence", "SliceThickness")
    step = float(step) if step else (float(np.min(np.diff(distinct))) if len(distinct) > 1 else
                                     float(thickness or 1))
    lowest = positions[int(np.argmin(depths))]
    count = int(round((distinct[-1] - distinct[0]) / step)) + 1 if len(distinct) > 1 else 1
    grid = sitk.Image([int(ds.Columns), int(ds.Rows), count], sitk.sitkUInt8)
    grid.SetSpacing((spacing[1], spacing[0], step))
    grid.SetDirection(tuple(np.column_stack([row, column, normal]).ravel()))
    grid.SetOrigin(tuple(float(v) for v in lowest))
    return grid


def _slice_indices(grid: sitk.Image, row, column, spacing, positions, path: Path) -> list[int]:
    """The grid slice of each frame; frames off the grid (other orientation, spacing or position) raise."""
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    if grid.GetDimension() != 3:
        raise InputError(f"{path}: a DICOM SEG is 3D; the image it is placed on is {grid.GetDimension()}D")
    if not (np.allclose(direction[:, 0], row, atol=1e-4) and np.allclose(direction[:, 1], column, atol=1e-4)):
        raise InputError(f"{path}: the SEG's frames are not oriented like the image's slices "
                         f"(row {format_numbers(row)}, column {format_numbers(column)}); it belongs to another image")
    if not np.allclose(grid.GetSpacing()[:2], (spacing[1], spacing[0]), rtol=1e-4, atol=1e-4):
        raise InputError(f"{path}: the SEG's pixel spacing {spacing[1]:.4g} x {spacing[0]:.4g} mm differs from the "
                         f"image's {grid.GetSpacing()[0]:.4g} x {grid.GetSpacing()[1]:.4g} mm; it belongs to another "
                         "image")
    indices = []
    for position in positions:
        index = np.array(grid.TransformPhysicalPointToContinuousIndex([float(v) for v in position]))
        nearest = np.round(index)
        offset = np.linalg.norm((index - nearest) * np.array(grid.GetSpacing()))
        if nearest[0] != 0 or nearest[1] != 0 or offset > max(GRID_TOLERANCE_MM, 0.01 * min(grid.GetSpacing())) \
                or not 0 <= nearest[2] < grid.GetSize()[2]:
            raise InputError(f"{path}: a SEG frame at {format_numbers(position)} mm is not on a slice of the image "
                             f"(nearest voxel index {format_numbers(index)}); the SEG belongs to another image or grid")
        indices.append(int(nearest[2]))
    return indices


def _free_layer(layers: list[np.ndarray], placed, shape) -> int:
    """The first layer where a segment's frames touch no other segment; a new layer when none is free."""
    for index, layer in enumerate(layers):
        if not any(np.any(layer[k][mask]) for k, mask in placed):
            return index
    layers.append(np.zeros(shape, dtype=np.uint16))
    return len(layers) - 1


def _copy_grid(image: sitk.Image, grid: sitk.Image) -> None:
    image.SetSpacing(grid.GetSpacing())
    image.SetOrigin(grid.GetOrigin())
    image.SetDirection(grid.GetDirection())


