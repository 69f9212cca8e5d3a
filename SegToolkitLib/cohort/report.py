"""The cohort's ``report.html``: one self-contained file (inline PNGs, no scripts, no links) that opens offline.

Sections: summary, reasons for flags, the flagged cases (thumbnail with label outlines and reasons), per-label
volume distributions with the flagged cases marked, a sample of the other cases' thumbnails, and the failures
with their errors. Cases marked as reviewed in ``qc.csv`` are shown as such.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import time
from collections import Counter
from pathlib import Path

from ..io import write_text_atomic
from .qc import CaseQc
from .records import DONE

SAMPLE_SIZE = 12  # thumbnails of unflagged cases shown


def write_report(outdir: Path, run: dict, case_ids: list[str], records: dict[str, dict], qc: dict[str, CaseQc],
                 reviewed: dict[str, str]) -> Path:
    """Write ``OUTDIR/report.html`` atomically and return its path."""
    parts = [_head(run), _summary(run, case_ids, records, qc, reviewed), _reason_table(qc)]
    flagged = [c for c in case_ids if c in qc and qc[c].row["flagged"] and records[c].get("status") == DONE]
    parts.append(_case_gallery("Flagged cases", flagged, outdir, records, qc, reviewed, show_reasons=True))
    parts.append(_distributions(case_ids, records, qc))
    others = [c for c in case_ids if c in qc and not qc[c].row["flagged"]]
    sample = sorted(others, key=lambda c: hashlib.sha256(c.encode()).hexdigest())[:SAMPLE_SIZE]
    parts.append(_case_gallery(f"A sample of the other cases ({len(sample)} of {len(others)})",
                               sorted(sample, key=case_ids.index), outdir, records, qc, reviewed, show_reasons=False))
    parts.append(_failures(case_ids, records))
    parts.append("</body></html>\n")
    path = Path(outdir) / "report.html"
    write_text_atomic(path, "\n".join(parts))
    return path


def _head(run: dict) -> str:
    title = f"SegToolkit cohort report: {html.escape(str(run.get('task', '')))} on {html.escape(str(run.get('input')))}"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{title}</title><style>"
            "body{font-family:sans-serif;margin:1.5em;color:#222} table{border-collapse:collapse;margin:.5em 0}"
            "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}"
            ".case{display:inline-block;margin:.4em;vertical-align:top;max-width:420px;font-size:.85em}"
            ".flag{color:#b00} .ok{color:#060} .rev{color:#666} img{display:block;border:1px solid #999}"
            f"</style></head><body><h1>{title}</h1>")


def _summary(run: dict, case_ids: list[str], records: dict, qc: dict, reviewed: dict) -> str:
    done = sum(1 for c in case_ids if records.get(c, {}).get("status") == DONE)
    failed = sum(1 for c in case_ids if records.get(c, {}).get("status") not in (None, DONE))
    flagged = [c for c in case_ids if c in qc and qc[c].row["flagged"]]
    open_flags = [c for c in flagged if not reviewed.get(c)]
    timing = run.get("timing", {})
    rows = [("cases", len(case_ids)), ("done", done), ("failed", failed),
            ("not run yet", len(case_ids) - done - failed),
            ("flagged for review", f"{len(flagged)} ({len(open_flags)} not reviewed yet)"),
            ("task", run.get("task")), ("options", _compact(run.get("options"))), ("model", _compact(run.get("model"))),
            ("engine", _compact(run.get("engine"))), ("last run", timing.get("finished")),
            ("report written", time.strftime("%Y-%m-%d %H:%M:%S"))]
    return "<h2>Summary</h2>" + _table(["", ""], rows)


def _reason_table(qc: dict[str, CaseQc]) -> str:
    counts = Counter(check for result in qc.values() for check in {check for check, _ in result.reasons})
    if not counts:
        return "<h2>Reasons</h2><p class='ok'>No case flagged.</p>"
    return "<h2>Reasons</h2>" + _table(["check", "cases"], sorted(counts.items(), key=lambda kv: -kv[1]))


def _case_gallery(title: str, cases: list[str], outdir: Path, records: dict, qc: dict, reviewed: dict,
                  show_reasons: bool) -> str:
    items = []
    for case in cases:
        thumbnail = records[case].get("outputs", {}).get("thumbnail")
        picture = _inline_png((Path(outdir) / thumbnail["path"]).read_bytes()) if thumbnail and \
            (Path(outdir) / thumbnail["path"]).is_file() else "<p>(no thumbnail)</p>"
        note = ""
        if reviewed.get(case):
            note = f"<div class='rev'>reviewed: {html.escape(reviewed[case])}</div>"
        reasons = "".join(f"<li class='flag'>{html.escape(reason)}</li>" for _, reason in qc[case].reasons)
        items.append(f"<div class='case'><b>{html.escape(case)}</b>{picture}{note}"
                     f"{'<ul>' + reasons + '</ul>' if show_reasons and reasons else ''}</div>")
    return f"<h2>{html.escape(title)}</h2>" + ("".join(items) or "<p>None.</p>")


def _distributions(case_ids: list[str], records: dict, qc: dict) -> str:
    """Strip plots of each label's volume over the cohort; flagged cases in red, volume outliers labelled."""
    volumes: dict[str, list[tuple[str, float]]] = {}
    for case in case_ids:
        record = records.get(case, {})
        for row in record.get("measurements", []) if record.get("status") == DONE else []:
            volume = row.get("volume_ml") if row.get("volume_ml") is not None else row.get("area_mm2")
            if row.get("present") and volume is not None:
                volumes.setdefault(str(row["name"]), []).append((case, float(volume)))
    if not volumes:
        return "<h2>Volume distributions</h2><p>No volumes measured.</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(volumes), 1, figsize=(7, 0.9 * len(volumes) + 0.6), squeeze=False)
    three_d = any(r.get("volume_ml") is not None for rec in records.values() for r in rec.get("measurements", []))
    unit = "mL" if three_d else "mm²"
    for axis, (name, values) in zip(axes[:, 0], sorted(volumes.items())):
        flagged = [(c, v) for c, v in values if qc[c].row["flagged"]]
        clean = [(c, v) for c, v in values if not qc[c].row["flagged"]]
        axis.scatter([v for _, v in clean], [0] * len(clean), s=12, alpha=0.5, color="#2a6")
        axis.scatter([v for _, v in flagged], [0] * len(flagged), s=28, color="#c00", marker="x")
        for case, value in flagged:
            if name in qc[case].volume_outliers:
                axis.annotate(case, (value, 0), xytext=(0, 6), textcoords="offset points", fontsize=7, ha="center")
        axis.set_yticks([])
        axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        axis.tick_params(axis="x", labelsize=7)
    axes[-1, 0].set_xlabel(f"volume ({unit}); red x = flagged case")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return "<h2>Volume distributions</h2>" + _inline_png(buffer.getvalue())


def _failures(case_ids: list[str], records: dict) -> str:
    rows = [(case, records[case].get("error", "")) for case in case_ids
            if records.get(case, {}).get("status") not in (None, DONE)]
    return "<h2>Failures</h2>" + (_table(["case", "error"], rows) if rows else "<p class='ok'>None.</p>")


def _table(header: list[str], rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v if v is not None else ''))}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _compact(value) -> str:
    """Settings as short JSON without the empty ones."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v not in (None, "", [], {})}
    return "" if value in (None, {}) else json.dumps(value, default=str)


def _inline_png(data: bytes) -> str:
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}'>"
