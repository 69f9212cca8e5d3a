"""Checks of image and data files at the byte level, before reading and after writing.

Readers trust headers: a 128-byte file that declares a 4 GB image makes them allocate 4 GB before noticing that
the data is missing, ITK's NIfTI reader zero-fills truncated files, turns NaN voxels into 0 and replaces a zero or
NaN spacing by 1 mm. Writers trust the disk: on a full disk ITK and zlib drop the rest of the file without an
error. The checks here look at the file itself:

* :func:`check_image_file` (before reading): the declared data fits the file (raw data) or could come from it
  (compressed data cannot shrink more than about 1000 times), the free memory can hold it, and a NIfTI header's
  spacing is a positive finite number;
* :func:`scan_nifti` (while reading, in a second thread): a NIfTI file holds all its voxels and, for float data,
  no NaN or infinite value;
* :func:`verify_output` (after writing, before the rename): the written file is complete, by format: images
  decompressed and counted, safetensors, JSON, PNG and transforms read back.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

CHUNK = 1 << 22
# Deflate cannot compress more than 1032:1; a margin covers headers and tiny files.
MAX_COMPRESSION_RATIO = 1100
COMPRESSION_SLACK_BYTES = 1 << 16
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


class IncompleteFileError(Exception):
    """A written file is shorter or other than what its writer meant to write."""


def available_memory_bytes() -> int | None:
    """Memory the system can still give (MemAvailable on Linux); None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ---------------------------------------------------------------------------------------------------- NIfTI


@dataclass
class NiftiHeader:
    """The fields of a NIfTI-1/2 header these checks need."""

    version: int
    dims: tuple[int, ...]
    datatype: int
    bitpix: int
    offset: int
    pixdim: tuple[float, ...]
    order: str

    @property
    def voxels(self) -> int:
        count = max(0, min(int(self.dims[0]), 7))
        return int(math.prod(max(int(d), 1) for d in self.dims[1:1 + count]))

    @property
    def data_bytes(self) -> int:
        return self.voxels * max(int(self.bitpix), 8) // 8

    @property
    def header_bytes(self) -> int:
        return int(max(self.offset, 348 if self.version == 1 else 540))


def parse_nifti_header(header: bytes, path: Path) -> NiftiHeader:
    """The NIfTI-1 or NIfTI-2 header at the start of ``header`` (either byte order)."""
    for order in ("<", ">"):
        (size,) = struct.unpack(order + "i", header[:4]) if len(header) >= 4 else (0,)
        if size == 348 and len(header) >= 348:
            (offset,) = struct.unpack(order + "f", header[108:112])
            return NiftiHeader(1, struct.unpack(order + "8h", header[40:56]),
                               struct.unpack(order + "h", header[70:72])[0],
                               struct.unpack(order + "h", header[72:74])[0],
                               int(offset) if math.isfinite(offset) and offset > 0 else 0,
                               struct.unpack(order + "8f", header[76:108]), order)
        if size == 540 and len(header) >= 540:
            return NiftiHeader(2, struct.unpack(order + "8q", header[16:80]),
                               struct.unpack(order + "h", header[12:14])[0],
                               struct.unpack(order + "h", header[14:16])[0],
                               struct.unpack(order + "q", header[168:176])[0],
                               struct.unpack(order + "8d", header[104:168]), order)
    raise InputError(f"{path}: not a NIfTI file (no valid header); check the file type")


def check_nifti_spacing(header: NiftiHeader, path: Path) -> None:
    """Raise :class:`InputError` for a zero, negative or non-finite voxel size (ITK would silently use 1 mm)."""
    spatial = max(0, min(int(header.dims[0]), 3))
    spacing = header.pixdim[1:1 + spatial]
    if not all(math.isfinite(value) and value > 0 for value in spacing):
        shown = ", ".join(f"{value:g}" for value in spacing)
        raise InputError(f"{path}: voxel size in the header is ({shown}); it must be positive finite numbers "
                         "(a broken export); fix the header (e.g. set pixdim) or export the image again")


def scan_nifti(path: Path, compressed: bool) -> None:
    """Raise :class:`InputError` when a NIfTI file holds fewer bytes than its header promises, its gzip data is
    damaged, or its float voxels include NaN or infinity (ITK would read those as 0)."""
    try:
        with (gzip.open if compressed else open)(path, "rb") as stream:
            head = stream.read(540)
            header = parse_nifti_header(head, path)
            counter = _DataScanner(header, len(head))
            counter.feed(head)
            while chunk := stream.read(CHUNK):
                counter.feed(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"{path}: file is damaged or incomplete ({error}); download or export it again") from None
    expected = header.header_bytes + header.data_bytes
    if counter.total < expected:
        raise InputError(f"{path}: file is incomplete ({counter.total} of {expected} bytes); it was probably cut "
                         "off while copying or downloading")
    if counter.nonfinite:
        raise InputError(f"{path}: {counter.nonfinite} voxels are NaN or infinite; replace them with a real value "
                         "(e.g. the background intensity) before segmenting")


class _DataScanner:
    """Counts the bytes of a NIfTI stream and the non-finite values of its float voxel data, chunk by chunk."""

    def __init__(self, header: NiftiHeader, _first: int) -> None:
        code = NIFTI_FLOAT_TYPES.get(int(header.datatype))
        self.dtype = np.dtype(header.order + code) if code else None
        self.start, self.end = header.header_bytes, header.header_bytes + header.data_bytes
        self.total, self.nonfinite, self.pending = 0, 0, b""

    def feed(self, chunk: bytes) -> None:
        begin, self.total = self.total, self.total + len(chunk)
        if self.dtype is None:
            return
        lo, hi = max(begin, self.start), min(self.total, self.end)
        if hi <= lo:
            return
        data = self.pending + chunk[lo - begin:hi - begin]
        usable = len(data) - len(data) % self.dtype.itemsize
        values = np.frombuffer(data[:usable], self.dtype)
        self.nonfinite += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.pending = data[usable:]


# ------------------------------------------------------------------------------------ NRRD and MetaImage


@dataclass
class DataLayout:
    """Where an image's voxel data lies and how it is stored."""

    data_file: Path
    offset: int
    encoding: str  # "raw", "gzip", "zlib", "bzip2", "text" or "unknown"


def data_layout(path: Path) -> DataLayout | None:
    """The data layout of a NRRD, NHDR, MHA or MHD file from its text header; None for other formats."""
    suffix = path.name.lower().rsplit(".", 1)[-1]
    if suffix in ("nrrd", "nhdr"):
        return _nrrd_layout(path)
    if suffix in ("mha", "mhd"):
        return _meta_layout(path)
    return None


def _header_lines(path: Path, limit: int = 1 << 16) -> tuple[list[str], int]:
    """Text lines of a header up to its blank line (NRRD) or its end; and the byte offset after it."""
    with open(path, "rb") as stream:
        head = stream.read(limit)
    lines, position = [], 0
    for raw in head.split(b"\n"):
        position += len(raw) + 1
        line = raw.decode("latin-1").rstrip("\r")
        if not line.strip():
            return lines, position
        lines.append(line)
        if line.replace(" ", "").startswith("ElementDataFile="):
            return lines, position
    return lines, min(position, len(head))


def _nrrd_layout(path: Path) -> DataLayout:
    lines, offset = _header_lines(path)
    fields = {}
    for line in lines[1:]:
        if ":" in line and not line.startswith("#"):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip().lstrip("=").strip()
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2", "ascii": "text",
                "txt": "text", "text": "text", "hex": "text"}.get(fields.get("encoding", "raw").lower(), "unknown")
    detached = fields.get("data file") or fields.get("datafile")
    if fields.get("line skip", "0") != "0" or fields.get("byte skip", "0") != "0":
        encoding = "unknown"
    if detached:
        if " " in detached or detached.upper().startswith("LIST"):
            return DataLayout(path, 0, "unknown")
        return DataLayout(path.parent / detached, 0, encoding)
    return DataLayout(path, offset, encoding)


def _meta_layout(path: Path) -> DataLayout:
    lines, offset = _header_lines(path)
    fields = {}
    for line in lines:
        key, _, value = line.partition("=")
        fields[key.strip().lower()] = value.strip()
    encoding = "zlib" if fields.get("compresseddata", "false").lower() == "true" else "raw"
    if fields.get("headersize", "0") not in ("0", "-1") or fields.get("binarydata", "true").lower() != "true":
        encoding = "unknown"
    data_file = fields.get("elementdatafile", "LOCAL")
    if data_file.upper() != "LOCAL":
        if " " in data_file or data_file.upper().startswith("LIST") or "%" in data_file:
            return DataLayout(path, 0, "unknown")
        return DataLayout(path.parent / data_file, 0, encoding)
    return DataLayout(path, offset, encoding)


def _stored_bytes(layout: DataLayout) -> int:
    """Bytes of voxel data as stored (compressed or not) in the data file."""
    return max(0, layout.data_file.stat().st_size - layout.offset)


def _decompressed_bytes(layout: DataLayout) -> int:
    """Bytes the stored voxel data decompresses to (reading it all; damaged data raises OSError/zlib.error)."""
    total = 0
    with open(layout.data_file, "rb") as raw:
        raw.seek(layout.offset)
        if layout.encoding == "gzip":
            with gzip.GzipFile(fileobj=raw) as stream:
                while chunk := stream.read(CHUNK):
                    total += len(chunk)
            return total
        if layout.encoding == "bzip2":
            import bz2

            with bz2.BZ2File(raw) as stream:
                while chunk := stream.read(CHUNK):
                    total += len(chunk)
            return total
        inflater = zlib.decompressobj()
        while chunk := raw.read(CHUNK):
            total += len(inflater.decompress(chunk))
        total += len(inflater.flush())
        if not inflater.eof:
            raise EOFError("compressed data ends early")
        return total


# ------------------------------------------------------------------------------------------ before reading


def declared_data_bytes(path: Path) -> int | None:
    """Bytes of voxel data the image header of ``path`` declares (ITK reads only the header); None when the
    header cannot be read (the real reader then says what is wrong)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    size = reader.GetSize()
    one = sitk.Image([1] * len(size), reader.GetPixelID(), reader.GetNumberOfComponents())
    itemsize = sitk.GetArrayViewFromImage(one).dtype.itemsize
    return int(math.prod(size)) * int(reader.GetNumberOfComponents()) * itemsize


def check_image_file(path: Path, compressed_nifti: bool | None = None) -> None:
    """Before reading ``path``: its declared voxel data must fit in the file and in the free memory, and a NIfTI
    header must give a positive spacing. Raises :class:`InputError` naming the file."""
    layout: DataLayout | None
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        compressed = name.endswith(".gz") if compressed_nifti is None else compressed_nifti
        try:
            with (gzip.open if compressed else open)(path, "rb") as stream:
                header = parse_nifti_header(stream.read(540), path)
        except (OSError, EOFError, zlib.error) as error:
            raise InputError(f"{path}: file is damaged or incomplete ({error}); download or export it again") \
                from None
        check_nifti_spacing(header, path)
        declared = header.data_bytes
        layout = DataLayout(path, header.header_bytes if not compressed else 0, "gzip" if compressed else "raw")
    else:
        layout = data_layout(path)
        if layout is None:
            return
        declared = declared_data_bytes(path)
        if declared is None:
            return
    _check_declared_fits(path, layout, declared)


def _check_declared_fits(path: Path, layout: DataLayout, declared: int) -> None:
    size = f"{declared / 1e9:.1f} GB" if declared >= 1e8 else f"{declared} bytes"
    try:
        stored = _stored_bytes(layout)
    except OSError:
        raise InputError(f"{path}: its data file {layout.data_file} is missing or unreadable") from None
    if layout.encoding == "raw" and stored < declared:
        raise InputError(f"{path}: file is incomplete ({stored} of {declared} bytes); the header promises more "
                         "voxel data than the file holds: it was probably cut off while copying or downloading")
    if layout.encoding in ("gzip", "zlib", "bzip2") and declared > stored * MAX_COMPRESSION_RATIO + \
            COMPRESSION_SLACK_BYTES:
        raise InputError(f"{path}: the header declares {size} of voxel data, more than {stored} compressed bytes "
                         "can hold; the file is damaged or incomplete")
    free = available_memory_bytes()
    if free is not None and declared > free:
        raise InputError(f"{path}: the image needs {declared / 1e9:.1f} GB of memory but only {free / 1e9:.1f} GB "
                         "is free; crop or downsample it first, or free memory")


# ------------------------------------------------------------------------------------------- after writing


def verify_image_output(path: Path) -> None:
    """Raise :class:`IncompleteFileError` unless the image file at ``path`` holds all the voxel data it declares.

    Only completeness is checked (what we wrote may hold NaN, e.g. a probability map of a broken input)."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            compressed = name.endswith(".gz")
            with (gzip.open if compressed else open)(path, "rb") as stream:
                header = parse_nifti_header(stream.read(540), path)
            layout = DataLayout(path, 0, "gzip" if compressed else "raw")
            declared = header.header_bytes + header.data_bytes
        else:
            layout = data_layout(path)
            declared = declared_data_bytes(path)
            if declared is None:
                raise IncompleteFileError("its header cannot be read back")
            if layout is None or layout.encoding in ("unknown", "text"):
                return
        stored = _stored_bytes(layout) if layout.encoding == "raw" else _complete_length(layout, declared)
    except InputError as error:
        raise IncompleteFileError(str(error).split(": ", 1)[-1]) from None
    except (OSError, EOFError, zlib.error) as error:
        raise IncompleteFileError(f"its data is damaged ({error})") from None
    if stored < declared:
        raise IncompleteFileError(f"{stored} of {declared} bytes of voxel data")


def _complete_length(layout: DataLayout, declared: int) -> int:
    """The decompressed length of compressed data; for a gzip stream first from its trailer (the length modulo
    2**32 in its last 4 bytes: a stream cut off by a full disk has no trailer), decompressing all of it only when
    the trailer does not match."""
    if layout.encoding == "gzip":
        with open(layout.data_file, "rb") as raw:
            raw.seek(layout.offset)
            magic = raw.read(2)
            raw.seek(-4, 2)
            (length,) = struct.unpack("<I", raw.read(4))
        if magic == b"\x1f\x8b" and length == declared % (1 << 32):
            return declared
    return _decompressed_bytes(layout)


def verify_safetensors(path: Path) -> None:
    """A safetensors file: its JSON header parses and the data it indexes is all there."""
    with open(path, "rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            raise IncompleteFileError("no header")
        (length,) = struct.unpack("<Q", head)
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError):
            raise IncompleteFileError("damaged header") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    actual = path.stat().st_size
    if actual < expected:
        raise IncompleteFileError(f"{actual} of {expected} bytes")


def verify_json(path: Path) -> None:
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as error:
        raise IncompleteFileError(f"not complete JSON ({error})") from None


def verify_png(path: Path) -> None:
    with open(path, "rb") as stream:
        if stream.read(8) != b"\x89PNG\r\n\x1a\n":
            raise IncompleteFileError("no PNG signature")
        stream.seek(-12, 2)
        if stream.read(12) != b"\x00\x00\x00\x00IEND\xaeB`\x82":
            raise IncompleteFileError("the PNG data ends early")


def verify_transform(path: Path) -> None:
    try:
        sitk.ReadTransform(str(path))
    except RuntimeError:
        raise IncompleteFileError("the transform cannot be read back") from None


def verify_nonempty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise IncompleteFileError("the file is empty")


VERIFIERS: dict[str, Callable[[Path], None]] = {
    ".nii": verify_image_output, ".nii.gz": verify_image_output, ".nrrd": verify_image_output,
    ".seg.nrrd": verify_image_output, ".mha": verify_image_output, ".safetensors": verify_safetensors,
    ".json": verify_json, ".png": verify_png, ".tfm": verify_transform, ".h5": verify_transform,
    ".mat": verify_transform,
}


def verify_output(path: Path, suffix: str) -> None:
    """Check a written file by its format (the final name's ``suffix``); :class:`IncompleteFileError` if it is not
    whole. Formats without a reader here must at least not be empty."""
    VERIFIERS.get(suffix, verify_nonempty)(path)


# ------------------------------------------------------------------------------------------- after reading


def check_geometry(image: sitk.Image, name: str) -> None:
    """Raise :class:`InputError` unless spacing is positive and finite, the origin finite and the direction a
    rotation (orthonormal): anything else would be silently changed on write or give wrong volumes."""
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    if not all(math.isfinite(value) and value > 0 for value in spacing):
        raise InputError(f"{name}: voxel size {_fmt_values(spacing)} is not positive; fix the file's header or export "
                         "it again")
    if not all(math.isfinite(value) for value in origin):
        raise InputError(f"{name}: image origin {_fmt_values(origin)} is not a finite position; fix the file's header")
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    if not np.all(np.isfinite(direction)) or not np.allclose(direction.T @ direction, np.eye(dimension),
                                                              atol=1e-4):
        raise InputError(f"{name}: axis directions {_fmt_values(image.GetDirection())} are not at right angles (a "
                         "sheared or degenerate grid); it cannot be stored faithfully: resample it onto a regular "
                         "grid first")


def check_finite_voxels(image: sitk.Image, name: str) -> None:
    """Raise :class:`InputError` when a float image holds NaN or infinite voxels (methods would treat them as
    background, silently)."""
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"{name}: {bad} voxels are NaN or infinite; replace them with a real value (e.g. the "
                             "background intensity) before segmenting")


def _fmt_values(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
