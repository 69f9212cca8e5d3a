"""Cohort QC: a phantom cohort with injected faults (corrupt file, flipped image, not in HU, empty segmentation,
cut-off organ, volume outlier, left/right swap, oblique grid, thick slices, too few slices): each is flagged with
its reason, no clean case is; the report is self-contained; reviews in qc.csv survive a report rebuild; thresholds
are settable and documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from cohort_phantoms import FAULTS, make_fault_cohort, read_csv

from SegToolkitLib.cohort import QcThresholds, run_cohort
from SegToolkitLib.errors import InputError
from SegToolkitLib.interfaces.cli.app import main

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cohort.md"


@pytest.fixture(scope="module")
def fault_cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    manifest, clean, faults = make_fault_cohort(folder / "in")
    result = run_cohort(manifest, folder / "out", "measure", workers=1, processes=False)
    return result, clean, faults


def test_every_injected_fault_is_flagged_with_its_reason_and_no_clean_case(fault_cohort):
    result, clean, faults = fault_cohort
    rows = {row["case"]: row for row in read_csv(result.outdir / "qc.csv")}
    assert set(rows) == set(clean) | set(faults.values())
    for fault, case in faults.items():
        assert rows[case]["flagged"] == "true", fault
        assert FAULTS[fault] in rows[case]["reasons"], (fault, rows[case]["reasons"])
    flagged_clean = [case for case in clean if rows[case]["flagged"] != "false"]
    assert len(flagged_clean) <= 0.05 * len(clean), [rows[c]["reasons"] for c in flagged_clean]
    assert rows[faults["corrupt"]]["status"] == "failed" and "damaged or incomplete" in rows[faults["corrupt"]]["error"]
    assert rows[faults["flipped"]]["orientation"] == "LPI" and rows[clean[0]]["orientation"] == "LPS"
    assert float(rows[faults["not_hu"]]["intensity_p1"]) > 0 > float(rows[clean[0]]["intensity_p1"])
    assert "liver" in rows[faults["cut_off"]]["edge_labels"]
    assert abs(float(rows[faults["volume"]]["volume_z"])) > 3.5
    assert result.failed == 1 and result.done == len(rows) - 1  # the corrupt case did not stop the run


def test_measurements_table_has_a_row_per_case_and_label(fault_cohort):
    import pyarrow.parquet as pq

    result, clean, _ = fault_cohort
    table = pq.read_table(result.outdir / "measurements.parquet").to_pylist()
    csv_rows = read_csv(result.outdir / "measurements.csv")
    assert len(table) == len(csv_rows) > 0
    assert list(csv_rows[0])[:3] == ["case", "label", "name"]
    liver = [row for row in table if row["case"] == clean[0] and row["name"] == "liver"]
    assert len(liver) == 1 and liver[0]["volume_ml"] > 50 and liver[0]["components"] == 1
    assert "fault_corrupt" not in {row["case"] for row in table}


def test_report_is_self_contained_and_shows_flags_and_failures(fault_cohort):
    result, _, faults = fault_cohort
    text = (result.outdir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text and not re.search(r"(src|href)=['\"](?!data:)", text)
    assert text.count("data:image/png;base64,") >= len(faults) + 1  # flagged thumbnails + volume plot
    for case in faults.values():
        assert case in text
    assert "damaged or incomplete" in text


def test_report_rebuild_keeps_reviews_and_applies_new_thresholds(fault_cohort, tmp_path, capsys):
    import shutil

    result, clean, faults = fault_cohort
    outdir = tmp_path / "out"
    shutil.copytree(result.outdir, outdir)
    rows = read_csv(outdir / "qc.csv")
    for row in rows:
        if row["case"] == faults["volume"]:
            row["reviewed"] = "ok, real hepatomegaly"
    import csv

    with open(outdir / "qc.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    flagged = sum(row["flagged"] == "true" for row in rows)
    assert main(["cohort", "report", str(outdir)]) == 0
    rebuilt = {row["case"]: row for row in read_csv(outdir / "qc.csv")}
    assert rebuilt[faults["volume"]]["reviewed"] == "ok, real hepatomegaly"
    report = (outdir / "report.html").read_text()
    assert "reviewed: ok, real hepatomegaly" in report and f"{flagged} ({flagged - 1} not reviewed yet)" in report
    assert main(["cohort", "report", str(outdir), "--qc", "volume_ratio=5"]) == 0
    rebuilt = {row["case"]: row for row in read_csv(outdir / "qc.csv")}
    assert rebuilt[faults["volume"]]["flagged"] == "false"  # a 2x liver is within a 5x ratio
    assert rebuilt[faults["volume"]]["reviewed"] == "ok, real hepatomegaly"
    assert rebuilt[faults["empty"]]["flagged"] == "true"
    assert main(["cohort", "status", str(outdir)]) == 0
    assert f"{len(rows)} cases: {len(rows) - 1} done, 1 failed" in capsys.readouterr().out


def test_thresholds_are_settable_checked_and_documented():
    thresholds = QcThresholds.from_settings({"min_slices": 4}, ["volume-z=2.5"])
    assert thresholds.min_slices == 4 and thresholds.volume_z == 2.5
    with pytest.raises(InputError, match="unknown"):
        QcThresholds.from_settings(texts=["volume=3"])
    with pytest.raises(InputError, match="give a number"):
        QcThresholds.from_settings(texts=["volume_z=high"])
    text = DOCS.read_text(encoding="utf-8")
    for field in dataclasses.fields(QcThresholds):
        assert f"`{field.name}`" in text, field.name
