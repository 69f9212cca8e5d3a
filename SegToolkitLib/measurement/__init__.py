"""Measurements radiologists report (volumes, diameters, intensity statistics) and evaluation metrics.

* :func:`.shape.measure` -> :class:`.shape.MeasurementReport`: per-label volume, surface, Feret and RECIST
  diameters, ellipsoid estimate, centroid (LPS and RAS) and intensity statistics.
* :func:`.evaluation.compare`: per-label Dice, Jaccard, HD95, ASSD and volume differences.

Columns, units, conventions and the JSON schema: ``docs/measurements.md``.
"""
