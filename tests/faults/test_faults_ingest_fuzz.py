"""Bad input at ingest, generated with hypothesis: 20+ kinds of broken rows and 4 kinds of broken files,
mixed with valid rows.

For every generated shop we know, line by line, what we wrote and what ingest must do with it, and check:
nothing crashes; every line is accepted or quarantined (by source and line number) with a reason that
names its problem; accepted + quarantined == entries read; every valid row is accepted once, with its
timestamp converted to the right UTC instant; a second ingest of the same partitions leaves the same
rows and no duplicates (read back with ``read_events``).

The five bugs this found first (see the regression tests at the end) are fixed; the generator now
produces those inputs too (``null`` lines anywhere, lone surrogate escapes, invalid UTF-8 in an otherwise
clean file, two objects on one line next to blank lines).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shoprec.data.ingest import gzip_lines, ingest, read_events
from shoprec.data.schema import EVENT_TYPES, FIELDS
from tests.faults.conftest import record, small_shop

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
BASE = datetime(2026, 11, 1, tzinfo=timezone.utc)
ACCEPT = None


@dataclass
class Line:
    raw: bytes
    kind: str
    expect: tuple[str, ...] | None  # None: accepted; else the reason must contain all of these
    sid: str | None = None  # session id of a valid row (unique per valid row)
    ts: datetime | None = None  # its UTC instant
    fast_sensitive: bool = False  # a kind only the careful path catches (known bug B1/B4)


@dataclass
class Plan:
    files: dict[str, bytes] = field(default_factory=dict)  # relative path -> file bytes
    lines: dict[str, list[Line]] = field(default_factory=dict)  # relative path -> lines written (intact files)
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)  # cut gzip file -> (complete lines, line of the cut)
    written: int = 0  # lines written, including those lost behind a gzip cut
    broken_files: dict[str, str] = field(default_factory=dict)  # path -> reason expected at line 0/n+1
    valid: list[Line] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:  # the files themselves can be megabytes
        return f"Plan(files={ {k: len(v) for k, v in self.files.items()} }, kinds={self.kinds})"

    def count(self, kind: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


def _fmt_ts(t: datetime, style: str) -> str:
    if style == "Z":
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if style == "naive":  # no zone: ingest reads it as UTC
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"
    if style == "offset":  # same instant written in another zone
        return t.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(timespec="milliseconds")
    if style == "plus0":
        return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    raise AssertionError(style)


def _dumps(row: dict) -> bytes:
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()


@st.composite
def valid_row(draw, n: int) -> tuple[dict, datetime]:
    """A valid event; ``n`` makes its session id (and so the row) unique."""
    t = BASE + timedelta(days=draw(st.integers(0, 3)), seconds=draw(st.integers(0, 86399)),
                         milliseconds=draw(st.integers(0, 999)))
    style = draw(st.sampled_from(["Z", "Z", "naive", "offset", "plus0"]))
    if style == "plus0":
        t = t.replace(microsecond=0)
    event = draw(st.sampled_from(EVENT_TYPES))
    row = {"ts": _fmt_ts(t, style), "user_id": f"u{draw(st.integers(0, 50))}", "session_id": f"s{n:07d}",
           "event": event, "item_id": None if event == "search" else f"p{draw(st.integers(0, 99)):04d}",
           "query": None, "position": None}
    if event == "search" or (event in ("view", "click") and draw(st.booleans())):
        row["query"] = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1,
                                    max_size=20).filter(lambda s: any(c.isalnum() for c in s)))
        if event != "search":
            row["position"] = draw(st.integers(1, 1000))
    if draw(st.integers(0, 9)) == 0:  # optional fields may be left out instead of null
        for k in ("query", "position") if event != "search" else ("position",):
            if row[k] is None:
                del row[k]
    if draw(st.integers(0, 9)) == 0:  # key order does not matter
        row = dict(reversed(list(row.items())))
    return row, t


BROKEN_KINDS = [
    "truncated_json", "wrong_type", "missing_field", "null_required", "unknown_event", "old_timestamp",
    "negative_epoch_ts", "future_timestamp", "bad_ts_text", "huge_string", "bad_utf8", "duplicate",
    "duplicate_other_zone", "extra_field", "old_schema", "empty_line", "non_object", "duplicate_key",
    "position_out_of_range", "missing_item", "missing_query", "empty_id", "deep_nesting", "two_objects",
    "garbage", "null_line", "lone_surrogate",
]


@st.composite
def broken_row(draw, kind: str, n: int, earlier_valid: list[Line]) -> Line:
    row, t = draw(valid_row(n))
    if kind == "truncated_json":
        raw = _dumps(row)
        raw = raw[:draw(st.integers(1, len(raw) - 1))]
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:  # cut inside a multi-byte character: that is found first
            return Line(raw, kind, ("invalid UTF-8",))
        return Line(raw, kind, ("invalid JSON",))
    if kind == "wrong_type":
        name, value = draw(st.sampled_from([
            ("user_id", 17), ("session_id", ["s"]), ("event", {"e": 1}), ("item_id", 3.5), ("query", True),
            ("position", "3"), ("position", 2.5), ("position", True), ("user_id", 1e300)]))
        row[name] = value
        if name == "position":
            row["query"] = row.get("query") or "q"
            row["event"] = "view"
            row["item_id"] = "p1"
            return Line(_dumps(row), kind, ("field position: expected integer",))
        return Line(_dumps(row), kind, (f"field {name}: expected string",))
    if kind == "missing_field":
        name = draw(st.sampled_from(["ts", "user_id", "session_id", "event"]))
        del row[name]
        return Line(_dumps(row), kind, (f"missing field {name}",))
    if kind == "null_required":
        name = draw(st.sampled_from(["ts", "user_id", "session_id", "event"]))
        row[name] = None
        return Line(_dumps(row), kind, (f"missing field {name}",))
    if kind == "unknown_event":
        row["event"] = draw(st.one_of(
            st.sampled_from(["View", "PURCHASE", "refund", "", " view", "click "]),
            st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60)
            .filter(lambda s: s not in EVENT_TYPES)))
        return Line(_dumps(row), kind, ("unknown event",))
    if kind == "old_timestamp":
        old = datetime(draw(st.integers(1, 1999)), draw(st.integers(1, 12)), draw(st.integers(1, 28)),
                       tzinfo=timezone.utc)
        row["ts"] = old.strftime("%Y-%m-%dT%H:%M:%SZ").rjust(20, "0")
        return Line(_dumps(row), kind, ("timestamp before 2000-01-01",))
    if kind == "negative_epoch_ts":
        row["ts"] = draw(st.sampled_from([-1, -1700000000000, 1700000000000, -0.5]))
        return Line(_dumps(row), kind, ("field ts: expected ISO-8601 string",))
    if kind == "future_timestamp":
        future = NOW + timedelta(days=draw(st.integers(2, 2_000_000)))
        row["ts"] = _fmt_ts(future, draw(st.sampled_from(["Z", "naive", "offset"])))
        return Line(_dumps(row), kind, ("timestamp in the future",))
    if kind == "bad_ts_text":
        row["ts"] = draw(st.sampled_from(["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-31T00:00:00Z",
                                          "-0001-01-01T00:00:00Z", "2026-11-01T25:00:00Z", "01/11/2026 08:00"]))
        return Line(_dumps(row), kind, ("field ts: not an ISO-8601 time",))
    if kind == "huge_string":
        name, limit = draw(st.sampled_from([("user_id", 128), ("session_id", 128), ("item_id", 128),
                                            ("query", 512)]))
        size = draw(st.one_of(st.integers(limit + 1, limit + 50), st.sampled_from([10_000, 200_000])))
        row[name] = draw(st.sampled_from(["x", "é", "😀", "ab"])) * size
        row[name] = row[name][:size]
        if name == "item_id" and row["event"] == "search":
            row["event"] = "view"
        if name == "query" and row["event"] not in ("search",):
            row["event"] = "search"
        return Line(_dumps(row), kind, (f"field {name} longer than {limit} characters",))
    if kind == "bad_utf8":
        junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80abc", b"\xf8\x88"]))
        raw = _dumps(row).replace(b'"user_id":"', b'"user_id":"' + junk, 1)
        return Line(raw, kind, ("invalid UTF-8",), fast_sensitive=True)
    if kind in ("duplicate", "duplicate_other_zone") and earlier_valid:
        orig = draw(st.sampled_from(earlier_valid))
        if kind == "duplicate":
            return Line(orig.raw, kind, ("duplicate of an earlier row",))
        d = json.loads(orig.raw)
        d["ts"] = _fmt_ts(orig.ts, "offset")  # same instant, other zone
        return Line(_dumps(d), kind, ("duplicate of an earlier row",))
    if kind in ("duplicate", "duplicate_other_zone", "extra_field"):
        row[draw(st.sampled_from(["price", "TS", "userId", "extra", " ts"]))] = draw(st.sampled_from([1, "x", None]))
        return Line(_dumps(row), "extra_field", ("unexpected field",))
    if kind == "old_schema":  # an older producer: "timestamp" and "type" instead of "ts" and "event"
        row["timestamp"] = row.pop("ts")
        row["type"] = row.pop("event")
        return Line(_dumps(row), kind, ("unexpected field", "'timestamp'"))
    if kind == "empty_line":
        return Line(draw(st.sampled_from([b"", b" ", b"\t", b"   \t ", b"\r"])), kind, ("empty line",))
    if kind == "non_object":
        raw = draw(st.sampled_from([b"[1,2]", b"3", b'"event"', b"true", b"false", b"[]", b"-7.5",
                                    b'[{"ts":"2026-11-01T00:00:00Z"}]']))
        return Line(raw, kind, ("not a JSON object",))
    if kind == "duplicate_key":
        name = draw(st.sampled_from(["user_id", "event", "ts"]))
        raw = _dumps(row)[:-1] + b',"' + name.encode() + b'":' + json.dumps(row[name]).encode() + b"}"
        return Line(raw, kind, ("duplicate key", repr(name)))
    if kind == "position_out_of_range":
        row.update(event="click", item_id="p1", query="q",
                   position=draw(st.sampled_from([0, -1, -(2**40), 1001, 99999, 2**62 + 5, 2**63, 10**30])))
        return Line(_dumps(row), kind, ("position", "out of range"))
    if kind == "missing_item":
        row["event"] = draw(st.sampled_from(["view", "click", "add_to_cart", "purchase"]))
        row["item_id"] = draw(st.sampled_from([None, "", "  "]))
        return Line(_dumps(row), kind, (f"missing item_id for event {row['event']}",))
    if kind == "missing_query":
        row.update(event="search", item_id=None, query=draw(st.sampled_from([None, "", " \t"])))
        return Line(_dumps(row), kind, ("missing query for event search",))
    if kind == "empty_id":
        name = draw(st.sampled_from(["user_id", "session_id"]))
        row[name] = draw(st.sampled_from(["", " ", "\t\n"]))
        return Line(_dumps(row), kind, (f"empty {name}",))
    if kind == "deep_nesting":
        depth = draw(st.sampled_from([50, 3000, 100_000]))
        return Line(draw(st.sampled_from([b"[", b'{"a":'])) * depth, kind, ("invalid JSON",))
    if kind == "two_objects":
        other, _ = draw(valid_row(n + 5_000_000))
        return Line(_dumps(row) + b" " + _dumps(other), kind, ("invalid JSON",), fast_sensitive=True)
    if kind == "null_line":
        return Line(b"null", kind, ("not a JSON object",))
    if kind == "lone_surrogate":
        name = draw(st.sampled_from(["user_id", "query", "event"]))
        row[name] = "x"
        esc = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83d"]))
        raw = _dumps(row).replace(f'"{name}":"x"'.encode(), f'"{name}":"x'.encode() + esc + b'"')
        return Line(raw, kind, (f"field {name}", "surrogate"))
    if kind == "garbage":
        junk = draw(st.binary(min_size=0, max_size=80)).replace(b"\n", b"")
        return Line(b"\x01" + junk, kind, ("",))  # any reason, see _reason_ok
    raise AssertionError(kind)


@st.composite
def shops(draw, max_files: int, max_lines: int) -> Plan:
    plan = Plan()
    n_files = draw(st.integers(1, max_files))
    serial = [draw(st.integers(0, 10**6)) * 1000]  # unique session ids within one example

    def next_n():
        serial[0] += 1
        return serial[0]

    for fi in range(n_files):
        mode = draw(st.sampled_from(["gz"] * 5 + ["plain", "empty", "gz_cut", "not_gzip"]))
        day = f"2026-11-{fi + 1:02d}"
        path = f"events/dt={day}/events-{fi}.jsonl" + ("" if mode == "plain" else ".gz")
        if mode == "empty":
            plan.files[path] = draw(st.sampled_from([b"", gzip.compress(b"", mtime=0)]))
            plan.lines[path] = []
            plan.count("empty_file")
            continue
        if mode == "not_gzip":
            plan.files[path] = b"this is not gzip\n" + draw(st.binary(max_size=64))
            plan.broken_files[path] = "not a readable gzip file"
            plan.count("not_gzip_file")
            continue
        n_lines = draw(st.integers(1, max_lines))
        lines: list[Line] = []
        for _ in range(n_lines):
            n = next_n()
            if mode == "gz_cut" or draw(st.integers(0, 99)) < 45:
                row, t = draw(valid_row(n))
                line = Line(_dumps(row), "valid", ACCEPT, sid=row["session_id"], ts=t)
                if mode != "gz_cut":
                    plan.valid.append(line)
            else:
                kind = draw(st.sampled_from(BROKEN_KINDS))
                line = draw(broken_row(kind, n, plan.valid))
            lines.append(line)
        for x in lines:
            plan.count(x.kind)
        plan.written += len(lines)
        data = b"".join(x.raw + b"\n" for x in lines)
        if mode == "plain":
            plan.files[path] = data
            plan.lines[path] = lines
        elif mode == "gz":
            plan.files[path] = gzip.compress(data, mtime=0)
            plan.lines[path] = lines
        else:  # gzip cut short: the complete lines before the cut must still be read
            whole = gzip.compress(data, mtime=0)
            cut = whole[:draw(st.integers(1, len(whole) - 1))]  # 0 bytes would be an empty file
            readable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
            complete = readable.count(b"\n")
            plan.files[path] = cut
            plan.cut[path] = (complete, complete + 1 if readable else 0)
            plan.lines[path] = lines[:complete]
            plan.valid.extend(lines[:complete])
            plan.count("gzip_cut_short")
    return plan


def _reason_ok(line: Line, reason: str) -> bool:
    if line.kind == "garbage":
        return reason.startswith(("invalid UTF-8", "invalid JSON", "not a JSON object", "empty line"))
    return all(part in reason for part in line.expect)


class Totals:
    def __init__(self):
        self.examples = self.lines_written = self.entries = self.accepted = self.quarantined = 0
        self.lost_behind_gzip_cut = self.reruns = 0
        self.kinds: dict[str, int] = {}
        self.seconds = 0.0


def check_shop(plan: Plan, catalog: Path, totals: Totals) -> None:
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        t0 = time.perf_counter()
        shutil.copy(catalog, root / "catalog.parquet")
        for rel, data in plan.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        out = root / "out"
        report = ingest(str(root), out, max_quarantine_fraction=1.0, now=NOW, progress=False)

        # the ledger: every entry read is accepted or quarantined
        expected_entries = sum(len(v) for k, v in plan.lines.items() if k not in plan.cut)
        expected_entries += sum(n + 1 for n, _ in plan.cut.values()) + len(plan.broken_files)
        assert report.rows_in == expected_entries
        assert report.accepted + report.quarantined == report.rows_in
        quarantine = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().split("\n") if x]  # not splitlines: U+0085 etc. are raw
        assert len(quarantine) == report.quarantined
        by_pos = {}
        for q in quarantine:
            key = (Path(q["source"]).relative_to(root).as_posix(), q["line"])
            assert key not in by_pos, f"line quarantined twice: {key}"
            by_pos[key] = q["reason"]

        # each broken line is quarantined, at its own line number, with a reason naming its problem
        for rel, lines in plan.lines.items():
            for i, line in enumerate(lines, start=1):
                if line.expect is ACCEPT:
                    assert (rel, i) not in by_pos, f"valid line {rel}:{i} quarantined: {by_pos[(rel, i)]}"
                else:
                    assert (rel, i) in by_pos, f"{line.kind} line {rel}:{i} not quarantined: {line.raw[:200]!r}"
                    assert _reason_ok(line, by_pos[(rel, i)]), (line.kind, by_pos[(rel, i)], line.raw[:200])
        for rel, (_, at) in plan.cut.items():
            assert by_pos[(rel, at)] == "gzip stream cut short"
        for rel, why in plan.broken_files.items():
            assert by_pos[(rel, 0)].startswith(why)

        # every valid row is accepted exactly once, at the right UTC instant
        events = read_events(out)
        assert events.num_rows == report.accepted == len(plan.valid)
        sids = events["session_id"].to_pylist()
        assert sorted(sids) == sorted(x.sid for x in plan.valid)
        want = {x.sid: x.ts.replace(microsecond=x.ts.microsecond // 1000 * 1000) for x in plan.valid}
        for sid, ts in zip(sids, events["ts"].to_pylist()):
            assert ts == want[sid]
        # each accepted row is its valid line, every field as written, once (an empty shop gives an empty table)
        rows = {r[FIELDS.index("session_id")]: r for r in zip(*[events[f].to_pylist() for f in FIELDS])}
        assert len(rows) == events.num_rows
        assert rows == {x.sid: tuple(want[x.sid] if f == "ts" else json.loads(x.raw).get(f) for f in FIELDS)
                        for x in plan.valid}

        # re-running the same partitions replaces the output: same rows, no duplicates
        report2 = ingest(str(root), out, max_quarantine_fraction=1.0, now=NOW, progress=False)
        again = read_events(out)
        assert report2.to_dict() == report.to_dict()
        assert again.num_rows == events.num_rows
        assert sorted(again["session_id"].to_pylist()) == sorted(sids)
        assert pc.count_distinct(again["session_id"]).as_py() == again.num_rows
        totals.reruns += 1

        totals.examples += 1
        totals.lines_written += plan.written
        totals.lost_behind_gzip_cut += plan.written - sum(len(v) for v in plan.lines.values())
        totals.entries += report.rows_in
        totals.accepted += report.accepted
        totals.quarantined += report.quarantined
        for k, v in plan.kinds.items():
            totals.kinds[k] = totals.kinds.get(k, 0) + v
        totals.seconds += time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-shop")
    small_shop(root, users=5, items=60, days=1)
    return root / "catalog.parquet"


def _run(catalog: Path, examples: int, max_files: int, max_lines: int, name: str, min_lines: int) -> Totals:
    totals = Totals()
    t0 = time.perf_counter()

    # Shrinking these shops can take many minutes; set SHOPREC_FUZZ_SHRINK=1 to get a minimal example.
    phases = list(Phase) if os.environ.get("SHOPREC_FUZZ_SHRINK") else [Phase.explicit, Phase.reuse, Phase.generate]

    @settings(max_examples=examples, deadline=None, database=None, phases=phases,
              suppress_health_check=list(HealthCheck))
    @given(plan=shops(max_files=max_files, max_lines=max_lines))
    def prop(plan):
        check_shop(plan, catalog, totals)

    prop()
    kinds_broken = {k for k in totals.kinds if k != "valid"}
    record(name, faults_injected=sum(v for k, v in totals.kinds.items() if k != "valid"),
           fault_kinds=len(kinds_broken), kinds=dict(sorted(totals.kinds.items())),
           examples=totals.examples, lines_written=totals.lines_written, entries_read=totals.entries,
           accepted=totals.accepted, quarantined=totals.quarantined, reruns=totals.reruns,
           lost=totals.entries - totals.accepted - totals.quarantined,
           unreadable_behind_gzip_cut=totals.lost_behind_gzip_cut,
           note="lost = entries read but neither accepted nor quarantined; lines behind a gzip cut cannot be "
                "read and are accounted as one 'gzip stream cut short' entry per file",
           seconds=round(time.perf_counter() - t0, 1))
    assert totals.lines_written >= min_lines, totals.lines_written
    return totals


def test_broken_rows_small(catalog):
    """Fast variant for the default suite: a few shops, every kind of fault possible."""
    _run(catalog, examples=8, max_files=3, max_lines=30, name="ingest_fuzz_small", min_lines=50)


@pytest.mark.faults
def test_broken_rows_large(catalog):
    """At least 10,000 lines across the generated shops, at least 15 kinds of broken rows."""
    totals = _run(catalog, examples=150, max_files=4, max_lines=200, name="ingest_fuzz_large", min_lines=10_000)
    assert len({k for k in totals.kinds if k != "valid"}) >= 15


# ---------------------------------------------------------------- regressions: the bugs found first

GOOD = _dumps({"ts": "2026-11-01T08:00:00.000Z", "user_id": "u1", "session_id": "s1", "event": "view",
               "item_id": "p1", "query": None, "position": None})


def _one_file_shop(root: Path, catalog: Path, lines: list[bytes]) -> Path:
    (root / "events/dt=2026-11-01").mkdir(parents=True)
    (root / "events/dt=2026-11-01/events.jsonl.gz").write_bytes(gzip_lines(lines))
    shutil.copy(catalog, root / "catalog.parquet")
    return root


def _quarantine(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "quarantine.jsonl").read_text().split("\n") if x]  # not splitlines: U+0085 etc. are raw


def test_bug_invalid_utf8_in_otherwise_clean_file(tmp_path, catalog):
    root = _one_file_shop(tmp_path, catalog, [GOOD, GOOD.replace(b'"u1"', b'"u\xff"')])
    report = ingest(str(root), tmp_path / "out", max_quarantine_fraction=1.0, now=NOW, progress=False)
    assert (report.accepted, report.quarantined) == (1, 1)
    assert _quarantine(tmp_path / "out")[0]["reason"].startswith("invalid UTF-8")


def test_bug_lone_surrogate_escape(tmp_path, catalog):
    root = _one_file_shop(tmp_path, catalog, [GOOD, GOOD.replace(b'"u1"', b'"u\\ud800"')])
    report = ingest(str(root), tmp_path / "out", max_quarantine_fraction=1.0, now=NOW, progress=False)
    assert (report.accepted, report.quarantined) == (1, 1)


def test_bug_null_first_line_does_not_crash_the_process(tmp_path, catalog):
    root = _one_file_shop(tmp_path, catalog, [b"null", GOOD])
    code = ("import sys; from datetime import datetime, timezone; from shoprec.data.ingest import ingest; "
            "r = ingest(sys.argv[1], sys.argv[2], max_quarantine_fraction=1.0, progress=False, "
            "now=datetime(2026, 12, 1, tzinfo=timezone.utc)); print(r.accepted, r.quarantined)")
    proc = subprocess.run([sys.executable, "-c", code, str(root), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"ingest died with {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.split() == ["1", "1"]


def test_bug_null_line_reason(tmp_path, catalog):
    root = _one_file_shop(tmp_path, catalog, [GOOD, b"null"])
    ingest(str(root), tmp_path / "out", max_quarantine_fraction=1.0, now=NOW, progress=False)
    assert _quarantine(tmp_path / "out")[0]["reason"].startswith("not a JSON object")


def test_bug_two_objects_on_one_line_plus_blank_line(tmp_path, catalog):
    other = GOOD.replace(b'"s1"', b'"s2"')
    root = _one_file_shop(tmp_path, catalog, [GOOD, b"", other + b" " + other.replace(b'"s2"', b'"s3"')])
    report = ingest(str(root), tmp_path / "out", max_quarantine_fraction=1.0, now=NOW, progress=False)
    reasons = sorted(q["reason"].split(":")[0] for q in _quarantine(tmp_path / "out"))
    assert (report.accepted, report.quarantined) == (1, 2)
    assert reasons == ["empty line", "invalid JSON"]
