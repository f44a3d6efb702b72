import json

import pytest

from shoprec.data.ingest import IngestError, gzip_lines, ingest, read_events

GOOD = {"ts": "2026-11-01T10:00:00.000Z", "user_id": "u1", "session_id": "s1", "event": "view",
        "item_id": "p1", "query": None, "position": None}


def _shop(root, lines, name="dt=2026-11-01"):
    import shutil

    from shoprec.data.synth import synthesize

    synthesize(root / "_seed", users=5, items=12, days=1, seed=1)
    shutil.copy(root / "_seed" / "catalog.parquet", root / "catalog.parquet")
    folder = root / "events" / name
    folder.mkdir(parents=True)
    (folder / "events.jsonl.gz").write_bytes(gzip_lines(lines))
    return root


def _row(**kw):
    return json.dumps({**GOOD, **kw}).encode()


def test_clean_synthetic_data_is_all_accepted(tiny_shop, tmp_path):
    report = ingest(str(tiny_shop), tmp_path / "out", progress=False)
    assert report.quarantined == 0 and report.accepted == report.rows_in > 1000
    assert sum(report.partitions.values()) == report.accepted
    assert read_events(tmp_path / "out").num_rows == report.accepted


def test_bad_rows_are_quarantined_with_reasons_and_counts_add_up(tmp_path):
    lines = [_row(session_id=f"s{i}") for i in range(40)] + [
        b'{"ts": "2026-11-01T10:00:00Z", "user_id": "u1"',  # truncated JSON
        _row(user_id=5),
        _row(event="teleport"),
        _row(ts="1999-01-01T00:00:00Z"),
        _row(ts="2999-01-01T00:00:00Z"),
        _row(event="search", item_id=None, query=None),
        _row(position=0),
        b"[1, 2, 3]",
        b"",
        _row(session_id="s0"),  # duplicate of the first row
    ]
    out = tmp_path / "out"
    report = ingest(str(_shop(tmp_path, lines)), out, max_quarantine_fraction=0.5, progress=False)
    assert report.rows_in == len(lines) == report.accepted + report.quarantined
    assert report.accepted == 40 and report.quarantined == 10
    reasons = [json.loads(x)["reason"] for x in (out / "quarantine.jsonl").read_text().splitlines()]
    expected = ["invalid JSON", "field user_id: expected string, got int", "unknown event 'teleport'",
                "timestamp before 2000-01-01", "timestamp in the future", "missing query for event search",
                "position out of range", "not a JSON object", "empty line", "duplicate of an earlier row"]
    for want in expected:
        assert any(r.startswith(want) for r in reasons), (want, reasons)
    lines_named = {json.loads(x)["line"] for x in (out / "quarantine.jsonl").read_text().splitlines()}
    assert lines_named == set(range(41, 51))


def test_too_much_quarantine_fails_with_a_clear_message(tmp_path):
    lines = [_row(session_id=f"s{i}") for i in range(5)] + [_row(event="bogus", session_id=f"x{i}") for i in range(5)]
    with pytest.raises(IngestError, match=r"quarantined 5 of 10 rows \(50.0%\).*unknown event"):
        ingest(str(_shop(tmp_path, lines)), tmp_path / "out", max_quarantine_fraction=0.1, progress=False)
    assert (tmp_path / "out" / "quarantine.jsonl").exists()


def test_rerun_replaces_instead_of_duplicating(tiny_shop, tmp_path):
    first = ingest(str(tiny_shop), tmp_path / "out", progress=False)
    second = ingest(str(tiny_shop), tmp_path / "out", progress=False)
    assert first.accepted == second.accepted
    assert read_events(tmp_path / "out").num_rows == first.accepted


def test_ingest_from_s3(tiny_shop, tmp_path, s3_env):
    from shoprec.data.storage import s3_client, upload_folder

    s3_client().create_bucket(Bucket="raw-ingest")
    upload_folder(tiny_shop, "s3://raw-ingest/shop")
    local = ingest(str(tiny_shop), tmp_path / "local", progress=False)
    remote = ingest("s3://raw-ingest/shop", tmp_path / "remote", progress=False)
    assert remote.accepted == local.accepted and remote.partitions == local.partitions
