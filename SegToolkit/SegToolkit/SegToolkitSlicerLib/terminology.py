"""Standard terminology (DICOM / SNOMED CT codes) for the structure names SegToolkit produces.

Slicer stores a segment's terminology as one string:
``context~category~type~typeModifier~anatomicContext~anatomicRegion~anatomicRegionModifier|`` with each code
written ``scheme^value^meaning``. Only names we can code with certainty are listed; other segments keep just
their name and colour.
"""

from __future__ import annotations

import re

CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ANATOMICAL_STRUCTURE = "SCT^123037004^Anatomical Structure"
ALTERED_STRUCTURE = "SCT^49755003^Morphologically Altered Structure"

# normalised name -> (category, type, type modifier)
KNOWN: dict[str, tuple[str, str, str]] = {
    "liver": (ANATOMICAL_STRUCTURE, "SCT^10200004^Liver", "^^"),
    "spleen": (ANATOMICAL_STRUCTURE, "SCT^78961009^Spleen", "^^"),
    "kidney": (ANATOMICAL_STRUCTURE, "SCT^64033007^Kidney", "^^"),
    "left kidney": (ANATOMICAL_STRUCTURE, "SCT^64033007^Kidney", "SCT^7771000^Left"),
    "right kidney": (ANATOMICAL_STRUCTURE, "SCT^64033007^Kidney", "SCT^24028007^Right"),
    "mass": (ALTERED_STRUCTURE, "SCT^4147007^Mass", "^^"),
    "lesion": (ALTERED_STRUCTURE, "SCT^4147007^Mass", "^^"),
}
ALIASES = {"kidney left": "left kidney", "kidney right": "right kidney", "liver lesion": "lesion",
           "tumor": "mass", "tumour": "mass"}


def normalise(name: str) -> str:
    """Lower case, separators as single spaces: ``Kidney_Left`` -> ``kidney left``."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def terminology_for(name: str) -> str | None:
    """The Slicer terminology string for a structure name, or None when the name is not a known structure."""
    key = normalise(name)
    key = ALIASES.get(key, key)
    if key not in KNOWN:
        return None
    category, type_, modifier = KNOWN[key]
    return f"{CONTEXT}~{category}~{type_}~{modifier}~{ANATOMIC_CONTEXT}~^^~^^|"
