"""Coded anatomy for DICOM SEG, RTSTRUCT and SR: structure names -> SNOMED CT (``SCT``) codes.

The codes are not typed in here: the table names DICOM keywords, and the code values and meanings come from
pydicom's copy of the DICOM standard's code dictionary (``pydicom.sr.codedict``, the same source highdicom uses), so
every code written is one the standard lists. Categories come from CID 7150 (Segmentation Property Categories) and
laterality from CID 244. The retired ``SRT`` scheme is never used.

A name is normalised (lower case, ``_``/``-`` as spaces) and a ``left``/``right`` word is taken out as the type
modifier, so ``kidney_left``, ``Left Kidney`` and ``left kidney`` all give Kidney + Left. Names not in the table
get the generic Tissue / Tissue pair (what Slicer gives a new segment) and keep their own name as the segment
label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANATOMY, ABNORMAL, TISSUE = "AnatomicalStructure", "MorphologicallyAbnormalStructure", "Tissue"

# normalised name -> (CID 7150 category keyword, SCT keyword of the structure)
STRUCTURES: dict[str, tuple[str, str]] = {
    "liver": (ANATOMY, "Liver"), "spleen": (ANATOMY, "Spleen"), "kidney": (ANATOMY, "Kidney"),
    "gallbladder": (ANATOMY, "Gallbladder"), "pancreas": (ANATOMY, "Pancreas"), "stomach": (ANATOMY, "Stomach"),
    "lung": (ANATOMY, "Lung"), "heart": (ANATOMY, "Heart"), "aorta": (ANATOMY, "Aorta"),
    "urinary bladder": (ANATOMY, "Bladder"), "bladder": (ANATOMY, "Bladder"),
    "esophagus": (ANATOMY, "Esophagus"), "oesophagus": (ANATOMY, "Esophagus"), "trachea": (ANATOMY, "Trachea"),
    "brain": (ANATOMY, "Brain"), "prostate": (ANATOMY, "Prostate"), "duodenum": (ANATOMY, "Duodenum"),
    "colon": (ANATOMY, "Colon"), "rectum": (ANATOMY, "Rectum"), "small bowel": (ANATOMY, "SmallIntestine"),
    "small intestine": (ANATOMY, "SmallIntestine"), "large intestine": (ANATOMY, "LargeIntestine"),
    "adrenal gland": (ANATOMY, "AdrenalGland"), "thyroid": (ANATOMY, "Thyroid"),
    "thyroid gland": (ANATOMY, "Thyroid"), "inferior vena cava": (ANATOMY, "InferiorVenaCava"),
    "superior vena cava": (ANATOMY, "SuperiorVenaCava"), "portal vein": (ANATOMY, "PortalVein"),
    "pulmonary artery": (ANATOMY, "PulmonaryArtery"), "spinal cord": (ANATOMY, "SpinalCord"),
    "sacrum": (ANATOMY, "Sacrum"), "femur": (ANATOMY, "Femur"), "hip": (ANATOMY, "Hip"),
    "skull": (ANATOMY, "Skull"), "rib": (ANATOMY, "Rib"), "sternum": (ANATOMY, "Sternum"),
    "clavicle": (ANATOMY, "Clavicle"), "clavicula": (ANATOMY, "Clavicle"), "scapula": (ANATOMY, "Scapula"),
    "humerus": (ANATOMY, "Humerus"), "ilium": (ANATOMY, "Ilium"), "spine": (ANATOMY, "Spine"),
    "vertebra": (ANATOMY, "Vertebra"), "hippocampus": (ANATOMY, "Hippocampus"),
    "left ventricle": (ANATOMY, "LeftVentricle"), "right ventricle": (ANATOMY, "RightVentricle"),
    "left atrium": (ANATOMY, "LeftAtrium"), "lymph node": (ANATOMY, "LymphNode"),
    "common carotid artery": (ANATOMY, "CommonCarotidArtery"), "iliac artery": (ANATOMY, "IliacArtery"),
    "common iliac artery": (ANATOMY, "CommonIliacArtery"), "artery": (ANATOMY, "Artery"),
    "vein": (ANATOMY, "Vein"), "vessel": (ANATOMY, "BloodVessel"), "blood vessel": (ANATOMY, "BloodVessel"),
    "lung upper lobe": (ANATOMY, "UpperLobeOfLung"), "lung lower lobe": (ANATOMY, "LowerLobeOfLung"),
    "lung middle lobe": (ANATOMY, "MiddleLobeOfRightLung"), "bone": (TISSUE, "Bone"),
    "muscle": (TISSUE, "Muscle"), "fat": (TISSUE, "Fat"), "skin": (TISSUE, "Skin"), "tissue": (TISSUE, "Tissue"),
    "mass": (ABNORMAL, "Mass"), "tumor": (ABNORMAL, "Tumor"), "tumour": (ABNORMAL, "Tumor"),
    "lesion": (ABNORMAL, "Lesion"), "nodule": (ABNORMAL, "Nodule"), "cyst": (ABNORMAL, "Cyst"),
    "kidney cyst": (ABNORMAL, "Cyst"),
    **{f"vertebrae {p}{i}": (ANATOMY, f"{p.upper()}{i}Vertebra")
       for p, count in (("c", 7), ("t", 12), ("l", 5)) for i in range(1, count + 1)},
    **{f"{p}{i} vertebra": (ANATOMY, f"{p.upper()}{i}Vertebra")
       for p, count in (("c", 7), ("t", 12), ("l", 5)) for i in range(1, count + 1)},
}


@dataclass(frozen=True)
class CodedStructure:
    """Category, type and optional laterality of a segment, as pydicom ``Code`` objects."""

    category: object
    type: object
    modifier: object | None
    known: bool


def normalise(name: str) -> str:
    """Lower case with separators as single spaces: ``Kidney_Left`` -> ``kidney left``."""
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def code_for(name: str) -> CodedStructure:
    """SNOMED CT category, type and laterality for a structure name (generic Tissue when the name is unknown)."""
    from pydicom.sr.codedict import codes

    key, side = _structure_key(normalise(name))
    if key not in STRUCTURES:
        return CodedStructure(codes.cid7150.Tissue, codes.SCT.Tissue, None, False)
    category, structure = STRUCTURES[key]
    modifier = getattr(codes.cid244, side.capitalize()) if side else None
    return CodedStructure(getattr(codes.cid7150, category), getattr(codes.SCT, structure), modifier, True)


def _structure_key(key: str) -> tuple[str, str | None]:
    """The table key of a normalised name and its side: ``rib left 6`` -> (``rib``, ``left``)."""
    if key in STRUCTURES:
        return key, None
    words = key.split()
    side = next((word for word in words if word in ("left", "right")), None)
    rest = [word for word in words if word not in ("left", "right")]
    if " ".join(rest) not in STRUCTURES and len(rest) > 1 and rest[-1].isdigit():
        rest = rest[:-1]  # a numbered instance (rib 6) is coded as the structure itself
    return " ".join(rest), side
