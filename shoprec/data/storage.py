"""Where data lives: a local folder or ``s3://bucket/prefix``, read and written through one small API.

S3 access goes through boto3, which takes its endpoint from ``AWS_ENDPOINT_URL`` (MinIO, moto) and
retries throttling and connection errors itself (botocore "standard" retry mode); we only add a clear
error naming the endpoint when the retries run out.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

EVENT_SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")


class StorageError(RuntimeError):
    """Raw data could not be listed or read; the message names the endpoint or path."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        rest = uri[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StorageError(f"bad S3 URI {uri!r}: expected s3://bucket/prefix")
        return cls(bucket, prefix.strip("/"))


def s3_client(max_attempts: int = 5, connect_timeout: float = 5.0):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"},
                      connect_timeout=connect_timeout, read_timeout=30),
    )


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL", "the default AWS S3 endpoint")


def list_event_files(uri: str) -> list[str]:
    """Every raw event file under ``uri/events`` (sorted), as local paths or s3:// URIs."""
    if uri.startswith("s3://"):
        loc = S3Location.parse(uri)
        prefix = f"{loc.prefix}/events/" if loc.prefix else "events/"
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        except Exception as e:  # botocore raises many types; all mean the same to the user
            raise StorageError(f"cannot list s3://{loc.bucket}/{prefix} at {_endpoint()}: {e}") from e
        return sorted(f"s3://{loc.bucket}/{k}" for k in keys if k.endswith(EVENT_SUFFIXES))
    root = Path(uri) / "events"
    if not root.is_dir():
        raise StorageError(f"no events folder at {root}")
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.name.endswith(EVENT_SUFFIXES))


def partition_of(file_uri: str) -> str:
    """The day of a raw file from its ``dt=DAY`` folder, or "" for a file outside such a folder."""
    for part in reversed(file_uri.split("/")[:-1]):
        if part.startswith("dt="):
            return part[3:]
    return ""


def list_partitions(uri: str, lookback_days: int = 0, start: str = "", end: str = "") -> list[str]:
    """The days under ``uri/events`` (sorted) in the data window (:func:`select_days`), each processed by its own
    ingest task in the fan-out."""
    return select_days(sorted({partition_of(f) for f in list_event_files(uri)}), lookback_days, start, end)


def select_days(days: list[str], lookback_days: int = 0, start: str = "", end: str = "") -> list[str]:
    """The days of a data window, so a nightly run reads a bounded history.

    ``start`` and ``end`` (ISO dates, inclusive; empty: open) bound the window; ``lookback_days`` (0: no limit)
    keeps the last N calendar days up to ``end``, or up to the newest day when ``end`` is empty. A file outside
    a ``dt=DAY`` folder (day "") cannot be dated and is always kept. A window with no day is an error that
    names the days there are.
    """
    from datetime import date, timedelta

    def parse(value: str, what: str) -> date:
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what} {value!r} is not an ISO date (YYYY-MM-DD)") from None

    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    if not (lookback_days or start or end):
        return list(days)
    dated = {d: parse(d, "partition") for d in days if d}
    lo = parse(start, "start date") if start else None
    hi = parse(end, "end date") if end else None
    if lo and hi and lo > hi:
        raise ValueError(f"start date {start} is after end date {end}")
    if lookback_days:
        anchor = hi or max(dated.values(), default=None)
        if anchor is not None:
            first = anchor - timedelta(days=lookback_days - 1)
            lo = max(lo, first) if lo else first
    chosen = [d for d in days if not d or ((lo is None or dated[d] >= lo) and (hi is None or dated[d] <= hi))]
    if not any(chosen):
        have = f"{min(dated)}..{max(dated)}" if dated else "none"
        raise StorageError(f"no day of raw data in the window start={start or '-'} end={end or '-'} "
                           f"lookback_days={lookback_days} (days there: {have})")
    return chosen


def read_bytes(uri: str) -> bytes:
    if uri.startswith("s3://"):
        loc = S3Location.parse(uri)
        try:
            return s3_client().get_object(Bucket=loc.bucket, Key=loc.prefix)["Body"].read()
        except Exception as e:
            raise StorageError(f"cannot read {uri} at {_endpoint()}: {e}") from e
    return Path(uri).read_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    """``data`` to a file or an S3 object (``s3://bucket/key``)."""
    if uri.startswith("s3://"):
        loc = S3Location.parse(uri)
        try:
            s3_client().put_object(Bucket=loc.bucket, Key=loc.prefix, Body=data)
        except Exception as e:
            raise StorageError(f"cannot write {uri} at {_endpoint()}: {e}") from e
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    Path(uri).write_bytes(data)


def copy_file(local: str | Path, uri: str) -> None:
    """A local file to a path or an S3 object."""
    if uri.startswith("s3://"):
        loc = S3Location.parse(uri)
        try:
            s3_client().upload_file(str(local), loc.bucket, loc.prefix)
        except Exception as e:
            raise StorageError(f"cannot write {uri} at {_endpoint()}: {e}") from e
        return
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(local, uri)


def remove_tree(uri: str) -> int:
    """Delete everything under a folder or an S3 prefix; returns how many files."""
    if uri.startswith("s3://"):
        loc, client, n = S3Location.parse(uri), s3_client(), 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=loc.bucket, Delete={"Objects": keys, "Quiet": True})
                n += len(keys)
        return n
    path = Path(uri)
    if not path.exists():
        return 0
    n = sum(1 for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path)
    return n


def join(uri: str, name: str) -> str:
    return f"{uri.rstrip('/')}/{name}"


def upload_folder(local: str | Path, uri: str) -> int:
    """Copy a local folder to ``s3://bucket/prefix`` (used by tests and ``shoprec data synth --out s3://``)."""
    loc, client, n = S3Location.parse(uri), s3_client(), 0
    for path in sorted(Path(local).rglob("*")):
        if path.is_file():
            key = "/".join(filter(None, [loc.prefix, str(path.relative_to(local))]))
            client.upload_file(str(path), loc.bucket, key)
            n += 1
    return n
