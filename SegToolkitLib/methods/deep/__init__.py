"""Deep segmentation engine: datasets, self-configuring plans, networks, training, model folders, inference.

torch and MONAI are imported only inside the submodules that need them (``networks``, ``training``,
``inference``...), so the rest of SegToolkit works without the ``deep`` extra.
"""

from __future__ import annotations

import importlib.util

from ...errors import SegToolkitError


def require_deep() -> None:
    """Raise a clear error when torch, MONAI or safetensors are not installed."""
    missing = [name for name in ("torch", "monai", "safetensors") if importlib.util.find_spec(name) is None]
    if missing:
        raise SegToolkitError(f"deep learning needs {', '.join(missing)}: install segtoolkit[deep] "
                              "(pip install 'segtoolkit[deep]')")
