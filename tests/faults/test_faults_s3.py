"""S3 outage during ingest, against a real ``moto_server`` process stopped and restarted by PID.

1. The server is down before ingest starts: boto3 retries (standard mode, counted through botocore's own
   ``before-send`` event) and ingest then fails with a StorageError naming the endpoint; nothing is written.
2. The server dies in the middle of ingest (killed by PID from botocore's ``before-send`` hook at the first
   read of an event file): same clear failure, and the output of the previous successful run is untouched
   (no partial partition, no temporary file).
3. Server restarted, data re-uploaded (moto keeps it in memory), ingest re-run: it completes, and the rows
   are exactly those of a local ingest of the same shop, without duplicates.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import boto3
import pytest

from shoprec.data import storage
from shoprec.data.ingest import ingest, read_events
from shoprec.data.schema import FIELDS
from tests.faults.conftest import record, small_shop

URI = "s3://shop-raw/raw"


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden temporary files included) with its content hash."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _upload(local: Path) -> int:
    boto3.client("s3").create_bucket(Bucket="shop-raw")
    return storage.upload_folder(local, URI)


class SendCounter:
    """Counts HTTP attempts boto3 makes (botocore's before-send event), optionally running an action once."""

    def __init__(self, on_first_get=None):
        self.sends, self.gets, self.on_first_get = 0, 0, on_first_get
        self.requests: list[str] = []
        self.session = boto3._get_default_session()

    def __call__(self, request, **kwargs):
        self.sends += 1
        self.requests.append(f"{request.method} {request.url}")
        if request.method == "GET" and "/events/" in request.url:
            self.gets += 1
            if self.gets == 1 and self.on_first_get:
                self.on_first_get()

    def __enter__(self):
        self.session.events.register("before-send.s3", self)
        return self

    def __exit__(self, *exc):
        self.session.events.unregister("before-send.s3", self)


def _rows(table):
    return sorted(zip(*[table[f].to_pylist() for f in FIELDS]), key=repr)


@pytest.mark.faults
def test_s3_outage_during_ingest_fails_clearly_and_rerun_completes(s3_env, tmp_path):
    moto = s3_env
    t0 = time.perf_counter()
    shop = tmp_path / "shop"
    stats = small_shop(shop, users=60, items=60, days=4)
    local = ingest(str(shop), tmp_path / "local", progress=False)  # what a good run must produce

    # 1. server down before ingest starts
    moto.start()
    n_files = _upload(shop)
    moto.stop()
    assert not moto.is_listening()
    out = tmp_path / "from-s3"
    with SendCounter() as counter:
        started = time.monotonic()
        with pytest.raises(storage.StorageError) as err:
            ingest(URI, out, progress=False)
        waited = time.monotonic() - started
    assert moto.url in str(err.value), str(err.value)
    lists = [r for r in counter.requests if "list-type=2" in r]
    # s3_client(max_attempts=5): botocore makes the first try plus up to 5 retries (6 seen here)
    assert 2 <= len(lists) <= 6, f"expected retries (botocore standard mode), saw {counter.requests}"
    assert not [f for f in _snapshot(out) if f.startswith("events/")], "a failed ingest wrote partitions"
    attempts_down = counter.sends

    # 2. a good run, then the server dies in the middle of the next one
    moto.start()
    _upload(shop)
    first = ingest(URI, out, progress=False)
    assert first.to_dict() == local.to_dict() | {"files": first.files}
    before = _snapshot(out)

    def kill_server():
        os.kill(moto.pid, signal.SIGKILL)
        moto.proc.wait()

    with SendCounter(on_first_get=kill_server) as counter:
        with pytest.raises(storage.StorageError) as err:
            ingest(URI, out, progress=False)
    assert moto.url in str(err.value) and "cannot read s3://shop-raw/raw/events/" in str(err.value), str(err.value)
    assert 2 <= counter.gets <= 6, counter.requests  # the read was retried, then given up
    assert _snapshot(out) == before, "a failed ingest changed the output folder"
    attempts_mid = counter.gets

    # 3. server back (empty: moto is in memory), data re-uploaded, ingest re-run over the same output folder
    moto.start()
    _upload(shop)
    again = ingest(URI, out, progress=False)
    events = read_events(out)
    assert again.rows_in == again.accepted + again.quarantined == local.rows_in
    assert events.num_rows == local.accepted == stats["events"] - local.quarantined
    assert _rows(events) == _rows(read_events(tmp_path / "local"))
    files = [p for p in _snapshot(out)]
    assert not [f for f in files if ".tmp" in f], files
    # part files are named after their source (an s3:// URI here), so compare partitions and file counts
    def parts(names):
        return sorted(f.rsplit("/", 1)[0] for f in names if f.startswith("events/"))
    assert parts(files) == parts(_snapshot(tmp_path / "local"))
    record("s3_outage_ingest", faults_injected=2, faults=["moto_server stopped before ingest",
                                                           "moto_server SIGKILLed at first event-file read"],
           files=n_files, rows=local.rows_in, requests_while_down=attempts_down + attempts_mid,
           seconds_retrying_before_error=round(waited, 1), server_restarts=moto.starts - 1,
           duplicates=events.num_rows - len(set(_rows(events))), partial_files_left=0,
           lost=local.rows_in - again.accepted - again.quarantined, seconds=round(time.perf_counter() - t0, 1))
    assert events.num_rows == len(set(_rows(events))), "duplicate rows after the re-run"
