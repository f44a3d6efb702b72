"""Importers: public datasets -> raw event log -> ingest -> features, with the sequences kept exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shoprec.data.features import build_features, load_items, load_sequences
from shoprec.data.importers import import_clickstream, import_recbole, import_s3rec
from shoprec.data.ingest import ingest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def pipeline(raw: Path, tmp: Path) -> tuple[dict, dict]:
    report = ingest(str(raw), tmp / "ingested", progress=False)
    stats = build_features(tmp / "ingested", tmp / "features")
    users, seqs = load_sequences(tmp / "features")
    items = load_items(tmp / "features")
    ids = dict(zip(items["idx"], items["item_id"]))
    return {u: [ids[i] for i in s] for u, s in zip(users, seqs)}, {"report": report, "stats": stats, "items": items}


def test_s3rec_keeps_users_items_and_order(tmp_path):
    lines = ["1 5 3 9 3", "2 10 2 7", "17 1 2 3 4 5 6 7 8 9 10 11", "3 4 4 8"]
    src = tmp_path / "Tiny.txt"
    src.write_text("\n".join(lines) + "\n")
    meta = import_s3rec(src, tmp_path / "raw")
    assert meta["events"] == 4 + 3 + 11 + 3 and meta["users"] == 4
    assert json.loads((tmp_path / "raw" / "import.json").read_text())["format"] == "s3rec"
    got, info = pipeline(tmp_path / "raw", tmp_path)
    assert info["report"].quarantined == 0
    # a repeat of the previous item is dropped by features ("3 4 4 8"); everything else is kept as is
    ref = {p[0]: p[1:] for p in (line.split() for line in lines)}
    ref["3"] = ["4", "8"]
    assert got == {u: s for u, s in ref.items() if len(s) >= 3}


def test_s3rec_attributes_reach_the_catalog_and_the_item_features(tmp_path):
    from click.testing import CliRunner

    from shoprec.cli import main

    src = tmp_path / "Tiny.txt"
    src.write_text("1 5 3 9\n2 3 5 7\n")
    (tmp_path / "Tiny_item2attributes.json").write_text(json.dumps({"5": [1, 2], "3": [2], "42": [9]}))
    result = CliRunner().invoke(main, ["data", "import", "s3rec", str(src), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "raw" / "import.json").read_text())
    # item 42 is in the attribute file but never bought: it is not in the catalog
    assert meta["items_with_attributes"] == 2 and meta["attribute_ids"] == 2
    catalog = {r["item_id"]: r["attributes"] for r in pq.read_table(tmp_path / "raw" / "catalog.parquet").to_pylist()}
    assert catalog == {"3": ["a2"], "5": ["a1", "a2"], "7": None, "9": None}
    _, info = pipeline(tmp_path / "raw", tmp_path)
    tokens = dict(zip(info["items"]["item_id"], info["items"]["attributes"].map(list)))
    assert tokens == {"3": ["attr=a2"], "5": ["attr=a1", "attr=a2"], "7": [], "9": []}
    # --no-attributes ignores the file beside the data
    result = CliRunner().invoke(main, ["data", "import", "s3rec", str(src), "--out", str(tmp_path / "plain"),
                                       "--no-attributes"])
    assert result.exit_code == 0, result.output
    assert "items_with_attributes" not in json.loads((tmp_path / "plain" / "import.json").read_text())
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"5": 3}))
    with pytest.raises(ValueError, match="item 5"):
        import_s3rec(src, tmp_path / "raw2", attributes=bad)


def test_recbole_uses_timestamps_titles_and_shifts_old_times(tmp_path):
    folder = tmp_path / "rb"
    folder.mkdir()
    (folder / "toy.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                      "u1\ta\t5\t881250949\nu1\tc\t3\t881250700\nu1\tb\t4\t881250800\n"
                                      "u2\tb\t1\t891717742\nu2\ta\t2\t891717743\nu2\tc\t2\t891717744\n")
    (folder / "toy.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                     "a\tToy Story\t1995\tAnimation Comedy\nb\tHeat\t1995\tAction\n"
                                     "c\tCasino\t1995\tDrama\nz\tUnused\t1990\tDrama\n")
    meta = import_recbole(folder, tmp_path / "raw")
    assert meta["shift_weeks"] > 0  # 1997 is before the ingest's 2000-01-01 floor
    got, info = pipeline(tmp_path / "raw", tmp_path)
    assert got == {"u1": ["c", "b", "a"], "u2": ["b", "a", "c"]}
    assert dict(zip(info["items"]["item_id"], info["items"]["title"]))["a"] == "Toy Story (1995)"
    catalog = pq.read_table(tmp_path / "raw" / "catalog.parquet").to_pylist()
    assert {r["item_id"]: r["category"] for r in catalog} == {"a": "Animation", "b": "Action", "c": "Drama"}


def test_clickstream_sessions_become_users(tmp_path):
    src = tmp_path / "views.csv"
    src.write_text("session_id;user_id;item_id;timeframe;eventdate\n"
                   "1;NA;81766;526309;2016-05-09\n1;NA;31331;1031018;2016-05-09\n1;NA;32118;243569;2016-05-09\n"
                   "2;7;9654;75848;2016-05-10\n2;7;33043;1000;2016-05-10\n2;7;9654;90000;2016-05-10\n")
    import_clickstream(src, tmp_path / "raw")
    got, _ = pipeline(tmp_path / "raw", tmp_path)
    # s1 is ordered by timeframe, not by row; u7 is 33043, 9654, 9654 -> the repeat is dropped -> too short
    assert got == {"s1": ["32118", "81766", "31331"]}


@pytest.mark.skipif(not (SHARED / "amazon-s3rec" / "Beauty.txt").exists(), reason="shared Beauty data absent")
def test_beauty_reproduces_the_published_split_exactly(tmp_path):
    src = SHARED / "amazon-s3rec" / "Beauty.txt"
    import_s3rec(src, tmp_path / "raw")
    got, info = pipeline(tmp_path / "raw", tmp_path)
    ref = {p[0]: p[1:] for p in (line.split() for line in open(src)) if p}
    assert len(ref) == 22363 and len(info["items"]) == 12101
    assert got == ref


@pytest.mark.skipif(not (SHARED / "ml-100k" / "recbole").exists(), reason="shared ml-100k data absent")
def test_ml100k_recbole_import(tmp_path):
    import_recbole(SHARED / "ml-100k" / "recbole", tmp_path / "raw")
    got, info = pipeline(tmp_path / "raw", tmp_path)
    assert info["report"].accepted == 100_000 and info["report"].quarantined == 0
    assert len(got) == 943 and len(info["items"]) == 1682
    assert sum(map(len, got.values())) == 100_000  # no user rates a movie twice, so nothing is dropped
    assert "Toy Story (1995)" in set(info["items"]["title"])


@pytest.mark.skipif(not (SHARED / "diginetica-sample").exists(), reason="shared diginetica data absent")
def test_diginetica_sample_import(tmp_path):
    meta = import_clickstream(SHARED / "diginetica-sample" / "sample_train-item-views.csv", tmp_path / "raw")
    report = ingest(str(tmp_path / "raw"), tmp_path / "ingested", progress=False)
    assert meta["events"] == report.accepted == 12391 and report.quarantined == 0
