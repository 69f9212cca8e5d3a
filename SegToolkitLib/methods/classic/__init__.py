"""Classic semi-automatic segmentation: thresholding, region growing from seeds and snakes (active contours).

Seeds are physical LPS points (``ijk=True`` for voxel indices, ``ras=True`` for RAS points); every result is a
uint8 label image on the input grid.
"""

from .cleanup import component_containing, fill_holes, largest_component, remove_islands
from .feature_maps import edge_map, gradient_magnitude, region_probability, seed_range
from .region_growing import competitive_growing, confidence_connected, connected_threshold, grow
from .snakes import SnakeParameters, SnakeSession, snake
from .threshold import hysteresis, otsu, threshold, threshold_range

__all__ = [
    "SnakeParameters", "SnakeSession", "competitive_growing", "component_containing", "confidence_connected",
    "connected_threshold", "edge_map", "fill_holes", "gradient_magnitude", "grow", "hysteresis",
    "largest_component", "otsu", "region_probability", "remove_islands", "seed_range", "snake", "threshold",
    "threshold_range",
]
