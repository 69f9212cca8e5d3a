"""Progress reporting and cancellation shared by the command line, the Python API and the Slicer modules.

Long operations take an optional ``progress`` callable ``progress(fraction, message)`` with ``fraction`` in
[0, 1], and an optional :class:`CancelToken`. The command line plugs a tqdm bar in; the Slicer modules plug a
progress bar with a Cancel button in.
"""

from __future__ import annotations

import threading
from typing import Callable

from .errors import CancelledError

ProgressCallback = Callable[[float, str], None]


class CancelToken:
    """Thread-safe flag a GUI sets to stop a running operation at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the operation to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise :class:`CancelledError` when cancellation was requested."""
        if self._event.is_set():
            raise CancelledError("cancelled by the user")


def report(progress: ProgressCallback | None, fraction: float, message: str = "",
           cancel: CancelToken | None = None) -> None:
    """Forward a progress update (if anyone listens) and honour a pending cancel request."""
    if cancel is not None:
        cancel.raise_if_cancelled()
    if progress is not None:
        progress(min(max(float(fraction), 0.0), 1.0), message)


def scaled(progress: ProgressCallback | None, start: float, stop: float) -> ProgressCallback | None:
    """A callback that maps a sub-task's 0..1 onto ``start..stop`` of the parent's progress."""
    if progress is None:
        return None

    def sub(fraction: float, message: str) -> None:
        progress(start + (stop - start) * fraction, message)

    return sub


class ConsoleProgress:
    """A tqdm progress bar usable as a :data:`ProgressCallback` (disabled when stderr is not a terminal
    unless ``force`` is set, so logs and CI output stay readable)."""

    def __init__(self, description: str, force: bool = False) -> None:
        import sys

        from tqdm import tqdm

        self._bar = tqdm(total=1000, desc=description, unit="", bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                         "{elapsed}<{remaining} {postfix}", disable=not (force or sys.stderr.isatty()),
                         leave=False)
        self._last = 0

    def __call__(self, fraction: float, message: str) -> None:
        value = int(round(fraction * 1000))
        if value > self._last:
            self._bar.update(value - self._last)
            self._last = value
        if message:
            self._bar.set_postfix_str(message, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
