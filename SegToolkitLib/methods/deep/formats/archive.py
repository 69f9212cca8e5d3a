"""Zip archives of models (nnU-Net's export, TotalSegmentator's weights) unpacked without trusting them.

Every name is checked before anything is written: absolute names, drive letters, ``..``, links and special files
refuse the whole archive. Decompression bombs are refused by the sizes the archive declares (in total, and by the
compression ratio of large members), and the bytes actually written are counted against the declared sizes while
unpacking, so a lying header cannot fill the disk either. Only files whose names ``wanted`` accepts are written.
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from ....errors import InputError
from ....progress import CancelToken, ProgressCallback, report

MAX_TOTAL_BYTES = 64 * 1024 ** 3
MAX_MEMBERS = 20000
MAX_RATIO = 200  # uncompressed / compressed, for members above RATIO_FLOOR
RATIO_FLOOR = 16 * 1024 ** 2
CHUNK = 1 << 20


def check_archive(path: Path) -> list[zipfile.ZipInfo]:
    """The members of a zip file, after every safety check; :class:`InputError` names the first problem."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{path}: not a readable zip file ({error}); download or copy it again") from None
    with archive:
        members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise InputError(f"{path}: refused: {len(members)} entries (more than {MAX_MEMBERS}); not a model archive")
    total = 0
    for info in members:
        member_name(path, info)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode) or (mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
            raise InputError(f"{path}: refused: {info.filename!r} is a link or special file")
        total += info.file_size
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size // max(info.compress_size, 1)
            raise InputError(f"{path}: refused: {info.filename!r} expands {ratio} times (a decompression bomb?)")
    if total > MAX_TOTAL_BYTES:
        raise InputError(f"{path}: refused: it would expand to {total / 1e9:.0f} GB (more than "
                         f"{MAX_TOTAL_BYTES / 1e9:.0f} GB)")
    return members


def member_name(path: Path, info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path, or :class:`InputError` for names that could leave the target folder."""
    name = info.filename
    pure = PurePosixPath(name)
    if (not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name or pure.is_absolute()
            or any(part == ".." for part in pure.parts)):
        raise InputError(f"{path}: refused: the entry {name!r} points outside the folder it is unpacked into")
    return pure


def extract(path: Path, target: Path, wanted: Callable[[PurePosixPath], bool] = lambda name: True,
            progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> list[Path]:
    """Unpack the members of ``path`` accepted by ``wanted`` into ``target`` (checked first; see the module)."""
    members = [info for info in check_archive(path) if not info.is_dir() and wanted(member_name(path, info))]
    total = sum(info.file_size for info in members) or 1
    done, written = 0, []
    target = target.resolve()
    with zipfile.ZipFile(path) as archive:
        for info in members:
            destination = (target / member_name(path, info)).resolve()
            if not destination.is_relative_to(target):
                raise InputError(f"{path}: refused: {info.filename!r} leads outside the target folder")
            destination.parent.mkdir(parents=True, exist_ok=True)
            count = 0
            try:
                with archive.open(info) as source, open(destination, "wb") as sink:
                    for block in iter(lambda: source.read(CHUNK), b""):
                        count += len(block)
                        if count > info.file_size:
                            raise InputError(f"{path}: refused: {info.filename!r} holds more data than its header "
                                             "declares (a decompression bomb?)")
                        sink.write(block)
                        report(progress, (done + count) / total, f"unpacking {info.filename}", cancel)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise InputError(f"{path}: damaged archive at {info.filename!r} ({error}); download it again") from None
            done += info.file_size
            written.append(destination)
    return written
