"""Importers: public recommendation datasets written as raw event logs in the shop's schema.

Each importer writes ``catalog.parquet`` and ``events/dt=DAY/events.jsonl.gz`` (see :mod:`shoprec.data.schema`)
plus ``import.json`` (what was read and every choice made), so the normal path
``ingest -> features -> train`` runs on the dataset unchanged.

- :func:`import_s3rec`: the S3-Rec preprocessing of Amazon Beauty / LastFM (``Beauty.txt``: one user per
  line, ``user item item ...``, items already in time order, **no timestamps**). The file carries only
  the order, so timestamps are synthesised: the k-th item of a user is at ``START + k days + u seconds``
  (``u`` = the user's line number modulo 86400). That is strictly increasing within each user, keeps the
  file's order exactly, and never puts two events of one user at the same instant. Each interaction is a
  ``purchase`` (the source is reviews of bought products); one session per user.
  ``features`` then reproduces the file's sequences exactly (same users, items and order; checked in
  ``tests/test_importers.py``), which matters because published Beauty numbers are for this exact split.
  ``NAME_item2attributes.json`` beside the file (``{item: [attribute id, ...]}``: Amazon categories and
  brand as anonymous ids) becomes the catalog's ``attributes`` (``a<id>``), unless told otherwise.
- :func:`import_recbole`: RecBole atomic files (``NAME.inter`` and optionally ``NAME.item``), real
  timestamps. The shop's ingest rejects timestamps before 2000-01-01, so if the data is older (ml-100k is
  1997-98) all timestamps are shifted by the same whole number of weeks (recorded in ``import.json``);
  order and gaps are unchanged. Titles (and a category from ``class``/``genre``/``categories``) come from
  the ``.item`` file.
- :func:`import_clickstream`: DIGINETICA-style ``;``-separated item views
  (``session_id;user_id;item_id;timeframe;eventdate``). A row's time is ``eventdate + timeframe`` ms; the
  user is ``user_id`` or, where that is ``NA``, the session (``s<session_id>``). Each row is a ``view``.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.data.schema import CATALOG_ATTRIBUTES, CATALOG_SCHEMA, partition_name

log = logging.getLogger(__name__)

S3REC_START = datetime(2014, 1, 1, tzinfo=timezone.utc)
MIN_TS = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _event(t: datetime, user: str, session: str, event: str, item: str) -> tuple[datetime, str]:
    row = {"ts": _ts(t), "user_id": user, "session_id": session, "event": event, "item_id": item,
           "query": None, "position": None}
    return t, json.dumps(row, separators=(",", ":"))


def write_raw(out: str | Path, events: list[tuple[datetime, str]], catalog: dict[str, dict], meta: dict) -> dict:
    """Write events (time, JSON line) by UTC day, the catalog and ``import.json``; returns the counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    by_day: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for t, line in events:
        by_day[t.strftime("%Y-%m-%d")].append((t, line))
    for day, rows in sorted(by_day.items()):
        rows.sort(key=lambda r: r[0])  # stable: equal times keep their source order
        folder = out / "events" / partition_name(day)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "events.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write("".join(line + "\n" for _, line in rows).encode())
    ids = sorted(catalog)
    table = pa.table({
        "item_id": ids,
        "title": [catalog[i].get("title") or f"item {i}" for i in ids],
        "category": [catalog[i].get("category") for i in ids],
        "brand": [catalog[i].get("brand") for i in ids],
        "price": pa.nulls(len(ids), pa.float64()),
    }, schema=CATALOG_SCHEMA)
    if any(info.get("attributes") for info in catalog.values()):
        table = table.append_column(CATALOG_ATTRIBUTES, pa.array([catalog[i].get("attributes") for i in ids],
                                                                 CATALOG_ATTRIBUTES.type))
    pq.write_table(table, out / "catalog.parquet")
    stats = {**meta, "events": len(events), "days": len(by_day), "catalog_items": len(ids)}
    (out / "import.json").write_text(json.dumps(stats, indent=2))
    log.info("import: %s", stats)
    return stats


def s3rec_attributes_file(path: str | Path) -> Path | None:
    """``NAME_item2attributes.json`` beside an S3-Rec ``NAME.txt``, if there is one."""
    path = Path(path)
    sibling = path.with_name(f"{path.stem}_item2attributes.json")
    return sibling if sibling.exists() else None


def import_s3rec(path: str | Path, out: str | Path, start: datetime = S3REC_START,
                 attributes: str | Path | None = None) -> dict:
    """S3-Rec ``NAME.txt`` (``user item item ...`` per line, time order) to raw events; see module doc.
    ``attributes``: an S3-Rec ``item2attributes.json`` whose ids become the catalog's ``attributes``."""
    path = Path(path)
    events, catalog, users = [], {}, set()
    with open(path) as f:
        for line_no, line in enumerate(f):
            parts = line.split()
            if not parts:
                continue
            user, items = parts[0], parts[1:]
            if user in users:
                raise ValueError(f"{path}:{line_no + 1}: user {user} appears twice")
            users.add(user)
            base = start + timedelta(seconds=line_no % 86400)
            for k, item in enumerate(items):
                events.append(_event(base + timedelta(days=k), user, f"s3rec-{user}", "purchase", item))
                catalog.setdefault(item, {})
    meta = {"format": "s3rec", "source": str(path), "users": len(users),
            "timestamps": f"synthesised: item k of the user on line n at {start.date()} + k days + (n mod 86400) s"}
    if attributes:
        attrs = json.loads(Path(attributes).read_text())
        if not isinstance(attrs, dict):
            raise ValueError(f"{attributes}: expected a JSON object of item id -> [attribute id, ...]")
        for item, ids in attrs.items():
            if not isinstance(ids, list):
                raise ValueError(f"{attributes}: item {item}: expected a list of attribute ids, not {ids!r}")
            if item in catalog:
                catalog[item]["attributes"] = [f"a{a}" for a in ids]
        with_attrs = sum(1 for info in catalog.values() if info.get("attributes"))
        meta.update(attributes_source=str(attributes), items_with_attributes=with_attrs,
                    attribute_ids=len({a for info in catalog.values() for a in info.get("attributes") or []}))
    return write_raw(out, events, catalog, meta)


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    """A RecBole atomic file: tab-separated, header ``name:type``; returns bare names and rows."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return header, [r for r in reader if r]


def import_recbole(folder: str | Path, out: str | Path, name: str | None = None, event: str = "purchase") -> dict:
    """RecBole atomic ``NAME.inter`` (+ ``NAME.item``) in ``folder`` to raw events; see module doc."""
    folder = Path(folder)
    inters = sorted(folder.glob(f"{name or '*'}.inter"))
    if len(inters) != 1:
        raise ValueError(f"expected one {name or '*'}.inter in {folder}, found {[p.name for p in inters]}")
    inter = inters[0]
    name = inter.stem
    header, rows = _read_atomic(inter)
    for col in ("user_id", "item_id", "timestamp"):
        if col not in header:
            raise ValueError(f"{inter} has no {col} column (columns: {header})")
    ui, ii, ti = header.index("user_id"), header.index("item_id"), header.index("timestamp")
    stamps = [float(r[ti]) for r in rows]
    first = datetime.fromtimestamp(min(stamps), tz=timezone.utc) if stamps else MIN_TS
    shift_weeks = 0
    if first < MIN_TS:
        shift_weeks = -(-(MIN_TS - first).days // 7) + 1
    shift = timedelta(weeks=shift_weeks)
    catalog: dict[str, dict] = {}
    events = []
    for r, s in zip(rows, stamps):
        t = datetime.fromtimestamp(s, tz=timezone.utc) + shift
        events.append(_event(t, r[ui], f"{name}-{r[ui]}-{t.date()}", event, r[ii]))
        catalog.setdefault(r[ii], {})
    item_file = folder / f"{name}.item"
    if item_file.exists():
        ih, irows = _read_atomic(item_file)
        title_col = next((c for c in ("movie_title", "title", "item_name", "name") if c in ih), None)
        cat_col = next((c for c in ("class", "genre", "categories", "category") if c in ih), None)
        for r in irows:
            item = r[ih.index("item_id")]
            if item not in catalog:
                continue
            info = catalog[item]
            if title_col and r[ih.index(title_col)].strip():
                info["title"] = r[ih.index(title_col)].strip()
            if cat_col and r[ih.index(cat_col)].strip():
                info["category"] = r[ih.index(cat_col)].split()[0]
            if "release_year" in ih and info.get("title"):
                year = r[ih.index("release_year")].strip()
                info["title"] = f"{info['title']} ({year})" if year else info["title"]
    meta = {"format": "recbole", "source": str(inter), "users": len({r[ui] for r in rows}),
            "timestamps": "from the .inter file" + (f", shifted by {shift_weeks} weeks so none is before "
                                                      f"{MIN_TS.date()}" if shift_weeks else ""),
            "shift_weeks": shift_weeks}
    return write_raw(out, events, catalog, meta)


def import_clickstream(path: str | Path, out: str | Path) -> dict:
    """DIGINETICA-style ``;``-separated item views to raw ``view`` events; see module doc."""
    path = Path(path)
    events, catalog, users = [], {}, set()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=";")
        need = {"session_id", "item_id", "timeframe", "eventdate"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: need columns {sorted(need)}, got {reader.fieldnames}")
        for r in reader:
            day = datetime.fromisoformat(r["eventdate"]).replace(tzinfo=timezone.utc)
            t = day + timedelta(milliseconds=int(r["timeframe"]))
            user = r.get("user_id") or "NA"
            user = f"s{r['session_id']}" if user in ("NA", "") else f"u{user}"
            users.add(user)
            events.append(_event(t, user, f"s{r['session_id']}", "view", r["item_id"]))
            catalog.setdefault(r["item_id"], {})
    meta = {"format": "clickstream", "source": str(path), "users": len(users),
            "timestamps": "eventdate + timeframe (ms)", "user": "user_id, or s<session_id> where it is NA"}
    return write_raw(out, events, catalog, meta)
