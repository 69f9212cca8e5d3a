"""The cohort's tasks and label map formats (a light module: the command line reads it when building its help)."""

TASKS = ("predict", "atlas", "grow", "snake", "measure")
FORMATS = ("nii.gz", "seg.nrrd", "dcm")  # dcm: DICOM SEG of the case's DICOM series
