"""User-facing errors.

Every mistake a user can make (a missing file, a wrong option, an image that does not fit) is raised as a
:class:`SegToolkitError` whose message is one line naming the file and the problem. The command line turns it
into ``segtoolkit: error: <message>`` and exit code 2, never a traceback.
"""

from __future__ import annotations


class SegToolkitError(Exception):
    """A problem the user can fix; the message says what and how."""

    exit_code = 2


class InputError(SegToolkitError):
    """An input file or value is unreadable, unsupported or inconsistent."""


class OutputError(SegToolkitError):
    """An output path cannot be written (missing folder, same as an input, unsupported format)."""


class CancelledError(SegToolkitError):
    """The user cancelled a long-running operation."""

    exit_code = 130
