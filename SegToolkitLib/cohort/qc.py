"""Automatic quality control of a cohort: each case is checked on its own and against the cohort, and flagged for
review with human-readable reasons. Every threshold is a field of :class:`QcThresholds` (``--qc NAME=VALUE`` on
the command line; documented in ``docs/cohort.md``).

Checks (the ``qc.csv`` column that holds each check's value in brackets):

* input: intensities implausible for CT (``intensity_p1``, ``intensity_p99``), orientation or direction unlike the
  cohort (``orientation``, ``direction_deg``), spacing or field-of-view outliers (``spacing_mm``, ``fov_mm``), too
  few slices (``slices``);
* output: empty segmentation or a usual label missing (``labels_present``, ``missing_labels``), a label cut off by
  the scan's edge (``edge_labels``), unusual numbers of connected components or holes (``components``, ``holes``),
  volume outliers per label (``volume_z``: robust z of log-volume, median/MAD, within the manifest's ``group``),
  implausible left/right pairs (``left_right``), high uncertainty (``uncertainty_mean``), and with reference labels
  Dice/HD95 (``dice_min``, ``hd95_max_mm``).

Cohort-relative checks need at least ``min_cohort`` cases with results; smaller cohorts get the per-case checks only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import InputError
from ..measurement.boundary import CUT_OFF_WARNING
from .records import DONE

MAD_TO_SD = 1.4826


@dataclass
class QcThresholds:
    """Thresholds of the automatic QC (defaults chosen to flag real faults, not the normal spread of a cohort)."""

    ct_p1_max_hu: float = -50.0  # CT: the 1st intensity percentile must reach air or fat (at most this HU)
    ct_p99_max_hu: float = 4000.0  # CT: the 99th percentile must stay below this (raw scanner values do not)
    ct_min_range_hu: float = 200.0  # CT: 99th minus 1st percentile at least this (normalised images are flat)
    min_slices: int = 10  # fewer slices than this is flagged
    direction_degrees: float = 10.0  # an index axis turned by more than this from the cohort's is flagged
    outlier_z: float = 5.0  # robust z (median/MAD) beyond which spacing, FOV, components, holes are unusual
    spacing_tolerance: float = 0.5  # ... and the spacing differs from the cohort median by more than this share
    fov_tolerance: float = 0.3  # ... and the field of view differs from the cohort median by more than this share
    volume_z: float = 3.5  # robust z of a label's log-volume beyond which it is an outlier
    volume_ratio: float = 1.5  # ... and its volume is more than this factor off the cohort median (either way)
    missing_fraction: float = 0.9  # a label present in at least this share of the cases is flagged where absent
    edge_usual_fraction: float = 0.5  # labels touching the edge in at least this share of cases are not flagged
    component_excess: int = 2  # components (or holes) more than the cohort median + this are unusual
    left_right_ratio: float = 2.0  # left/right volume ratio beyond this factor (either way) is implausible
    uncertainty_max: float = 0.2  # mean uncertainty inside the labels above this is flagged
    dice_min: float = 0.7  # with reference labels: lowest Dice of a label below this is flagged
    hd95_max_mm: float = 20.0  # with reference labels: largest HD95 above this is flagged
    min_cohort: int = 8  # cohort-relative checks need this many cases with results

    @classmethod
    def from_settings(cls, settings: dict | None = None, texts: list[str] | None = None) -> QcThresholds:
        """Defaults, updated by a dict (run.json) and ``NAME=VALUE`` texts (command line)."""
        values = dict(settings or {})
        for text in texts or []:
            name, _, value = text.partition("=")
            values[name.strip().replace("-", "_")] = value.strip()
        known = {f.name: f for f in fields(cls)}
        chosen = {}
        for name, value in values.items():
            if name not in known:
                raise InputError(f"QC threshold {name!r} unknown; choose from {', '.join(known)}")
            kind = int if known[name].type in ("int", int) else float
            try:
                chosen[name] = kind(value)
            except (TypeError, ValueError):
                raise InputError(f"QC threshold {name}={value!r}: give a number") from None
        return cls(**chosen)

    def to_dict(self) -> dict:
        return asdict(self)


QC_COLUMNS = ("case", "status", "flagged", "reasons", "reviewed", "group", "intensity_p1", "intensity_p99",
              "orientation", "direction_deg", "spacing_mm", "fov_mm", "slices", "labels_present", "missing_labels",
              "edge_labels", "components", "holes", "volume_z", "left_right", "uncertainty_mean", "dice_min",
              "hd95_max_mm", "seconds", "error")


@dataclass
class CaseQc:
    """The QC of one case: the ``qc.csv`` row and the reasons, keyed by check."""

    row: dict
    reasons: list[tuple[str, str]]  # (check, human-readable reason)
    volume_outliers: list[str] = field(default_factory=list)  # names of the labels whose volume is an outlier


def evaluate(case_ids: list[str], records: dict[str, dict], thresholds: QcThresholds,
             modality: str = "auto") -> dict[str, CaseQc]:
    """QC of every case in ``case_ids`` that has a record (done or failed)."""
    done = {case: records[case] for case in case_ids if records.get(case, {}).get("status") == DONE}
    cohort = _Cohort(done, thresholds, modality)
    results = {}
    for case in case_ids:
        record = records.get(case)
        if record is None:
            continue
        results[case] = cohort.check(record)
    return results


class _Cohort:
    """Statistics of the cohort's finished cases, and the checks of one case against them."""

    def __init__(self, done: dict[str, dict], thresholds: QcThresholds, modality: str) -> None:
        self.t = thresholds
        self.size = len(done)
        self.relative = self.size >= thresholds.min_cohort
        images = [r["image"] for r in done.values() if r.get("image")]
        self.ct = _is_ct_cohort(done, images, thresholds, modality)
        self.orientation = _majority([i["orientation"] for i in images])
        self.direction = _column_medians([i["direction"] for i in images if i["orientation"] == self.orientation])
        self.spacing = _column_medians([i["spacing"] for i in images])
        self.fov = _column_medians([i["fov_mm"] for i in images])
        self.spacing_spread = _column_mads([i["spacing"] for i in images])
        self.fov_spread = _column_mads([i["fov_mm"] for i in images])
        rows = [row for r in done.values() for row in r.get("measurements", [])]
        label_share = _share(done, lambda row: bool(row.get("present")))
        self.usual = {key: key[1] for key, share in sorted(label_share.items())
                      if share >= thresholds.missing_fraction} if self.relative else {}
        self.edge_share = _share(done, lambda row: bool(row.get("touches_edge")))
        self.components = _per_label(rows, "components")
        self.holes = _per_label(rows, "holes")
        self.volumes = _log_volumes(done)

    def check(self, record: dict) -> CaseQc:
        row = {column: None for column in QC_COLUMNS}
        row.update(case=record["case"], status=record.get("status"), group=record.get("group") or "",
                   seconds=record.get("seconds"), error=record.get("error") or "")
        reasons: list[tuple[str, str]] = []
        if record.get("status") != DONE:
            reasons.append(("failed", f"failed: {record.get('error') or 'unknown error'}"))
        image = record.get("image")
        if image:
            reasons += self._input_checks(image, row)
        if record.get("status") == DONE:
            reasons += self._output_checks(record, row)
        row["flagged"] = bool(reasons)
        row["reasons"] = "; ".join(reason for _, reason in reasons)
        return CaseQc(row, reasons, row.pop("_volume_outliers", []))

    # -- input ------------------------------------------------------------------------------------------
    def _input_checks(self, image: dict, row: dict) -> list[tuple[str, str]]:
        t, reasons = self.t, []
        p1, p99 = image.get("intensity_p1"), image.get("intensity_p99")
        row.update(intensity_p1=_round(p1), intensity_p99=_round(p99), orientation=image["orientation"],
                   spacing_mm=_dims(image["spacing"]), fov_mm=_dims(image["fov_mm"]), slices=image["slices"])
        if p1 is not None and self.ct and not _looks_like_hu(p1, p99, t):
            reasons.append(("intensity", f"intensities implausible for CT (1st percentile {p1:.4g}, 99th {p99:.4g}):"
                                         " not in Hounsfield units? check the rescale slope/intercept"))
        if p1 is not None and p99 is not None and p99 <= p1:
            reasons.append(("intensity", f"image is constant ({p1:.4g})"))
        if image["dimension"] == 3 and image["slices"] < t.min_slices:
            reasons.append(("slices", f"only {image['slices']} slices (at least {t.min_slices} expected)"))
        if not self.relative:
            return reasons
        if self.orientation and image["orientation"] != self.orientation:
            reasons.append(("orientation", f"orientation {image['orientation']} unlike the cohort's "
                                           f"{self.orientation} (flipped or permuted axes?)"))
        elif self.direction and len(self.direction) == len(image["direction"]):
            turn = _largest_axis_angle(image["direction"], self.direction)
            row["direction_deg"] = round(turn, 1)
            if turn > t.direction_degrees:
                reasons.append(("orientation", f"image axes turned {turn:.0f} degrees from the cohort's (oblique "
                                               "or tilted acquisition?)"))
        if _outlier(image["spacing"], self.spacing, self.spacing_spread, t.outlier_z, t.spacing_tolerance):
            reasons.append(("spacing", f"spacing {_dims(image['spacing'])} mm unlike the cohort's "
                                       f"{_dims(self.spacing)} mm"))
        if _outlier(image["fov_mm"], self.fov, self.fov_spread, t.outlier_z, t.fov_tolerance):
            reasons.append(("fov", f"field of view {_dims(image['fov_mm'])} mm unlike the cohort's "
                                   f"{_dims(self.fov)} mm"))
        return reasons

    # -- output -----------------------------------------------------------------------------------------
    def _output_checks(self, record: dict, row: dict) -> list[tuple[str, str]]:
        t, reasons = self.t, []
        rows = record.get("measurements", [])
        present = [r for r in rows if r.get("present")]
        row["labels_present"] = len(present)
        if not present:
            reasons.append(("empty", "empty segmentation: no label found"))
        present_keys = {_key(r) for r in present}
        missing = [name for key, name in self.usual.items() if key not in present_keys]
        row["missing_labels"] = ";".join(missing)
        if present and missing:
            reasons.append(("missing", f"label(s) missing that the cohort's cases have: {', '.join(missing)}"))
        edge_names = []
        for r in present:
            if not r.get("touches_edge"):
                continue
            edge_names.append(r["name"])
            usual = self.relative and self.edge_share.get(_key(r), 0.0) >= t.edge_usual_fraction
            if not usual:
                reasons.append(("cut_off", f"{r['name']} {CUT_OFF_WARNING} ({r['touches_edge']})"))
        row["edge_labels"] = ";".join(edge_names)
        reasons += self._count_checks(present, row, "components", self.components)
        reasons += self._count_checks(present, row, "holes", self.holes)
        reasons += self._volume_checks(record, present, row)
        reasons += self._left_right_checks(present, row)
        uncertainty = record.get("uncertainty_mean")
        row["uncertainty_mean"] = _round(uncertainty, 4)
        if uncertainty is not None and uncertainty > t.uncertainty_max:
            reasons.append(("uncertainty", f"high uncertainty: mean {uncertainty:.3f} inside the labels "
                                           f"(limit {t.uncertainty_max:g})"))
        reasons += self._reference_checks(present, rows, row)
        return reasons

    def _count_checks(self, present: list[dict], row: dict, column: str, cohort: dict) -> list[tuple[str, str]]:
        unusual, values = [], []
        for r in present:
            count = int(r.get(column) or 0)
            if count != (1 if column == "components" else 0):
                values.append(f"{r['name']}:{count}")
            stats = cohort.get(_key(r))
            median, spread = stats if stats and self.relative else ((1.0 if column == "components" else 0.0), 0.0)
            limit = median + max(self.t.component_excess, self.t.outlier_z * spread)
            if count > limit:
                usual = f"cohort median {median:g}" if stats and self.relative else f"expected at most {limit:g}"
                unusual.append(f"{r['name']} has {count} ({usual})")
        row[column] = " ".join(values)
        word = "connected components" if column == "components" else "holes"
        return [(column, f"unusual number of {word}: {', '.join(unusual)}")] if unusual else []

    def _volume_checks(self, record: dict, present: list[dict], row: dict) -> list[tuple[str, str]]:
        if not self.relative:
            return []
        worst, reasons = None, []
        for r in present:
            volume = r.get("volume_ml") or r.get("area_mm2")
            stats = self.volumes.get((record.get("group") or "", _key(r))) or self.volumes.get(("", _key(r)))
            if not volume or not stats:
                continue
            median, spread = stats
            z = _robust_z(math.log(volume), median, spread)
            if worst is None or abs(z) > abs(worst):
                worst = z
            ratio = math.exp(math.log(volume) - median)
            if abs(z) > self.t.volume_z and max(ratio, 1 / ratio) > self.t.volume_ratio:
                row.setdefault("_volume_outliers", []).append(r["name"])
                reasons.append(("volume", f"{r['name']} volume {volume:.4g} is {ratio:.2f}x the cohort median "
                                          f"{math.exp(median):.4g} (robust z {z:+.1f})"))
        row["volume_z"] = None if worst is None else (round(worst, 2) if math.isfinite(worst) else
                                                      (99.0 if worst > 0 else -99.0))
        return reasons

    def _left_right_checks(self, present: list[dict], row: dict) -> list[tuple[str, str]]:
        pairs = _left_right_pairs(present)
        values, reasons = [], []
        limit = self.t.left_right_ratio
        for organ, (left, right) in sorted(pairs.items()):
            size = ("volume_ml" if left.get("volume_ml") is not None else "area_mm2")
            if left.get(size) and right.get(size):
                ratio = left[size] / right[size]
                values.append(f"{organ}:{ratio:.2f}")
                if ratio > limit or ratio < 1 / limit:
                    reasons.append(("left_right", f"{left['name']} / {right['name']} volume ratio {ratio:.2f} "
                                                  f"(outside 1/{limit:g}..{limit:g})"))
            lx, rx = left.get("centroid_lps_x_mm"), right.get("centroid_lps_x_mm")
            if lx is not None and rx is not None and lx < rx:
                reasons.append(("left_right", f"{left['name']} lies on the patient's right of {right['name']} "
                                              "(left and right swapped?)"))
        row["left_right"] = " ".join(values)
        return reasons

    def _reference_checks(self, present: list[dict], rows: list[dict], row: dict) -> list[tuple[str, str]]:
        dices = [r["dice"] for r in rows if r.get("dice") is not None]
        distances = [r["hd95_mm"] for r in rows if r.get("hd95_mm") is not None and math.isfinite(r["hd95_mm"])]
        reasons = []
        if dices:
            row["dice_min"] = round(min(dices), 4)
            if min(dices) < self.t.dice_min:
                worst = min((r for r in rows if r.get("dice") is not None), key=lambda r: r["dice"])
                reasons.append(("dice", f"{worst['name']} Dice {worst['dice']:.3f} against the reference "
                                        f"(limit {self.t.dice_min:g})"))
        if distances:
            row["hd95_max_mm"] = round(max(distances), 2)
            if max(distances) > self.t.hd95_max_mm:
                reasons.append(("hd95", f"HD95 {max(distances):.1f} mm against the reference "
                                        f"(limit {self.t.hd95_max_mm:g} mm)"))
        return reasons


# --- statistics --------------------------------------------------------------------------------------------

def _key(row: dict) -> tuple[int, str]:
    return int(row["label"]), str(row.get("name") or "")


def _share(done: dict[str, dict], test) -> dict:
    """Per label: the share of cases with that label (any row) for which ``test(row)`` holds."""
    counts: Counter = Counter()
    for record in done.values():
        for row in record.get("measurements", []):
            if test(row):
                counts[_key(row)] += 1
    return {key: count / max(len(done), 1) for key, count in counts.items()}


def _per_label(rows: list[dict], column: str) -> dict:
    """Per label: (median, robust SD) of ``column`` over the cases where the label is present."""
    values: dict = {}
    for row in rows:
        if row.get("present") and row.get(column) is not None:
            values.setdefault(_key(row), []).append(float(row[column]))
    return {key: _median_spread(v) for key, v in values.items()}


def _log_volumes(done: dict[str, dict]) -> dict:
    """Per (group, label) and per ("", label): median and robust SD of log-volume (area for 2D)."""
    values: dict = {}
    for record in done.values():
        group = record.get("group") or ""
        for row in record.get("measurements", []):
            volume = row.get("volume_ml") or row.get("area_mm2")
            if row.get("present") and volume:
                values.setdefault(("", _key(row)), []).append(math.log(volume))
                if group:
                    values.setdefault((group, _key(row)), []).append(math.log(volume))
    return {key: _median_spread(v) for key, v in values.items() if len(v) >= 3}


def _median_spread(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    median = float(np.median(array))
    return median, MAD_TO_SD * float(np.median(np.abs(array - median)))


def _largest_axis_angle(direction: list[float], reference: list[float]) -> float:
    """The largest angle (degrees) between an index axis of ``direction`` and the same axis of ``reference``."""
    dimension = int(round(math.sqrt(len(direction))))
    first = np.asarray(direction, dtype=float).reshape(dimension, dimension)
    second = np.asarray(reference, dtype=float).reshape(dimension, dimension)
    second = second / np.maximum(np.linalg.norm(second, axis=0), 1e-12)  # a median of unit vectors is not unit
    cosines = np.clip(np.sum(first * second, axis=0), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosines)).max())


def _robust_z(value: float, median: float, spread: float) -> float:
    """(value - median) / spread; with no spread, 0 at the median and infinite elsewhere."""
    if spread > 0:
        return (value - median) / spread
    return 0.0 if value == median else math.copysign(math.inf, value - median)


def _column_medians(vectors: list[list[float]]) -> list[float] | None:
    if not vectors or len({len(v) for v in vectors}) != 1:
        return None
    return [float(v) for v in np.median(np.asarray(vectors, dtype=float), axis=0)]


def _column_mads(vectors: list[list[float]]) -> list[float] | None:
    medians = _column_medians(vectors)
    if medians is None:
        return None
    array = np.asarray(vectors, dtype=float)
    return [MAD_TO_SD * float(v) for v in np.median(np.abs(array - np.asarray(medians)), axis=0)]


def _outlier(values: list[float], medians: list[float] | None, spreads: list[float] | None, z: float,
             tolerance: float) -> bool:
    """Any component off the median by more than ``z`` robust SDs and by more than ``tolerance`` of the median."""
    if medians is None or spreads is None or len(values) != len(medians):
        return False
    return any(abs(v - m) > max(z * s, tolerance * abs(m)) for v, m, s in zip(values, medians, spreads))


def _majority(values: list[str]) -> str | None:
    return Counter(values).most_common(1)[0][0] if values else None


def _looks_like_hu(p1: float, p99: float | None, t: QcThresholds) -> bool:
    return p99 is not None and p1 <= t.ct_p1_max_hu and p99 <= t.ct_p99_max_hu and p99 - p1 >= t.ct_min_range_hu


def _is_ct_cohort(done: dict[str, dict], images: list[dict], t: QcThresholds, modality: str) -> bool:
    """CT when the user says so, else when the model is a CT model, else when most images are in HU."""
    if modality.upper() in ("CT", "MR", "MRI", "OTHER"):
        return modality.upper() == "CT"
    model = _majority([r["model_modality"] for r in done.values() if r.get("model_modality")])
    if model is not None:
        return model == "CT"
    looks = [_looks_like_hu(i["intensity_p1"], i["intensity_p99"], t) for i in images
             if i.get("intensity_p1") is not None]
    return bool(looks) and sum(looks) > len(looks) / 2


_SIDE = re.compile(r"(^|[^a-z])(left|right)([^a-z]|$)")


def _left_right_pairs(rows: list[dict]) -> dict[str, tuple[dict, dict]]:
    """Labels named as a left/right pair (``left kidney`` / ``right kidney``, ``kidney_left`` / ``kidney_right``)."""
    sides: dict[str, dict[str, dict]] = {}
    for row in rows:
        name = str(row.get("name") or "").lower()
        match = _SIDE.search(name)
        if match:
            organ = _SIDE.sub(" ", name).replace("_", " ").strip()
            sides.setdefault(organ, {})[match.group(2)] = row
    return {organ: (pair["left"], pair["right"]) for organ, pair in sides.items() if len(pair) == 2}


def _dims(values: list[float] | None) -> str:
    return "x".join(f"{v:.3g}" for v in values) if values else ""


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)
