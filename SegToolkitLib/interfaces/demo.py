"""The main job: run every segmentation method on the built-in phantom and compare each with the truth.

Each method contributes a *demo step*, listed in :data:`DEMO_STEPS` as ``"package.module:function"``::

    def demo_step(phantom: Phantom, progress: ProgressCallback | None) -> list[DemoResult]

A step segments ``phantom.image`` (it may use ``phantom.seeds``, and for atlas or learning methods other
subjects made with :func:`make_phantom`, but never ``phantom.labels``) and returns one :class:`DemoResult` per
variant, with label values as in ``phantom.labels``. It should take a few seconds at most: the whole demo runs
in under a minute on two cores.

:func:`run_demo` writes into the output folder: the phantom (``phantom.nii.gz``) and its truth
(``truth.nii.gz``, ``truth.seg.nrrd``), each result as ``<method>.nii.gz`` and ``<method>.seg.nrrd``,
``measurements.csv`` (the measurements of the truth and of every result), ``agreement.csv`` (volumes and Dice
against the truth per method and label) and ``overview.png`` (slices with the contours of every result).
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import SimpleITK as sitk

from ..errors import CancelledError, OutputError, SegToolkitError
from ..io import LabelMap, grid_difference, write_image, write_label_map, write_text_atomic
from ..io.atomic import atomic_output
from ..progress import CancelToken, ProgressCallback, report, scaled
from ..samples.demo_result import DemoResult
from ..samples.phantom import Phantom, make_phantom

log = logging.getLogger(__name__)
SKIPPED, FAILED = "skipped", "failed"


DemoStep = Callable[[Phantom, Union[ProgressCallback, None]], list[DemoResult]]

# Steps run in this order; each method adds its own entry.
DEMO_STEPS: tuple[str, ...] = (
    "SegToolkitLib.methods.classic.demo:demo_step",
    "SegToolkitLib.methods.atlas.demo:demo_step",
    "SegToolkitLib.methods.deep.demo:demo_step",
)


@dataclass
class DemoReport:
    """What :func:`run_demo` did: the results, their agreement with the truth, the files and any problems."""

    output_dir: Path
    results: list[DemoResult]
    agreement: list[dict]
    files: list[Path]
    seconds: float
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    table: str = ""


def prepare_output_folder(path: Path | str) -> Path:
    """Create the output folder ``path`` if needed; its parent must exist already."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; give a folder for the output")
    if not path.exists():
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise OutputError(f"{path}: parent folder {parent} does not exist; create it first")
        try:
            path.mkdir()
        except OSError as error:
            raise OutputError(f"{path}: cannot create the output folder ({error.strerror})") from None
    return path


def run_demo(output_dir: Path | str, steps: Sequence[str | DemoStep] = DEMO_STEPS,
             progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> DemoReport:
    """Run ``steps`` on the default phantom and write results, measurements, agreement and a PNG overview.

    A step that raises is recorded in :attr:`DemoReport.failures` and the others still run; a step whose module
    needs a package that is not installed (e.g. torch without the ``deep`` extra) is listed in ``skipped``.
    """
    started = time.perf_counter()
    folder = prepare_output_folder(output_dir)
    report(progress, 0.0, "making the phantom", cancel)
    phantom = make_phantom()
    results: list[DemoResult] = []
    failures: list[str] = []
    skipped: list[str] = []
    step_share = 0.75
    for number, step in enumerate(steps):
        sub = scaled(progress, 0.05 + step_share * number / len(steps), 0.05 + step_share * (number + 1) / len(steps))
        report(sub, 0.0, f"step {_step_name(step)}", cancel)
        outcome = _run_step(step, phantom, sub)
        if isinstance(outcome, list):
            results += outcome
        else:
            (skipped if outcome[0] == SKIPPED else failures).append(outcome[1])
    report(progress, 0.8, "writing results", cancel)
    files = _write_volumes(folder, phantom, results)
    report(progress, 0.85, "measuring", cancel)
    agreement = agreement_rows(phantom, results)
    files.append(write_text_atomic(folder / "agreement.csv", _csv(agreement)))
    files.append(write_text_atomic(folder / "measurements.csv", _csv(measurement_rows(phantom, results))))
    report(progress, 0.92, "drawing the overview", cancel)
    files.append(write_overview(folder / "overview.png", phantom, results))
    report(progress, 1.0, "done", cancel)
    demo = DemoReport(folder, results, agreement, files, time.perf_counter() - started, failures, skipped)
    demo.table = format_table(phantom, results, agreement)
    return demo


def _step_name(step: str | DemoStep) -> str:
    return step if isinstance(step, str) else f"{step.__module__}:{step.__qualname__}"


def resolve_step(step: str | DemoStep) -> DemoStep:
    """The function behind a ``"package.module:function"`` entry (callables are returned as they are)."""
    if callable(step):
        return step
    module_name, _, function_name = step.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


def _run_step(step: str | DemoStep, phantom: Phantom,
              progress: ProgressCallback | None) -> list[DemoResult] | tuple[str, str]:
    """The step's results, or (SKIPPED or FAILED, a one-line message)."""
    name = _step_name(step)
    try:
        function = resolve_step(step)
    except ModuleNotFoundError as error:
        if error.name and not error.name.startswith("SegToolkitLib"):
            return SKIPPED, f"{name} skipped: needs the Python package {error.name!r} (pip install 'segtoolkit[deep]')"
        return FAILED, f"{name} failed: {error}"
    except (ImportError, AttributeError, ValueError) as error:
        return FAILED, f"{name} failed: cannot load the step ({error})"
    try:
        results = list(function(phantom, progress))
    except CancelledError:
        raise
    except SegToolkitError as error:
        return FAILED, f"{name} failed: {error}"
    except Exception as error:  # a broken method must not hide the others' results; the CLI then exits 1
        log.debug("demo step %s failed", name, exc_info=True)
        return FAILED, f"{name} failed: {type(error).__name__}: {error}"
    for result in results:
        problem = grid_difference(result.label_map.image, phantom.labels.image)
        if problem:
            return FAILED, f"{name} failed: result {result.name!r} is not on the phantom grid ({problem})"
    return results


def _slug(name: str, taken: set[str]) -> str:
    """A file-name stem for a method name, unique among ``taken``."""
    stem = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "result"
    if stem in ("phantom", "truth"):
        stem = f"method_{stem}"
    candidate, counter = stem, 2
    while candidate in taken:
        candidate, counter = f"{stem}_{counter}", counter + 1
    taken.add(candidate)
    return candidate


def _write_volumes(folder: Path, phantom: Phantom, results: list[DemoResult]) -> list[Path]:
    files = [write_image(phantom.image, folder / "phantom.nii.gz"),
             write_label_map(phantom.labels, folder / "truth.nii.gz"),
             write_label_map(phantom.labels, folder / "truth.seg.nrrd")]
    taken: set[str] = set()
    for result in results:
        stem = _slug(result.name, taken)
        label_map = LabelMap(result.label_map.image, _named_like_truth(result.label_map, phantom))
        files.append(write_label_map(label_map, folder / f"{stem}.nii.gz"))
        files.append(write_label_map(label_map, folder / f"{stem}.seg.nrrd"))
    return files


def _named_like_truth(label_map: LabelMap, phantom: Phantom):
    """The result's label table, with the phantom's names and colours for the phantom's label values."""
    table = label_map.labels.covering(label_map.present_values())
    for label in phantom.labels.labels:
        if label.value in table.labels and table.labels[label.value].name.startswith("Label "):
            table.add(label.value, label.name, label.color)
    return table


def agreement_rows(phantom: Phantom, results: list[DemoResult]) -> list[dict]:
    """Per method and phantom label: volumes, Dice and surface distances against the truth.

    A label the method did not produce at all is reported with ``segmented: False`` and no numbers (a method
    may target only some organs).
    """
    from ..measurement.evaluation import compare

    values = phantom.labels.labels.values()
    rows = []
    for result in results:
        present = set(result.label_map.present_values())
        for row in compare(result.label_map, phantom.labels, labels=values, mean=False):
            value = int(row["label"])
            segmented = value in present
            rows.append({
                "method": result.name, "seconds": round(result.seconds, 3), "label": value,
                "name": phantom.labels.labels.name(value), "segmented": segmented,
                "volume_ml": row.get("volume_prediction_ml") if segmented else None,
                "truth_volume_ml": phantom.truth_volumes_ml[value],
                "dice": row.get("dice") if segmented else None,
                "hd95_mm": row.get("hd95_mm") if segmented else None,
                "assd_mm": row.get("assd_mm") if segmented else None,
            })
    return rows


def measurement_rows(phantom: Phantom, results: list[DemoResult]) -> list[dict]:
    """The measurements (with HU statistics from the phantom) of the truth and of each result."""
    from ..measurement.shape import measure

    rows = []
    for source, label_map in [("truth", phantom.labels)] + [(r.name, r.label_map) for r in results]:
        for row in measure(label_map, phantom.image, labels=label_map.present_values()).rows():
            rows.append({"source": source, **row})
    return rows


def format_table(phantom: Phantom, results: list[DemoResult], agreement: list[dict]) -> str:
    """Method × label table; each cell is the volume in mL and, in brackets, the Dice against the truth
    ("-" where the method did not produce that label)."""
    from .cli.common import format_rows

    names = [label.name for label in phantom.labels.labels]
    truth_row = {"method": "truth", "seconds": None}
    truth_row.update({label.name: f"{phantom.truth_volumes_ml[label.value]:.1f}" for label in phantom.labels.labels})
    rows = [truth_row]
    for result in results:
        row = {"method": result.name, "seconds": f"{result.seconds:.1f}"}
        row.update({entry["name"]: f"{entry['volume_ml']:.1f} ({entry['dice']:.2f})" if entry["segmented"] else "-"
                    for entry in agreement if entry["method"] == result.name})
        rows.append(row)
    return format_rows(rows, "table", ["method", "seconds"] + names)


def _csv(rows: list[dict]) -> str:
    from .cli.common import format_rows

    return format_rows(rows, "csv") if rows else "\n"


# --- overview picture ---------------------------------------------------------------------------------------

WINDOW_HU = (-160.0, 240.0)   # abdominal soft-tissue window


def write_overview(path: Path, phantom: Phantom, results: list[DemoResult]) -> Path:
    """A PNG with three axial slices and one coronal slice of the phantom, the truth and every result outlined."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    image = sitk.GetArrayFromImage(phantom.image)
    truth = sitk.GetArrayFromImage(phantom.labels.image)
    outlines = [("truth", truth, (1.0, 1.0, 1.0), "--")]
    colours = matplotlib.colormaps["tab10"].colors
    for number, result in enumerate(results):
        outlines.append((result.name, sitk.GetArrayFromImage(result.label_map.image), colours[number % 10], "-"))
    views = _overview_views(phantom)
    figure = Figure(figsize=(4.0 * len(views), 4.6), dpi=110, facecolor="black")
    axes = figure.subplots(1, len(views))
    spacing = phantom.image.GetSpacing()
    for ax, (title, cut, axial) in zip(np.atleast_1d(axes), views):
        # Axial: anterior up, patient right on the left; coronal: superior up. Pixels drawn with their true shape.
        origin = "upper" if axial else "lower"
        aspect = (spacing[1] if axial else spacing[2]) / spacing[0]
        ax.imshow(image[cut], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], origin=origin, aspect=aspect,
                  interpolation="nearest")
        for _, labels, colour, style in outlines:
            plane = labels[cut]
            for value in np.unique(plane[plane > 0]):
                # Contours are in data coordinates (row index = y), which imshow's origin already orients.
                ax.contour((plane == value).astype(np.uint8), levels=[0.5], colors=[colour], linewidths=1.0,
                           linestyles=style)
        ax.set_title(title, color="white", fontsize=9)
        ax.set_axis_off()
    handles = [Line2D([], [], color=colour, linestyle=style, label=name) for name, _, colour, style in outlines]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False, fontsize=8,
                  labelcolor="white")
    figure.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.12, wspace=0.03)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", facecolor="black")
    return path


def _overview_views(phantom: Phantom) -> list[tuple[str, tuple, bool]]:
    """(title, NumPy index, is axial) of the slices to show: axial through the lesion, the spleen and the
    kidneys, and coronal through the kidneys."""
    from ..samples.phantom import LEFT_KIDNEY, LIVER_LESION, RIGHT_KIDNEY, SPLEEN

    def index(value: int) -> tuple[int, int, int]:
        return phantom.labels.image.TransformPhysicalPointToIndex(phantom.seeds[value])

    views = []
    for value, what in ((LIVER_LESION, "liver lesion"), (SPLEEN, "spleen"), (RIGHT_KIDNEY, "kidneys")):
        k = index(value)[2]
        views.append((f"axial slice {k} ({what})", (k, slice(None), slice(None)), True))
    j = round((index(LEFT_KIDNEY)[1] + index(RIGHT_KIDNEY)[1]) / 2)
    views.append((f"coronal row {j}", (slice(None), j, slice(None)), False))
    return views
