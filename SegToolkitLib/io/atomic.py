"""Atomic, verified file output: write to a temporary file next to the target, check it, then rename over it.

An interrupted run (Ctrl-C, crash, full disk) therefore never leaves a truncated output behind, and an
existing output is only replaced by a complete new one. Before the rename the temporary file is flushed to disk
and checked by its format (:func:`.file_checks.verify_output`): writers such as ITK and zlib drop data on a full
disk without an error, so a broken file is caught here, once, for every writer.

Temporary files are named ``.<name>.<pid>-<random>.segtoolkit-tmp<ext>``. A run killed outright (SIGKILL, power
loss) cannot remove its own; the next write into the same folder removes those whose process is gone and which
have not changed for a while (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import InputError, OutputError
from .file_checks import IncompleteFileError, verify_output

TEMP_MARK = "segtoolkit-tmp"
_TEMP_PATTERN = re.compile(r"^\..*\.(\d+)-[0-9a-f]{8}\." + TEMP_MARK + r"[\w.]*$")
# A temporary whose process is gone is stale once untouched this long; one of a live process (or of another
# machine sharing the folder, where the pid means nothing) only after a day.
STALE_DEAD_SECONDS = 60.0
STALE_ANY_SECONDS = 24 * 3600.0
NAME_MAX_DEFAULT = 255


def compound_suffix(path: Path | str) -> str:
    """The full extension of a file name, lower case: ``.nii.gz``, ``.seg.nrrd``, ``.nrrd``..."""
    name = Path(path).name.lower()
    for suffix in (".seg.nrrd", ".nii.gz", ".tar.gz"):
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def check_path_text(path: Path | str, role: str = "path") -> Path:
    """Raise :class:`InputError` when ``path`` is not valid UTF-8 text (ITK aborts the process on such names)."""
    try:
        os.fsdecode(os.fsencode(path)).encode("utf-8")
    except UnicodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise InputError(f"{shown}: {role} is not valid UTF-8 text; rename the file or folder") from None
    return Path(path)


def check_not_special_file(path: Path | str, role: str = "path") -> Path:
    """Raise :class:`InputError` when ``path`` exists but is neither a regular file nor a folder (a FIFO, a
    socket, a device): reading one blocks or never ends, and an output renamed over it would replace it."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return Path(path)  # missing (or unreadable): the reader or writer says so in its own words
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise InputError(f"{_shown(path)}: {role} is not a regular file or folder (a pipe, socket or device); "
                         "give an image file or folder")
    return Path(path)


def _shown(path: Path | str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_output_path(path: Path | str, inputs: Sequence[Path | str] = ()) -> Path:
    """Check that ``path`` can be written: its folder exists and is writable, and it is not one of ``inputs``."""
    path = check_path_text(path, "output path")
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name for the output")
    folder = path.parent
    if str(folder) not in ("", "."):
        blocker = _file_in_the_way(folder)
        if blocker is not None:
            raise OutputError(f"{path}: {blocker} is a file, not a folder; choose another output path")
        if not folder.exists():
            raise OutputError(f"{path}: output folder {folder} does not exist; create it first")
    if not os.access(folder if str(folder) else ".", os.W_OK | os.X_OK):
        raise OutputError(f"{path}: output folder {folder if str(folder) else '.'} is not writable; choose "
                          "another folder or change its permissions")
    for source in inputs:
        with contextlib.suppress(OSError):
            if Path(source).resolve() == path.resolve():
                raise OutputError(f"{path}: output path is the same as an input; choose another output name")
    return path


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing non-folder among ``folder`` and its parents (an output 'under a file')."""
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            if candidate.exists():
                return None if candidate.is_dir() else candidate
    return None


def temporary_path(path: Path) -> Path:
    """A new temporary name beside ``path``, keeping its extension, short enough for the file system."""
    suffix = compound_suffix(path)
    tag = f".{os.getpid()}-{secrets.token_hex(4)}.{TEMP_MARK}{suffix}"
    limit = _name_max(path.parent)
    stem = path.name
    while len(os.fsencode("." + stem + tag)) > limit and stem:
        stem = stem[:-1]
    return path.parent / f".{stem}{tag}"


def _name_max(folder: Path) -> int:
    pathconf = getattr(os, "pathconf", None)  # not on Windows (255 characters there)
    try:
        return int(pathconf(folder if str(folder) else ".", "PC_NAME_MAX")) if pathconf else NAME_MAX_DEFAULT
    except (OSError, ValueError):
        return NAME_MAX_DEFAULT


def is_our_temporary(name: str) -> bool:
    """Whether a file name follows this module's temporary naming."""
    return bool(_TEMP_PATTERN.match(name))


def remove_stale_temporaries(folder: Path | str, now: float | None = None,
                              dead_seconds: float = STALE_DEAD_SECONDS) -> list[Path]:
    """Remove temporaries (files or folders named by :func:`temporary_path`) left in ``folder`` by runs that
    were killed; only ours, and only when their process is gone (untouched for ``dead_seconds``) or after a day.
    Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_PATTERN.match(entry.name) if entry.name.startswith(".") else None
        if not match:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        alive = _process_alive(int(match.group(1)))
        if age > STALE_ANY_SECONDS or (not alive and age >= dead_seconds):
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


_CLEANED: set[str] = set()


def _clean_once(folder: Path) -> None:
    """Remove stale temporaries from ``folder`` the first time this process writes there (a batch writing
    thousands of outputs into one folder scans it once)."""
    key = os.path.abspath(folder)
    if key not in _CLEANED:
        _CLEANED.add(key)
        remove_stale_temporaries(folder)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill would end the process: rely on the age alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet still answers os.kill; it writes nothing any more."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def atomic_output(path: Path | str, verify: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path with the same extension as ``path``; on success flush it to disk, check it is
    complete (``verify``, default: by the file format) and rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched; a file that is not complete
    (full disk, quota) raises :class:`OutputError`.
    """
    path = check_output_path(path)
    _clean_once(path.parent if str(path.parent) else Path("."))
    tmp = temporary_path(path)
    try:
        with describe_os_errors(path):
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            with native_messages_held():
                yield tmp
                publish_verified(tmp, path, verify)
        except OSError as error:
            raise OutputError(describe_os_error(path, error)) from None
    finally:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            tmp.unlink()


_held_lock = threading.Lock()
_held: dict = {"depth": 0, "saved": None, "capture": None, "failed": False}


@contextlib.contextmanager
def native_messages_held() -> Iterator[None]:
    """Hold what C libraries print straight to the process's stderr (file descriptor 2) while a file is written:
    on success it is passed on unchanged; on a failure it is only logged (``-v``), because the writer's failure
    becomes one clear :class:`OutputError` line and ITK's or zlib's own "wrote only 0 of N bytes" would repeat it.
    Nested and concurrent writes share one capture (the first in redirects, the last out restores)."""
    try:
        _hold_stderr()
    except (OSError, ValueError, AttributeError):  # no real file descriptor 2 (embedded interpreters): no capture
        yield
        return
    failed = True
    try:
        yield
        failed = False
    finally:
        _release_stderr(failed)


def _hold_stderr() -> None:
    with _held_lock:
        if _held["depth"] == 0:
            sys.stderr.flush()
            capture = tempfile.TemporaryFile()
            saved = os.dup(2)
            os.dup2(capture.fileno(), 2)
            _held.update(saved=saved, capture=capture, failed=False)
        _held["depth"] += 1


def _release_stderr(failed: bool) -> None:
    with _held_lock:
        _held["failed"] = _held["failed"] or failed
        _held["depth"] -= 1
        if _held["depth"] > 0:
            return
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        os.dup2(_held["saved"], 2)
        os.close(_held["saved"])
        capture = _held["capture"]
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
        capture.close()
    if text and _held["failed"]:
        logging.getLogger(__name__).debug("native library output while writing: %s", text.strip())
    elif text:
        sys.stderr.write(text)
        sys.stderr.flush()


def publish_verified(tmp: Path | str, path: Path | str, verify: Callable[[Path], None] | None = None) -> Path:
    """Flush the finished temporary file ``tmp`` to disk, check it is complete (``verify``, default: by the format
    of ``path``), give it the permissions a plain ``open()`` would and rename it onto ``path``.

    The one way every writer publishes a file; an incomplete file raises :class:`OutputError` and is not renamed.
    """
    tmp, path = Path(tmp), Path(path)
    with describe_os_errors(path):
        _flush_to_disk(tmp)
        _verify(tmp, path, verify)
        # new files: the permissions a plain open() would give (our temporary was private while written)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    return path


def _flush_to_disk(path: Path) -> None:
    """fsync the written file: delayed allocation reports a full disk or quota only here."""
    handle = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows flushes only writable handles
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _verify(tmp: Path, path: Path, verify: Callable[[Path], None] | None) -> None:
    try:
        (verify or (lambda written: verify_output(written, compound_suffix(path))))(tmp)
    except IncompleteFileError as problem:
        raise OutputError(f"{path}: the written file is incomplete ({problem}); {_space_hint(path.parent)}; "
                          "nothing was saved") from None


def write_failed(path: Path | str, detail: str) -> OutputError:
    """The error for a writer (ITK, a library) that gave up on ``path``: its reason and the free space there."""
    path = Path(path)
    return OutputError(f"{path}: cannot write ({detail}); {_space_hint(path.parent)}; nothing was saved")


def _space_hint(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder if str(folder) else ".").free
    except OSError:
        return "the disk may be full or over quota"
    return f"the disk may be full or over quota ({free / 1e6:.1f} MB free there)"


@contextlib.contextmanager
def describe_os_errors(path: Path | str) -> Iterator[None]:
    """Turn an :class:`OSError` while writing ``path`` into a one-line :class:`OutputError`."""
    try:
        yield
    except OSError as error:
        raise OutputError(describe_os_error(Path(path), error)) from None


def describe_os_error(path: Path, error: OSError) -> str:
    """One line on why ``path`` could not be written, with what to do."""
    advice = {
        errno.ENOSPC: "the disk is full; free space and run again",
        errno.EDQUOT: "the disk quota is exceeded; free space and run again",
        errno.EACCES: "permission denied; choose another folder or change its permissions",
        errno.EPERM: "permission denied; choose another folder or change its permissions",
        errno.EROFS: "the file system is read-only; choose another folder",
        errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter one",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
        errno.EISDIR: "a folder of that name exists; choose another name",
    }.get(error.errno or 0, f"{error.strerror or error}")
    return f"{path}: cannot write ({advice}); nothing was saved"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write a text file atomically; the bytes on disk are read back and compared before the rename."""
    data = text.encode("utf-8")

    def same_bytes(written: Path) -> None:
        if written.read_bytes() != data:
            raise IncompleteFileError(f"{written.stat().st_size} of {len(data)} bytes")

    with atomic_output(path, verify=same_bytes) as tmp:
        tmp.write_bytes(data)
    return Path(path)
