"""Ingest raw event logs: validate every row, keep the good ones as Parquet, quarantine the rest.

Nothing is lost: every line read is either accepted (written to ``events/dt=DAY/part-*.parquet``)
or quarantined with its reason (``quarantine.jsonl``), and ``rows_in == accepted + quarantined``.

Two paths lead to the same typed table:

- fast: ``pyarrow.json.read_json`` with the explicit schema parses a whole clean file in C++;
- careful: when Arrow rejects the file (bad JSON, wrong types, extra fields, bad UTF-8, blank lines),
  each line is parsed in Python and the broken ones are quarantined with a precise reason.

The semantic rules (required fields, known event types, timestamps in range, duplicates, ...) then run
vectorised with ``pyarrow.compute`` on the typed table, whichever path produced it.
Output files are named after their source file, so re-running a partition replaces its output
instead of duplicating it, and each file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from shoprec import storage
from shoprec.schema import EVENT_TYPES, EVENTS_SCHEMA, FIELDS, MAX_ID_LEN, MAX_POSITION, MAX_QUERY_LEN, partition_name

log = logging.getLogger(__name__)

MIN_TS = datetime(2000, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)
# Arrow parses position as int64; the stored schema narrows it after range checks.
_READ_SCHEMA = pa.schema([pa.field(f.name, pa.int64() if f.name == "position" else f.type) for f in EVENTS_SCHEMA])
_STRING_FIELDS = ("user_id", "session_id", "event", "item_id", "query")
_REQUIRED = ("ts", "user_id", "session_id", "event")


class IngestError(RuntimeError):
    """The step must fail: too much was quarantined, or the input could not be read at all."""


@dataclass
class IngestReport:
    rows_in: int = 0
    accepted: int = 0
    quarantined: int = 0
    files: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)  # day -> accepted rows written
    catalog_items: int = 0
    catalog_quarantined: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- reading one file

def decompress(data: bytes, source: str) -> tuple[bytes, str | None]:
    """Bytes of the file's text, and a problem to quarantine if the gzip stream was damaged."""
    if not source.endswith(".gz"):
        return data, None
    if not data:
        return b"", None
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = d.decompress(data)
    except zlib.error as e:
        return b"", f"not a readable gzip file ({e})"
    if not d.eof:
        return text, "gzip stream cut short"
    return text, None


def _reason_for_line(raw: bytes) -> tuple[str | None, dict | None]:
    """Parse one line the careful way; a reason if it is broken, else the row as a dict."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"invalid UTF-8 at byte {e.start}", None
    if not text.strip():
        return "empty line", None
    dup_keys: list[str] = []

    def pairs(kv):
        seen = set()
        for k, _ in kv:
            if k in seen:
                dup_keys.append(k)
            seen.add(k)
        return dict(kv)

    try:
        row = json.loads(text, object_pairs_hook=pairs)
    except (json.JSONDecodeError, RecursionError) as e:
        return f"invalid JSON: {getattr(e, 'msg', e)}", None
    if not isinstance(row, dict):
        return f"not a JSON object (got {type(row).__name__})", None
    if dup_keys:
        return f"duplicate key {dup_keys[0]!r}", None
    extra = sorted(set(row) - set(FIELDS))
    if extra:
        return f"unexpected field(s): {', '.join(map(repr, extra[:5]))}", None
    for name in _STRING_FIELDS:
        v = row.get(name)
        if v is not None and not isinstance(v, str):
            return f"field {name}: expected string, got {type(v).__name__}", None
    pos = row.get("position")
    if pos is not None and (isinstance(pos, bool) or not isinstance(pos, int)):
        return f"field position: expected integer, got {type(pos).__name__}", None
    if pos is not None and not -(2**62) < pos < 2**62:
        return "field position: integer out of range", None
    ts = row.get("ts")
    if ts is not None:
        if not isinstance(ts, str):
            return f"field ts: expected ISO-8601 string, got {type(ts).__name__}", None
        try:
            t = datetime.fromisoformat(ts)
        except ValueError:
            return f"field ts: not an ISO-8601 time: {ts[:40]!r}", None
        row["ts"] = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return None, row


def parse_file(text: bytes, source: str) -> tuple[pa.Table, list[dict]]:
    """Typed rows of one file (with ``_source``/``_line`` columns) and the lines broken at parse level."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    n = len(lines)
    if n == 0:
        return _with_position(pa.Table.from_pylist([], schema=_READ_SCHEMA), source, []), []
    try:
        table = pj.read_json(
            io.BytesIO(text),
            read_options=pj.ReadOptions(use_threads=False, block_size=1 << 24),
            parse_options=pj.ParseOptions(explicit_schema=_READ_SCHEMA, unexpected_field_behavior="error"),
        )
        if table.num_rows == n:  # Arrow skips blank lines; then line numbers would not match
            return _with_position(table.select(list(FIELDS)), source, range(1, n + 1)), []
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    rows, line_nos, bad = [], [], []
    for i, raw in enumerate(lines, start=1):
        reason, row = _reason_for_line(raw)
        if reason:
            bad.append({"source": source, "line": i, "reason": reason, "raw": raw.decode("utf-8", "replace")[:2000]})
        else:
            rows.append(row)
            line_nos.append(i)
    table = pa.Table.from_pylist(rows, schema=_READ_SCHEMA) if rows else pa.Table.from_pylist([], schema=_READ_SCHEMA)
    return _with_position(table, source, line_nos), bad


def _with_position(table: pa.Table, source: str, line_nos) -> pa.Table:
    table = table.append_column("_source", pa.array([source] * table.num_rows, pa.string()))
    return table.append_column("_line", pa.array(list(line_nos), pa.int64()))


# ---------------------------------------------------------------- semantic rules, vectorised

def validate(table: pa.Table, now: datetime | None = None) -> pa.Array:
    """One reason per row (null where the row is good); the first rule a row breaks wins."""
    now = now or datetime.now(timezone.utc)
    n = table.num_rows
    reason = pa.nulls(n, pa.string())

    def rule(mask, message):
        nonlocal reason
        mask = pc.fill_null(mask, False)
        reason = pc.if_else(pc.and_kleene(pc.is_null(reason), mask), message, reason)

    for name in _REQUIRED:
        rule(pc.is_null(table[name]), f"missing field {name}")
    event = table["event"]
    rule(pc.invert(pc.is_in(event, value_set=pa.array(EVENT_TYPES))),
         pc.binary_join_element_wise("unknown event '", pc.utf8_slice_codeunits(event, 0, 40), "'", ""))
    for name in ("user_id", "session_id"):
        rule(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table[name])), 0), f"empty {name}")
        rule(pc.greater(pc.utf8_length(table[name]), MAX_ID_LEN), f"field {name} longer than {MAX_ID_LEN} characters")
    rule(pc.greater(pc.utf8_length(table["item_id"]), MAX_ID_LEN), f"field item_id longer than {MAX_ID_LEN} characters")
    rule(pc.greater(pc.utf8_length(table["query"]), MAX_QUERY_LEN), f"field query longer than {MAX_QUERY_LEN} characters")
    is_search = pc.equal(event, "search")
    no_item = pc.or_kleene(pc.is_null(table["item_id"]), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table["item_id"])), 0))
    rule(pc.and_kleene(pc.invert(is_search), no_item),
         pc.binary_join_element_wise("missing item_id for event ", event, ""))
    no_query = pc.or_kleene(pc.is_null(table["query"]), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(table["query"])), 0))
    rule(pc.and_kleene(is_search, no_query), "missing query for event search")
    pos = table["position"]
    rule(pc.or_kleene(pc.less(pos, 1), pc.greater(pos, MAX_POSITION)), f"position out of range 1..{MAX_POSITION}")
    ts = table["ts"]
    rule(pc.less(ts, pa.scalar(MIN_TS, pa.timestamp("ms", tz="UTC"))), f"timestamp before {MIN_TS.date()}")
    rule(pc.greater(ts, pa.scalar(now + FUTURE_SLACK, pa.timestamp("ms", tz="UTC"))), "timestamp in the future")
    rule(_is_duplicate(table), "duplicate of an earlier row")
    return reason


def _is_duplicate(table: pa.Table) -> pa.Array:
    if table.num_rows == 0:
        return pa.array([], pa.bool_())
    keyed = table.select(list(FIELDS)).append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    first = keyed.group_by(list(FIELDS), use_threads=False).aggregate([("_i", "min")])["_i_min"]
    return pc.invert(pc.is_in(keyed["_i"], value_set=first))


# ---------------------------------------------------------------- the step

def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _part_name(source: str) -> str:
    return f"part-{hashlib.sha1(source.encode()).hexdigest()[:12]}.parquet"


def ingest(source: str, out: str | Path, max_quarantine_fraction: float = 0.05,
           now: datetime | None = None, progress: bool = True, partition: str | None = None) -> IngestReport:
    """Validate every raw event under ``source`` (folder or s3://) and write the result to ``out``.

    ``partition`` (a day, as in ``events/dt=DAY/``) restricts it to that day's files: the fan-out
    runs one such task per day.
    """
    out = Path(out)
    files = storage.list_event_files(source)
    if partition:
        files = [f for f in files if storage.partition_of(f) == partition]
    if not files:
        raise IngestError(f"no raw event files (*.jsonl.gz) under {storage.join(source, 'events')}")
    report = IngestReport(files=len(files))
    tables, quarantine = [], []
    for i, f in enumerate(tqdm(files, desc="ingest: parse", unit="file", disable=not progress)):
        text, problem = decompress(storage.read_bytes(f), f)
        if problem and not text:
            quarantine.append({"source": f, "line": 0, "reason": problem, "raw": ""})
            continue
        if problem:  # keep every complete line; the cut-off tail is quarantined
            text, _, tail = text.rpartition(b"\n")
            text += b"\n" if text else b""
            quarantine.append({"source": f, "line": text.count(b"\n") + 1, "reason": problem,
                               "raw": tail.decode("utf-8", "replace")[:2000]})
        table, bad = parse_file(text, f)
        tables.append(table)
        quarantine.extend(bad)
    table = pa.concat_tables(tables) if tables else _with_position(pa.Table.from_pylist([], schema=_READ_SCHEMA), "", [])
    parse_rejected = len(quarantine)
    reason = validate(table, now=now)
    bad_mask = pc.is_valid(reason)
    if pc.any(bad_mask).as_py():
        bad_rows = table.filter(bad_mask)
        for row, why in zip(bad_rows.to_pylist(), reason.filter(bad_mask).to_pylist()):
            src, line = row.pop("_source"), row.pop("_line")
            quarantine.append({"source": src, "line": line, "reason": why, "raw": json.dumps(row, default=str)})
    good = table.filter(pc.invert(bad_mask))

    report.rows_in = table.num_rows + parse_rejected
    report.quarantined = len(quarantine)
    report.accepted = good.num_rows
    report.reasons = dict(Counter(q["reason"].split(":")[0] if q["reason"].startswith("invalid JSON") else q["reason"]
                                  for q in quarantine).most_common())
    _write_quarantine(quarantine, out / "quarantine.jsonl")
    fraction = report.quarantined / max(report.rows_in, 1)
    if fraction > max_quarantine_fraction:
        top = ", ".join(f"{k} ({v})" for k, v in list(report.reasons.items())[:3])
        raise IngestError(
            f"quarantined {report.quarantined} of {report.rows_in} rows ({fraction:.1%}), more than the allowed "
            f"{max_quarantine_fraction:.1%}; top reasons: {top}; see {out / 'quarantine.jsonl'}")

    good = good.set_column(good.schema.get_field_index("position"), "position", pc.cast(good["position"], pa.int32()))
    day = pc.strftime(good["ts"], format="%Y-%m-%d")
    good = good.append_column("_day", day)
    for src in tqdm(sorted(set(good["_source"].to_pylist())), desc="ingest: write", unit="file", disable=not progress):
        part = good.filter(pc.equal(good["_source"], src))
        for d in sorted(set(part["_day"].to_pylist())):
            rows = part.filter(pc.equal(part["_day"], d)).select(list(FIELDS)).cast(EVENTS_SCHEMA)
            _write_atomic(rows.sort_by("ts"), out / "events" / partition_name(d) / _part_name(src))
            report.partitions[d] = report.partitions.get(d, 0) + rows.num_rows
    report.catalog_items, report.catalog_quarantined = ingest_catalog(source, out)
    (out / "ingest.json").write_text(json.dumps(report.to_dict(), indent=2))
    log.info("ingest: %d rows in, %d accepted, %d quarantined, %d partitions",
             report.rows_in, report.accepted, report.quarantined, len(report.partitions))
    assert report.rows_in == report.accepted + report.quarantined
    return report


def _write_quarantine(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for q in rows:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def ingest_catalog(source: str, out: Path) -> tuple[int, int]:
    """Copy the product catalog, dropping rows without an id or title and repeated ids."""
    uri = storage.join(source, "catalog.parquet")
    try:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    except (FileNotFoundError, storage.StorageError) as e:
        raise IngestError(f"no product catalog at {uri}: {e}") from e
    missing = [c for c in ("item_id", "title") if c not in table.column_names]
    if missing:
        raise IngestError(f"catalog {uri} lacks column(s) {missing}")
    ok = pc.and_kleene(pc.is_valid(table["item_id"]), pc.fill_null(pc.greater(pc.utf8_length(table["title"]), 0), False))
    kept = table.filter(ok)
    ids = kept["item_id"].to_pylist()
    first = {}
    for i, x in enumerate(ids):
        first.setdefault(x, i)
    kept = kept.take(sorted(first.values()))
    _write_atomic(kept, out / "catalog.parquet")
    return kept.num_rows, table.num_rows - kept.num_rows


def read_events(folder: str | Path) -> pa.Table:
    """All accepted events written by :func:`ingest` under ``folder/events``."""
    files = sorted(Path(folder, "events").rglob("*.parquet"))
    if not files:
        return EVENTS_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(f, schema=EVENTS_SCHEMA) for f in files)


def gzip_lines(lines: list[bytes]) -> bytes:
    """Test and importer helper: gzip raw lines (mtime 0, so output is reproducible)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return buf.getvalue()
