"""Joining the per-day ingest outputs of the fan-out into one data snapshot.

Each day's ingest task writes its own folder (accepted Parquet, quarantine, ``ingest.json``, catalog);
the merge sums the reports, concatenates the quarantine files and checks the quarantine limit over
all days together, so a little bad data spread across days still fails the run as it would unsplit.
The accepted Parquet stays where each day wrote it: features read it from there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from shoprec.data.ingest import IngestError


def merge_ingest_reports(parts: list[str | Path], out: str | Path, max_quarantine_fraction: float = 0.05) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total = {"rows_in": 0, "accepted": 0, "quarantined": 0, "files": 0, "reasons": {}, "partitions": {}}
    with open(out / "quarantine.jsonl", "w") as q:
        for part in map(Path, parts):
            report = json.loads((part / "ingest.json").read_text())
            for key in ("rows_in", "accepted", "quarantined", "files"):
                total[key] += report[key]
            for reason, n in report["reasons"].items():
                total["reasons"][reason] = total["reasons"].get(reason, 0) + n
            for day, n in report["partitions"].items():
                total["partitions"][day] = total["partitions"].get(day, 0) + n
            if (part / "quarantine.jsonl").exists():
                q.write((part / "quarantine.jsonl").read_text())
    if parts:
        shutil.copy(Path(parts[0]) / "catalog.parquet", out / "catalog.parquet")
    assert total["rows_in"] == total["accepted"] + total["quarantined"]
    (out / "ingest.json").write_text(json.dumps(total, indent=2))
    fraction = total["quarantined"] / max(total["rows_in"], 1)
    if fraction > max_quarantine_fraction:
        raise IngestError(f"quarantined {total['quarantined']} of {total['rows_in']} rows over {len(parts)} days "
                          f"({fraction:.1%}), more than the allowed {max_quarantine_fraction:.1%}; "
                          f"see {out / 'quarantine.jsonl'}")
    return total
