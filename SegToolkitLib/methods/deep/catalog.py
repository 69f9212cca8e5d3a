"""The catalog of public models shipped with SegToolkit (``segtoolkit models list``).

Each entry names the official download address of every file, the licence, and the classes. No checksum is written
here unless it comes from the model's publisher: TotalSegmentator publishes none, so ``sha256`` is None; the store
records the SHA-256 of the first download (``checksums.json`` in the store) and verifies every later download and
every load against it. Sizes are approximate (for the progress display only).

TotalSegmentator's tasks are nnU-Net models: "total" is five of them (parts) merged into one label map. The parts'
class lists are those of TotalSegmentator 2.x (``map_to_binary.class_map_5_parts``); the task's label values are
the parts' classes numbered on in part order, which is TotalSegmentator's ``class_map["total"]`` (1 spleen ... 117
costal_cartilages); "total_mr" likewise numbers its two parts' classes on (1 spleen ... 50 brain), as
TotalSegmentator's ``class_map["total_mr"]``. Download addresses are those of TotalSegmentator's own downloader:
the CT tasks from its v2.0.0 weights release, the MR tasks from v2.5.0.
"""

from __future__ import annotations

RELEASE = "https://github.com/wasserth/TotalSegmentator/releases/download/v2.0.0-weights"
RELEASE_MR = "https://github.com/wasserth/TotalSegmentator/releases/download/v2.5.0-weights"
TOTALSEGMENTATOR_LICENCE = ("Apache-2.0 (TotalSegmentator's open tasks; cite Wasserthal et al., Radiology: "
                            "Artificial Intelligence 2023; see https://github.com/wasserth/TotalSegmentator)")

ORGANS = [
        "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
        "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left", "lung_lower_lobe_left",
        "lung_upper_lobe_right", "lung_middle_lobe_right", "lung_lower_lobe_right", "esophagus", "trachea",
        "thyroid_gland", "small_bowel", "duodenum", "colon", "urinary_bladder", "prostate", "kidney_cyst_left",
        "kidney_cyst_right"
]
VERTEBRAE = [
        "sacrum", "vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2", "vertebrae_L1",
        "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9", "vertebrae_T8", "vertebrae_T7",
        "vertebrae_T6", "vertebrae_T5", "vertebrae_T4", "vertebrae_T3", "vertebrae_T2", "vertebrae_T1",
        "vertebrae_C7", "vertebrae_C6", "vertebrae_C5", "vertebrae_C4", "vertebrae_C3", "vertebrae_C2",
        "vertebrae_C1"
]
CARDIAC = [
        "heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
        "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
        "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left", "superior_vena_cava",
        "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left", "iliac_artery_right",
        "iliac_vena_left", "iliac_vena_right"
]
MUSCLES = [
        "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right",
        "femur_left", "femur_right", "hip_left", "hip_right", "spinal_cord", "gluteus_maximus_left",
        "gluteus_maximus_right", "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left",
        "gluteus_minimus_right", "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain",
        "skull"
]
RIBS = [
        "rib_left_1", "rib_left_2", "rib_left_3", "rib_left_4", "rib_left_5", "rib_left_6", "rib_left_7",
        "rib_left_8", "rib_left_9", "rib_left_10", "rib_left_11", "rib_left_12", "rib_right_1", "rib_right_2",
        "rib_right_3", "rib_right_4", "rib_right_5", "rib_right_6", "rib_right_7", "rib_right_8", "rib_right_9",
        "rib_right_10", "rib_right_11", "rib_right_12", "sternum", "costal_cartilages"
]
TOTAL_CLASSES = ORGANS + VERTEBRAE + CARDIAC + MUSCLES + RIBS

# TotalSegmentator's MR task "total_mr" (map_to_binary.class_map_parts_mr): two parts, 50 classes
MR_ORGANS = [
        "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
        "adrenal_gland_right", "adrenal_gland_left", "lung_left", "lung_right", "esophagus", "small_bowel",
        "duodenum", "colon", "urinary_bladder", "prostate", "sacrum", "vertebrae", "intervertebral_discs",
        "spinal_cord", "heart", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "iliac_artery_left",
        "iliac_artery_right", "iliac_vena_left", "iliac_vena_right"
]
MR_MUSCLES = [
        "humerus_left", "humerus_right", "scapula_left", "scapula_right", "clavicula_left", "clavicula_right",
        "femur_left", "femur_right", "hip_left", "hip_right", "gluteus_maximus_left", "gluteus_maximus_right",
        "gluteus_medius_left", "gluteus_medius_right", "gluteus_minimus_left", "gluteus_minimus_right",
        "autochthon_left", "autochthon_right", "iliopsoas_left", "iliopsoas_right", "brain"
]
TOTAL_MR_CLASSES = MR_ORGANS + MR_MUSCLES


def _part(dataset: str, classes: list[str], size_mb: int, release: str = RELEASE) -> dict:
    return {"dataset": dataset, "url": f"{release}/{dataset}.zip", "sha256": None, "size_mb": size_mb,
            "classes": classes}


CATALOG: dict[str, dict] = {
    "total": {
        "title": "TotalSegmentator total: 117 CT structures at 1.5 mm (five nnU-Net models)",
        "modality": "CT", "format": "task", "licence": TOTALSEGMENTATOR_LICENCE, "non_commercial": False,
        "locator": "total_fastest",
        "parts": [
            _part("Dataset291_TotalSegmentator_part1_organs_1559subj", ORGANS, 230),
            _part("Dataset292_TotalSegmentator_part2_vertebrae_1532subj", VERTEBRAE, 230),
            _part("Dataset293_TotalSegmentator_part3_cardiac_1559subj", CARDIAC, 230),
            _part("Dataset294_TotalSegmentator_part4_muscles_1559subj", MUSCLES, 230),
            _part("Dataset295_TotalSegmentator_part5_ribs_1559subj", RIBS, 230),
        ],
    },
    "total_fast": {
        "title": "TotalSegmentator total, fast: 117 CT structures at 3 mm (one nnU-Net model)",
        "modality": "CT", "format": "task", "licence": TOTALSEGMENTATOR_LICENCE, "non_commercial": False,
        "parts": [_part("Dataset297_TotalSegmentator_total_3mm_1559subj", TOTAL_CLASSES, 135)],
    },
    "total_fastest": {
        "title": "TotalSegmentator total, fastest: 117 CT structures at 6 mm (a preview; locates --classes for "
                 "'total')",
        "modality": "CT", "format": "task", "licence": TOTALSEGMENTATOR_LICENCE, "non_commercial": False,
        "parts": [_part("Dataset298_TotalSegmentator_total_6mm_1559subj", TOTAL_CLASSES, 135)],
    },
    "total_mr": {
        "title": "TotalSegmentator total_mr: 50 MR structures at 1.5 mm (two nnU-Net models)",
        "modality": "MR", "format": "task", "licence": TOTALSEGMENTATOR_LICENCE, "non_commercial": False,
        "locator": "total_mr_fastest",
        "parts": [
            _part("Dataset850_TotalSegMRI_part1_organs_1088subj", MR_ORGANS, 230, RELEASE_MR),
            _part("Dataset851_TotalSegMRI_part2_muscles_1088subj", MR_MUSCLES, 230, RELEASE_MR),
        ],
    },
    "total_mr_fast": {
        "title": "TotalSegmentator total_mr, fast: 50 MR structures at 3 mm (one nnU-Net model)",
        "modality": "MR", "format": "task", "licence": TOTALSEGMENTATOR_LICENCE, "non_commercial": False,
        "parts": [_part("Dataset852_TotalSegMRI_total_3mm_1088subj", TOTAL_MR_CLASSES, 135, RELEASE_MR)],
    },
    "total_mr_fastest": {
        "title": "TotalSegmentator total_mr, fastest: 50 MR structures at 6 mm (a preview; locates --classes for "
                 "'total_mr')",
        "modality": "MR", "format": "task", "licence": TOTALSEGMENTATOR_LICENCE, "non_commercial": False,
        "parts": [_part("Dataset853_TotalSegMRI_total_6mm_1088subj", TOTAL_MR_CLASSES, 135, RELEASE_MR)],
    },
}


def task_classes(entry: dict) -> dict[int, str]:
    """Label value -> class name of a task: the parts' classes numbered on in part order (duplicates keep the
    first value)."""
    classes: dict[int, str] = {}
    seen: set[str] = set()
    for part in entry["parts"]:
        for name in part["classes"]:
            if name not in seen:
                seen.add(name)
                classes[len(classes) + 1] = name
    return classes
