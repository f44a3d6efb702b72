"""The fast path of ingest (Arrow parses a whole file; suspects-only rule cascade; candidate-only duplicate
check; streamed gzip) must decide exactly what the careful path decides.

Each test runs both ways on the same rows and compares: accepted tables, line numbers, quarantine reasons.
"""

import gzip
import json
import random
import shutil
import zlib
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shoprec.data import ingest as ig
from shoprec.data.schema import FIELDS

NOW = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def clean_lines(tmp_path_factory):
    """Simulated traffic (searches, impressions with positions, nulls) plus valid rows of unusual shape."""
    from shoprec.data.synth import synthesize

    root = tmp_path_factory.mktemp("seed")
    synthesize(root, users=40, items=30, days=2, seed=7)
    lines = []
    for f in sorted((root / "events").rglob("*.jsonl.gz")):
        lines += gzip.decompress(f.read_bytes()).splitlines()
    base = {"user_id": "u1", "event": "view", "item_id": "p00001"}
    unusual = [
        {**base, "ts": "2026-11-01T10:00:00+02:00", "session_id": "x1"},     # offset, converted to UTC
        {**base, "ts": "2026-11-01 10:00:00", "session_id": "x2"},           # space, no zone: UTC
        {**base, "ts": "2026-11-01", "session_id": "x3"},                    # date only
        {**base, "ts": "2026-11-01T10:00:00.5Z", "session_id": "x4", "query": "caf\u00e9 \u2615"},
        {"session_id": "x5", "event": "search", "query": "kettle", "ts": "2026-11-01T11:00:00Z", "user_id": "u2"},
        {**base, "ts": "2026-11-01T12:00:00Z", "session_id": "x6", "item_id": "p1", "position": 1000},
    ]
    lines += [json.dumps(r, ensure_ascii=i % 2 == 0).encode() for i, r in enumerate(unusual)]
    lines.append(b'{"ts": "2026-11-01T13:00:00Z", "user_id": "u3", "session_id": "x7", "event": "view", "item_id": "p2"}  ')
    return lines


def test_a_line_with_leading_spaces_is_valid_and_accepted_the_careful_way(clean_lines, tmp_path):
    # Only lines that start with '{' reach Arrow (a first line `null` crashes pyarrow 25's reader).
    spaced = list(clean_lines[:5]) + [b'  ' + clean_lines[5]]
    table, line_nos, bad = ig._parse(b"\n".join(spaced) + b"\n", "f")
    assert bad == [] and table.num_rows == 6 and line_nos is not None


# Broken lines, each with the reason the careful path must give (a prefix of it).
BROKEN = [
    (b'{"ts": "2026-11-01T10:00:00Z", "user_id"', "invalid JSON"),
    (b'{"ts": "2026-11-01T10:00:00Z", "user_id": 5, "session_id": "s", "event": "view", "item_id": "p"}',
     "field user_id: expected string, got int"),
    (b"[1, 2, 3]", "not a JSON object (got list)"),
    (b"", "empty line"),
    (b'{"ts": "2026-11-01T10:00:00Z", "user_id": "u", "session_id": "s", "event": "view", "item_id": "p", "x": 1}',
     "unexpected field(s): 'x'"),
    (b'{"ts": "2026-11-01T10:00:00Z", "user_id": "\xff", "session_id": "s", "event": "view", "item_id": "p"}',
     "invalid UTF-8"),
    (b'{"ts": "yesterday", "user_id": "u", "session_id": "s", "event": "view", "item_id": "p"}',
     "field ts: not an ISO-8601 time"),
    (b'{"ts": "2026-11-01T10:00:00Z", "user_id": "u", "session_id": "s", "event": "view", "item_id": "p", "position": 2.5}',
     "field position: expected integer, got float"),
]


def _shop(root, name, lines, compress=True):
    import pyarrow.parquet as pq

    from shoprec.data.schema import CATALOG_SCHEMA

    folder = root / name / "events" / "dt=2026-11-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["p1"], "title": ["t"], "category": ["c"], "brand": ["b"], "price": [1.0]},
                            schema=CATALOG_SCHEMA), root / name / "catalog.parquet")
    body = b"".join(x + b"\n" for x in lines)
    if compress:
        (folder / "events.jsonl.gz").write_bytes(gzip.compress(body, mtime=0))
    else:
        (folder / "events.jsonl").write_bytes(body)
    return root / name


def test_both_parsers_give_the_same_table_for_clean_rows(clean_lines):
    text = b"\n".join(clean_lines) + b"\n"
    fast, fast_lines, fast_bad = ig._parse(text, "f")
    assert fast_lines is None and fast_bad == []  # it really took the fast path
    careful, careful_lines, careful_bad = ig._parse_careful(text, "f")
    assert careful_bad == []
    assert careful.select(list(FIELDS)).equals(fast), "Arrow and the per-line parser disagree on a clean row"
    assert careful_lines.tolist() == list(range(1, len(clean_lines) + 1))
    from_gzip, gz_lines, gz_bad = ig._read_file(gzip.compress(text), "f.gz")
    assert gz_lines is None and gz_bad == [] and from_gzip.equals(fast)


@pytest.mark.parametrize("compress", [True, False])
def test_a_few_broken_rows_change_nothing_for_the_clean_ones(clean_lines, tmp_path, monkeypatch, compress):
    rng = random.Random(1)
    mixed, broken_at = list(clean_lines), {}
    for raw, _ in BROKEN:
        i = rng.randrange(len(mixed) + 1)
        mixed.insert(i, raw)
    for n, raw in enumerate(mixed, start=1):
        for b, reason in BROKEN:
            if raw is b:
                broken_at[n] = reason

    calls = []
    careful = ig._parse_careful
    monkeypatch.setattr(ig, "_parse_careful", lambda *a: calls.append(a[1]) or careful(*a))
    clean = ig.ingest(str(_shop(tmp_path, "clean", clean_lines, compress)), tmp_path / "out-clean", now=NOW,
                      progress=False)
    assert calls == [] and clean.quarantined == 0 and clean.accepted == len(clean_lines)
    dirty = ig.ingest(str(_shop(tmp_path, "dirty", mixed, compress)), tmp_path / "out-dirty", now=NOW,
                      progress=False, max_quarantine_fraction=0.5)
    assert len(calls) == 1  # the broken file went the careful way

    assert ig.read_events(tmp_path / "out-dirty").equals(ig.read_events(tmp_path / "out-clean"))
    assert dirty.accepted == clean.accepted and dirty.quarantined == len(BROKEN)
    got = [json.loads(x) for x in (tmp_path / "out-dirty" / "quarantine.jsonl").read_text().splitlines()]
    assert {q["line"] for q in got} == set(broken_at)
    for q in got:
        assert q["reason"].startswith(broken_at[q["line"]]), (q, broken_at[q["line"]])


def _semantic_table():
    """Typed rows breaking each semantic rule, some twice, with exact and near duplicates."""
    good = {"ts": datetime(2026, 11, 1, 10, tzinfo=UTC), "user_id": "u1", "session_id": "s1", "event": "view",
            "item_id": "p1", "query": None, "position": None}
    variants = [
        {}, {"ts": None}, {"user_id": None}, {"session_id": None}, {"event": None}, {"event": "teleport"},
        {"user_id": ""}, {"user_id": " \u3000"}, {"session_id": "\t"}, {"user_id": "x" * 129},
        {"user_id": "\u00e9" * 100}, {"user_id": "\u00e9" * 129}, {"session_id": "s" * 200},
        {"item_id": "p" * 129}, {"item_id": "\u00e9" * 128}, {"query": "q" * 513}, {"query": "\u00e9" * 512},
        {"item_id": None}, {"item_id": "  "}, {"event": "search", "item_id": None, "query": None},
        {"event": "search", "item_id": None, "query": " "}, {"event": "search", "item_id": None, "query": "mug"},
        {"position": 0}, {"position": 1001}, {"position": 1000}, {"position": -5},
        {"ts": datetime(1999, 12, 31, tzinfo=UTC)}, {"ts": datetime(2027, 1, 1, tzinfo=UTC)},
        {"event": None, "user_id": None}, {"event": "purchase", "item_id": None},
    ]
    rows = []
    for k, v in enumerate(variants):
        rows.append({**good, "session_id": f"s{k}", **v})
    rows += [dict(r) for r in rows[::3]]  # exact duplicates of earlier rows
    rows += [{**r, "query": "other"} for r in rows[1::4]]  # same key columns, other query: not duplicates
    return pa.Table.from_pylist(rows, schema=ig.READ_SCHEMA)


def test_suspect_shortcut_gives_the_reasons_of_the_full_cascade():
    table = _semantic_table()
    full = ig._reasons(table, NOW, ig._is_duplicate(table)).to_pylist()
    assert ig.validate(table, now=NOW).to_pylist() == full
    assert sum(r is not None for r in full) > 30 and full[0] is None  # the table does test the rules
    assert ig.validate(table.slice(0, 1), now=NOW).to_pylist() == [None]


def _duplicates_the_slow_way(table):
    keyed = table.select(list(FIELDS)).append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    first = keyed.group_by(list(FIELDS), use_threads=False).aggregate([("_i", "min")])["_i_min"]
    return pc.invert(pc.is_in(keyed["_i"], value_set=first)).to_pylist()


def test_duplicate_check_on_candidates_equals_the_full_group_by(monkeypatch):
    table = _semantic_table()
    chunked = pa.concat_tables([table.slice(0, 20), table.slice(20)])  # columns of two chunks
    want = _duplicates_the_slow_way(table)
    assert 5 < sum(want) < table.num_rows
    assert ig._is_duplicate(table).to_pylist() == want
    assert ig._is_duplicate(chunked).to_pylist() == want
    monkeypatch.setattr(ig, "_HASH_MULT", np.zeros(4, np.uint64))  # every row collides: all are candidates
    assert ig._is_duplicate(chunked).to_pylist() == want


def _members(*bodies):
    return b"".join(gzip.compress(b, mtime=0) for b in bodies)


@pytest.mark.parametrize("data", [
    _members(b'{"a": 1}\n{"a": 2}\n'),
    _members(b'{"a": 1}\n', b'{"a": 2}\n', b""),  # concatenated members (cat a.gz b.gz)
    _members(b'{"a": 1}\n', b'{"a": 2}') + b"\0" * 700,  # zero padding, no final newline
    _members(b'{"a": 1}\n' * 5000)[:-9],  # cut short
    _members(b'{"a": 1}\n') + b"garbage",
    b"not gzip at all",
    _members(b"x" * 20000 + b"\n")[:40] + b"\x00\xff" * 30 + _members(b"y")[40:],  # damaged inside
], ids=["one", "members", "padding", "cut", "trailing-garbage", "not-gzip", "damaged"])
def test_gzip_members_padding_and_damage(data, request):
    text, problem = ig.decompress(data, "f.gz")
    damaged = request.node.callspec.id in ("cut", "trailing-garbage", "not-gzip", "damaged")
    assert (problem is not None) == damaged, problem
    if not damaged:
        assert text.startswith(b'{"a": 1}\n') and text.rstrip(b"\n").endswith(b'{"a": 2}')


def test_concatenated_gzip_members_are_all_ingested(tmp_path, clean_lines):
    half = len(clean_lines) // 2
    src = _shop(tmp_path, "members", [])
    target = next((src / "events").rglob("*.gz"))
    target.write_bytes(_members(b"".join(x + b"\n" for x in clean_lines[:half]),
                                b"".join(x + b"\n" for x in clean_lines[half:])))
    report = ig.ingest(str(src), tmp_path / "out", now=NOW, progress=False)
    assert report.accepted == len(clean_lines) and report.quarantined == 0


def test_partitions_are_sorted_by_time_whatever_the_file_order(tmp_path, clean_lines):
    shuffled = list(clean_lines)
    random.Random(3).shuffle(shuffled)
    ig.ingest(str(_shop(tmp_path, "a", clean_lines)), tmp_path / "a-out", now=NOW, progress=False)
    ig.ingest(str(_shop(tmp_path, "b", shuffled)), tmp_path / "b-out", now=NOW, progress=False)
    import pyarrow.parquet as pq

    def by_day(out):
        return {p.parent.name: pq.read_table(p) for p in (out / "events").rglob("*.parquet")}

    a, b = by_day(tmp_path / "a-out"), by_day(tmp_path / "b-out")
    assert len(a) >= 2 and sorted(a) == sorted(b)
    key = [(c, "ascending") for c in FIELDS]
    for day in a:
        assert (np.diff(b[day]["ts"].to_numpy().astype(np.int64)) >= 0).all(), day
        assert a[day].sort_by(key).equals(b[day].sort_by(key))
    shutil.rmtree(tmp_path / "b-out")


def test_zlib_decompress_reference_still_agrees():
    """decompress() of a single member is plain zlib, as before the streamed path existed."""
    body = b'{"a": 1}\n' * 100
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert ig.decompress(gzip.compress(body), "x.gz") == (d.decompress(gzip.compress(body)), None)
