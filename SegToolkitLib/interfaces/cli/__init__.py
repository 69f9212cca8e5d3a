"""The ``segtoolkit`` command line (``python -m SegToolkitLib`` does the same)."""

from .app import build_parser, main

__all__ = ["build_parser", "main"]
