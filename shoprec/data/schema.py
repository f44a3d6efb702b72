"""The raw event log schema, shared by synth, the importers, ingest and the docs.

One JSON object per line, gzip-compressed, one file per day:
``events/dt=YYYY-MM-DD/events.jsonl.gz``.

| field      | type            | meaning                                                      |
|------------|-----------------|--------------------------------------------------------------|
| ts         | string          | ISO-8601 UTC time of the event, e.g. ``2026-11-01T08:12:33.120Z`` |
| user_id    | string          | shopper id (non-empty)                                       |
| session_id | string          | browsing session id (non-empty)                              |
| event      | string          | one of ``search, view, click, add_to_cart, purchase``        |
| item_id    | string or null  | product id; null only for ``search``                         |
| query      | string or null  | search text; set on ``search`` and on results shown/clicked  |
| position   | int or null     | 1-based rank of ``item_id`` in the result list it was shown in |

A ``view`` with a ``query`` and ``position`` is an impression in a search result list; a
``click`` with them is a click on that result. A ``view`` without a query is a product page
opened while browsing.
"""

from __future__ import annotations

import pyarrow as pa

EVENT_TYPES = ("search", "view", "click", "add_to_cart", "purchase")
FIELDS = ("ts", "user_id", "session_id", "event", "item_id", "query", "position")

MAX_ID_LEN = 128
MAX_QUERY_LEN = 512
MAX_POSITION = 1000

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("session_id", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("item_id", pa.string()),
        pa.field("query", pa.string()),
        pa.field("position", pa.int32()),
    ]
)

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("price", pa.float64()),
    ]
)
# An optional catalog column: other tags of a product (e.g. the anonymous attribute ids of the S3-Rec
# Amazon files). Catalogs without it stay valid.
CATALOG_ATTRIBUTES = pa.field("attributes", pa.list_(pa.string()))

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
    ]
)


def partition_name(day: str) -> str:
    """Folder name of one day's partition, Hive style so Parquet readers see ``dt``."""
    return f"dt={day}"
