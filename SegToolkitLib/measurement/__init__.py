"""Measurements radiologists report (volumes, diameters, intensity statistics) and evaluation metrics."""
