"""What a method's demo step returns: one segmentation of the built-in phantom (see :mod:`..interfaces.demo`).

It lives here, beside the phantom, so that the methods' demo steps need nothing from the interfaces layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..io import LabelMap


@dataclass
class DemoResult:
    """One segmentation of the phantom: the method's name, its label map (phantom grid) and run time."""

    name: str
    label_map: LabelMap
    seconds: float
