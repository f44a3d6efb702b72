"""Ingest raw event logs: validate every row, keep the good ones as Parquet, quarantine the rest.

Nothing is lost: every line read is either accepted (written to ``events/dt=DAY/part-*.parquet``)
or quarantined with its reason (``quarantine.jsonl``), and ``rows_in == accepted + quarantined``.

Two paths lead to the same typed table:

- fast: ``pyarrow.json.read_json`` with the explicit schema parses a whole clean file in C++ (a gzip
  file is inflated piece by piece as Arrow reads it, never held whole);
- careful: when Arrow rejects the file (bad JSON, wrong types, extra fields, bad UTF-8, blank lines,
  a damaged gzip stream), each line is parsed in Python and the broken ones are quarantined with a
  precise reason.

The semantic rules (required fields, known event types, timestamps in range, duplicates, ...) then run
vectorised with ``pyarrow.compute`` on the typed table, whichever path produced it. The clean path makes
no Python object per row: that keeps ingest above half the speed of Arrow merely reading the file
(``benchmarks/ingest.py``).
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from shoprec.data import storage
from shoprec.data.schema import (
    EVENT_TYPES,
    EVENTS_SCHEMA,
    FIELDS,
    MAX_ID_LEN,
    MAX_POSITION,
    MAX_QUERY_LEN,
    partition_name,
)

log = logging.getLogger(__name__)

MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
# Arrow parses position as int64; the stored schema narrows it after range checks.
READ_SCHEMA = pa.schema([pa.field(f.name, pa.int64() if f.name == "position" else f.type) for f in EVENTS_SCHEMA])
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
    """Bytes of the file's text, and a problem to quarantine if the gzip stream was damaged.

    Concatenated gzip members (``cat a.gz b.gz``) are read one after the other, as ``gzip`` reads them,
    and zero padding after the last member is ignored; anything else after it is a problem.
    """
    if not source.endswith(".gz"):
        return data, None
    if not data:
        return b"", None
    parts, rest = [], data
    while rest:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            parts.append(d.decompress(rest))
        except zlib.error as e:
            return b"".join(parts), f"not a readable gzip file ({e})"
        if not d.eof:
            return b"".join(parts), "gzip stream cut short"
        rest = d.unused_data.lstrip(b"\0")
    return b"".join(parts), None


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
    for name in (*_STRING_FIELDS, "ts"):
        v = row.get(name)
        if isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # a JSON escape of a lone surrogate, e.g. "\ud800"
                return f"field {name}: invalid Unicode (lone surrogate)", None
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
        row["ts"] = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return None, row


def _objects_only(text: bytes, at_line_start: bool = True) -> bool:
    """Every line in ``text`` starts with ``{`` (C-speed counts, no split): blank lines, ``null``,
    arrays and leading spaces all send the file down the careful path."""
    starts = text.count(b"\n") - (1 if text.endswith(b"\n") else 0)
    if at_line_start:
        if not text.startswith(b"{"):
            return False
    return text.count(b"\n{") == starts


def arrow_owned(data: bytes) -> pa.Buffer:
    """A copy of ``data`` in memory Arrow allocated.

    Arrow may drop its last reference to a buffer on one of its own threads, later. For a buffer that
    wraps a Python object that needs the GIL, and during interpreter shutdown Python kills any thread
    that asks for the GIL, which aborts the whole process ("terminate called without an active
    exception", apache/arrow#50482): ingest died so about one run in five, after its work was done.
    """
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


def _valid_utf8(table: pa.Table) -> bool:
    """Arrow's JSON reader lets invalid UTF-8 inside strings through; full validation catches it."""
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _line_count(text: bytes) -> int:
    """Lines in ``text`` as ``text.split(b"\\n")`` counts them, less a final empty piece."""
    return text.count(b"\n") + (1 if text and not text.endswith(b"\n") else 0)


_READ_OPTIONS = pj.ReadOptions(use_threads=False, block_size=1 << 24)
_PARSE_OPTIONS = pj.ParseOptions(explicit_schema=READ_SCHEMA, unexpected_field_behavior="error")


def _parse(text: bytes, source: str) -> tuple[pa.Table, np.ndarray | None, list[dict]]:
    """Typed rows (the event fields only), their line numbers (None: every line, in order), broken lines.

    Only when Arrow rejects the file are the lines split and parsed one by one in Python; the clean
    path counts lines instead of splitting them, so no Python object is made per row.
    """
    n = _line_count(text)
    if n == 0:
        return READ_SCHEMA.empty_table(), np.zeros(0, np.int64), []
    try:
        if _objects_only(text):
            table = pj.read_json(pa.BufferReader(arrow_owned(text)), read_options=_READ_OPTIONS,
                                 parse_options=_PARSE_OPTIONS)
            if table.num_rows == n and _valid_utf8(table):  # one row per line, else line numbers would not match
                return table.select(list(FIELDS)), None, []
    except (pa.ArrowInvalid, UnicodeDecodeError):
        pass
    return _parse_careful(text, source)


def _read_file(data: bytes, source: str) -> tuple[pa.Table, np.ndarray | None, list[dict]]:
    """Rows, line numbers and quarantined lines of one raw file, by the fast path when it is clean.

    Gzip is inflated in memory and Arrow reads a buffer, never a Python file object (Arrow threads
    calling back into Python abort the process at interpreter shutdown, apache/arrow#50482).
    """
    text, problem = decompress(data, source)
    if problem and not text:
        return READ_SCHEMA.empty_table(), np.zeros(0, np.int64), [
            {"source": source, "line": 0, "reason": problem, "raw": ""}]
    quarantine = []
    if problem:  # keep every complete line; the cut-off tail is quarantined
        text, _, tail = text.rpartition(b"\n")
        text += b"\n" if text else b""
        quarantine.append({"source": source, "line": text.count(b"\n") + 1, "reason": problem,
                           "raw": tail.decode("utf-8", "replace")[:2000]})
    table, line_nos, bad = _parse(text, source)
    return table, line_nos, quarantine + bad


def _parse_careful(text: bytes, source: str) -> tuple[pa.Table, np.ndarray, list[dict]]:
    """Every line parsed in Python, each broken one kept with a precise reason."""
    lines = text.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows, line_nos, bad = [], [], []
    for i, raw in enumerate(lines, start=1):
        reason, row = _reason_for_line(raw)
        if reason:
            bad.append({"source": source, "line": i, "reason": reason, "raw": raw.decode("utf-8", "replace")[:2000]})
        else:
            rows.append(row)
            line_nos.append(i)
    table = pa.Table.from_pylist(rows, schema=READ_SCHEMA) if rows else READ_SCHEMA.empty_table()
    return table, np.array(line_nos, np.int64), bad


def _line_numbers(table: pa.Table, line_nos: np.ndarray | None) -> pa.Array:
    return pa.array(np.arange(1, table.num_rows + 1, dtype=np.int64) if line_nos is None else line_nos, pa.int64())


# ---------------------------------------------------------------- semantic rules, vectorised

def validate(table: pa.Table, now: datetime | None = None) -> pa.Array:
    """One reason per row (null where the row is good); the first rule a row breaks wins.

    Cheap tests (byte lengths, no string building) first pick the rows that may break a rule; only
    those go through the rule cascade that writes the messages. Clean data thus costs one pass of
    predicates, and the reasons are the cascade's, whichever rows it runs on.
    """
    now = now or datetime.now(UTC)
    n = table.num_rows
    duplicate = _is_duplicate(table)
    suspect = _flat(pc.or_(_flat(_suspects(table, now)), duplicate))
    if not pc.any(suspect).as_py():
        return pa.nulls(n, pa.string())
    reasons = _flat(_reasons(table.filter(suspect), now, duplicate.filter(suspect)))
    return pc.replace_with_mask(pa.nulls(n, pa.string()), suspect, reasons)


def _flat(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _blank(column) -> pa.Array:
    """Empty or whitespace only; the same rows as ``utf8_trim_whitespace`` leaving nothing."""
    return pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))


def _suspects(table: pa.Table, now: datetime) -> pa.Array:
    """True for every row that some rule of :func:`_reasons` may flag (a superset of them, never fewer)."""
    event, item, query, pos, ts = (table[c] for c in ("event", "item_id", "query", "position", "ts"))
    is_search = pc.equal(event, "search")
    masks = [pc.is_null(table[name]) for name in _REQUIRED]
    masks.append(pc.invert(pc.is_in(event, value_set=pa.array(EVENT_TYPES))))
    for name in ("user_id", "session_id"):
        masks.append(_blank(table[name]))
        masks.append(pc.greater(pc.binary_length(table[name]), MAX_ID_LEN))  # bytes >= characters
    masks.append(pc.greater(pc.binary_length(item), MAX_ID_LEN))
    masks.append(pc.greater(pc.binary_length(query), MAX_QUERY_LEN))
    masks.append(pc.and_kleene(pc.invert(is_search), pc.or_kleene(pc.is_null(item), _blank(item))))
    masks.append(pc.and_kleene(is_search, pc.or_kleene(pc.is_null(query), _blank(query))))
    masks.append(pc.or_kleene(pc.less(pos, 1), pc.greater(pos, MAX_POSITION)))
    masks.append(pc.less(ts, pa.scalar(MIN_TS, pa.timestamp("ms", tz="UTC"))))
    masks.append(pc.greater(ts, pa.scalar(now + FUTURE_SLACK, pa.timestamp("ms", tz="UTC"))))
    out = pc.fill_null(masks[0], False)
    for m in masks[1:]:
        out = pc.or_(out, pc.fill_null(m, False))
    return out


def _reasons(table: pa.Table, now: datetime, duplicate: pa.Array) -> pa.Array:
    """The rule cascade: one reason per row (null where the row is good), the first rule broken wins."""
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
    rule(duplicate, "duplicate of an earlier row")
    return reason


_HASH_MULT = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93], np.uint64)


def _codes(column) -> np.ndarray:
    """A number per row, equal for equal values (nulls included): each value hashed once.

    The chunks of a chunked column share one memo table, so their indices agree without first
    copying the column into one chunk.
    """
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return np.zeros(0, np.int32)
    return np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks])


def _is_duplicate(table: pa.Table) -> pa.Array:
    """True for every row equal in all fields to an earlier row.

    A key of four columns (time, session, item, position) picks the candidates: rows whose key occurs
    more than once (a collision of the mixed key only adds candidates). The exact all-field comparison
    then runs on those rows alone, which for real traffic are few.
    """
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.bool_())
    ts = pc.fill_null(pc.cast(table["ts"], pa.int64()), 0).to_numpy()
    pos = pc.fill_null(table["position"], -1).to_numpy()
    with np.errstate(over="ignore"):
        key = ts.astype(np.uint64) * _HASH_MULT[0]
        key ^= _codes(table["session_id"]).astype(np.uint64) * _HASH_MULT[1]
        key ^= _codes(table["item_id"]).astype(np.uint64) * _HASH_MULT[2]
        key ^= pos.astype(np.uint64) * _HASH_MULT[3]
    ordered = np.sort(key)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    candidates = np.flatnonzero(np.isin(key, repeated)) if repeated.size else np.zeros(0, np.int64)
    duplicate = np.zeros(n, bool)
    if candidates.size:
        keyed = table.select(list(FIELDS)).take(candidates).append_column("_i", pa.array(candidates, pa.int64()))
        first = keyed.group_by(list(FIELDS), use_threads=False).aggregate([("_i", "min")])["_i_min"]
        again = pc.invert(pc.is_in(keyed["_i"], value_set=first)).to_numpy(zero_copy_only=False)
        duplicate[candidates[again]] = True
    return pa.array(duplicate)


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
        table, line_nos, bad = _read_file(storage.read_bytes(f), f)
        quarantine.extend(bad)
        # A file number, not the path: one int per row instead of one string, mapped back for quarantine.
        table = table.append_column("_file", pa.array(np.full(table.num_rows, i, np.int32)))
        tables.append(table.append_column("_line", _line_numbers(table, line_nos)))
    table = pa.concat_tables(tables) if tables else READ_SCHEMA.empty_table().append_column(
        "_file", pa.array([], pa.int32())).append_column("_line", pa.array([], pa.int64()))
    parse_rejected = len(quarantine)
    reason = validate(table, now=now)
    bad_mask = pc.is_valid(reason)
    if pc.any(bad_mask).as_py():
        bad_rows = table.filter(bad_mask)
        for row, why in zip(bad_rows.to_pylist(), reason.filter(bad_mask).to_pylist()):
            src, line = files[row.pop("_file")], row.pop("_line")
            quarantine.append({"source": src, "line": line, "reason": why, "raw": json.dumps(row, default=str)})
        good = table.filter(pc.invert(bad_mask))
    else:
        good = table

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
    for src, d, rows in tqdm(_partitions(good, files), desc="ingest: write", unit="file", disable=not progress):
        _write_atomic(rows, out / "events" / partition_name(d) / _part_name(src))
        report.partitions[d] = report.partitions.get(d, 0) + rows.num_rows
    report.catalog_items, report.catalog_quarantined = ingest_catalog(source, out)
    (out / "ingest.json").write_text(json.dumps(report.to_dict(), indent=2))
    log.info("ingest: %d rows in, %d accepted, %d quarantined, %d partitions",
             report.rows_in, report.accepted, report.quarantined, len(report.partitions))
    assert report.rows_in == report.accepted + report.quarantined
    return report


_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _partitions(good: pa.Table, files: list[str]):
    """(source, day, rows sorted by time) for each source file and UTC day, in that order.

    One stable sort by (file, day, ts), skipped when the rows are already in that order (logs usually
    are), then a slice per output file; the same rows and order as filtering per file and day and
    sorting each by ``ts``.
    """
    if good.num_rows == 0:
        return
    ts = pc.cast(good["ts"], pa.int64()).to_numpy()
    day = ts // _DAY_MS
    first_day = int(day.min())
    span = int(day.max()) - first_day + 1
    group = good["_file"].to_numpy().astype(np.int64) * span + (day - first_day)
    step, tick = np.diff(group), np.diff(ts)
    events = good.select(list(FIELDS))
    if not np.all((step > 0) | ((step == 0) & (tick >= 0))):
        order = np.lexsort((ts, group))  # stable: ties keep their order in the file
        events, group = events.take(order), group[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [len(group)]])
    for a, b in zip(starts[:-1], starts[1:]):
        g = int(group[a])
        d = (_EPOCH + timedelta(days=first_day + g % span)).strftime("%Y-%m-%d")
        yield files[g // span], d, events.slice(a, b - a).cast(EVENTS_SCHEMA)


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
        table = pq.ParquetFile(pa.BufferReader(arrow_owned(storage.read_bytes(uri)))).read()
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
