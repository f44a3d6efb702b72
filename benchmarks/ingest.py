"""Ingest speed against the floor set by Arrow: ``pyarrow.json.read_json`` merely reading the same file.

Issue target: ``ingest()`` (parse, validate, quarantine, write Parquet) runs at >= 50% of the rows/s
of a bare ``read_json`` on one core. Both are timed in the same process, on the same file, with Arrow
limited to one thread, alternating, and the median of ``--repeats`` runs is reported.

The file is clean synthetic traffic: a small simulated shop (``shoprec.data.synth``) replicated until it has
``--events`` rows; each copy gets its own user and session ids and shifted milliseconds, so no row is a
duplicate of another (a duplicate would be quarantined, and this measures the clean path) and the
values are about as varied as real traffic's. The copies are merged in time order, as a log is written
(``--shuffled`` keeps them one after another: out of time order, so ingest also has to sort).

    .venv/bin/python benchmarks/ingest.py --events 1000000 --repeats 3

writes ``benchmarks/results/ingest.json``. ``ratio`` is from wall-clock medians; ``cpu_ratio`` from the
process CPU time of the same runs, which is steadier on a shared machine (both sides are one thread).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj

from shoprec.data.ingest import READ_SCHEMA, ingest
from shoprec.data.synth import synthesize

RESULT = Path(__file__).parent / "results" / "ingest.json"
START = "2026-10-01"
NOW = datetime(2026, 10, 20, tzinfo=UTC)  # fixed, so no synthetic row is "in the future"


def make_source(root: Path, events: int, compress: bool, in_time_order: bool = True) -> Path:
    """A raw-data folder with catalog.parquet and one events file of ``events`` clean rows.

    ``in_time_order``: the copies are merged by time, as a real log (and synth's output) is written;
    otherwise they follow one another, so the file is out of time order and ingest must sort it.
    """
    seed_dir = root / "seed"
    synthesize(seed_dir, users=2000, items=400, days=14, seed=0, start=START)
    lines = []
    for f in sorted((seed_dir / "events").rglob("*.jsonl.gz")):
        lines.extend(gzip.decompress(f.read_bytes()).splitlines())
    src = root / "source"
    (src / "events" / "dt=all").mkdir(parents=True)
    shutil.copy(seed_dir / "catalog.parquet", src / "catalog.parquet")
    body = b"\n".join(lines) + b"\n"
    copies = -(-events // len(lines))
    rows = b"".join(_copy(body, k) for k in range(copies)).splitlines()[:events]
    if in_time_order:
        rows.sort(key=lambda line: line[7:31])  # {"ts":"2026-10-01T01:36:35.766Z",...: ISO text sorts by time
    data = b"\n".join(rows) + b"\n"
    name = "events.jsonl.gz" if compress else "events.jsonl"
    path = src / "events" / "dt=all" / name
    path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0) if compress else data)
    return src


def _copy(body: bytes, k: int) -> bytes:
    """Copy ``k`` of the seed traffic: its own users and sessions, and milliseconds shifted within the second."""
    if k == 0:
        return body
    body = body.replace(b'"session_id":"s', b'"session_id":"c%04ds' % k).replace(b'"user_id":"u', b'"user_id":"c%04du' % k)
    return _MS.sub(lambda m: b".%03dZ" % ((int(m.group(1)) + 37 * k) % 1000), body)


_MS = re.compile(rb"\.(\d{3})Z")


def time_read(path: Path) -> tuple[float, float, int]:
    t, c = time.perf_counter(), time.process_time()
    table = pj.read_json(
        str(path),
        read_options=pj.ReadOptions(use_threads=False, block_size=1 << 24),
        parse_options=pj.ParseOptions(explicit_schema=READ_SCHEMA),
    )
    return time.perf_counter() - t, time.process_time() - c, table.num_rows


def time_ingest(src: Path, out: Path) -> tuple[float, float, int, int]:
    shutil.rmtree(out, ignore_errors=True)
    t, c = time.perf_counter(), time.process_time()
    report = ingest(str(src), out, now=NOW, progress=False)
    return time.perf_counter() - t, time.process_time() - c, report.accepted, report.quarantined


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--plain", action="store_true", help="uncompressed .jsonl instead of .jsonl.gz")
    p.add_argument("--shuffled", action="store_true", help="copies one after another: a file out of time order")
    p.add_argument("--out", default=str(RESULT))
    args = p.parse_args(argv)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-") as tmp:
        root = Path(tmp)
        src = make_source(root, args.events, compress=not args.plain, in_time_order=not args.shuffled)
        path = next((src / "events").rglob("events.jsonl*"))
        file_bytes = path.stat().st_size
        reads, ingests, read_cpu, ingest_cpu = [], [], [], []
        rows = accepted = quarantined = 0
        for i in range(args.repeats):  # interleaved, each going first every other time: drift hits both alike
            for step in ("read", "ingest") if i % 2 == 0 else ("ingest", "read"):
                if step == "read":
                    s, c, rows = time_read(path)
                    reads.append(s)
                    read_cpu.append(c)
                else:
                    s, c, accepted, quarantined = time_ingest(src, root / "out")
                    ingests.append(s)
                    ingest_cpu.append(c)
    if accepted != rows or quarantined:
        raise SystemExit(f"benchmark file was not clean: read {rows}, accepted {accepted}, quarantined {quarantined}")
    read_s, ingest_s = statistics.median(reads), statistics.median(ingests)
    result = {
        "command": "python benchmarks/ingest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "events": rows,
        "file": path.name,
        "file_bytes": file_bytes,
        "file_in_time_order": not args.shuffled,
        "threads": 1,
        "ingest_rows_per_s": round(rows / ingest_s),
        "pyarrow_read_rows_per_s": round(rows / read_s),
        "ratio": round(read_s / ingest_s, 3),
        "target_ratio": 0.5,
        "ingest_median_s": round(ingest_s, 4),
        "pyarrow_read_median_s": round(read_s, 4),
        "cpu_ratio": round(statistics.median(read_cpu) / statistics.median(ingest_cpu), 3),
        "ingest_cpu_median_s": round(statistics.median(ingest_cpu), 4),
        "pyarrow_read_cpu_median_s": round(statistics.median(read_cpu), 4),
        "repeats": args.repeats,
        "ingest_s": [round(x, 4) for x in ingests],
        "pyarrow_read_s": [round(x, 4) for x in reads],
        "ingest_cpu_s": [round(x, 4) for x in ingest_cpu],
        "pyarrow_read_cpu_s": [round(x, 4) for x in read_cpu],
        "load_average_1m": round(os.getloadavg()[0], 2),
        "pyarrow_version": pa.__version__,
        "python": sys.version.split()[0],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
