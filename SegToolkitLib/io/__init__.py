"""Image input and output with geometry kept intact (see :mod:`.images`)."""

from .atomic import atomic_output, check_output_path, write_text_atomic
from .images import (
                     LabelMap,
                     check_same_grid,
                     check_scalar,
                     grid_difference,
                     label_values,
                     read_image,
                     read_label_map,
                     read_scalar_image,
                     write_image,
                     write_label_map,
)
from .labels import Label, LabelTable
from .segmentation_file import read_segmentation, write_segmentation

__all__ = [
    "Label", "LabelMap", "LabelTable", "atomic_output", "check_output_path", "check_same_grid", "check_scalar",
    "grid_difference", "label_values", "read_image", "read_label_map", "read_scalar_image", "read_segmentation",
    "write_image", "write_label_map", "write_segmentation", "write_text_atomic",
]
