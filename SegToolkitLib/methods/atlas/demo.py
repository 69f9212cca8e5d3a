"""Demo step for ``segtoolkit demo``: another phantom subject as the atlas, registered onto the demo phantom."""

from __future__ import annotations

import time

from ...io import LabelMap, label_values
from ...progress import ProgressCallback, report, scaled
from .multi_atlas import Atlas, RegistrationOptions, propagate_atlas

ATLAS_SUBJECT = 1


def demo_step(phantom, progress: ProgressCallback | None = None) -> list:
    """Phantom subject 1 (its image and labels) registered onto the demo phantom (rigid + affine,
    fast preset) and its labels propagated; label values as in ``phantom.labels``."""
    from ...samples.demo_result import DemoResult
    from ...samples.phantom import make_phantom

    report(progress, 0.0, "making the atlas subject")
    start = time.perf_counter()
    other = make_phantom(subject=ATLAS_SUBJECT)
    atlas = Atlas(other.image, other.labels, f"phantom subject {ATLAS_SUBJECT}")
    options = RegistrationOptions(transform="affine", preset="fast", metric="mi", init="geometry")
    propagated = propagate_atlas(phantom.image, atlas, options, scaled(progress, 0.1, 1.0), target_name="phantom")
    label_map = LabelMap(propagated.labels, other.labels.labels.covering(label_values(propagated.labels)))
    report(progress, 1.0, "atlas propagation done")
    return [DemoResult("atlas (single)", label_map, time.perf_counter() - start)]
