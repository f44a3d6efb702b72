"""The server under abuse and load (make faults): schemathesis against its own OpenAPI schema finds no 5xx,
and a bounded 60-second load at concurrency 16 on 127.0.0.1 gives 0 errors with resident memory stable."""

import asyncio
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port, start_service
from tests.faults.conftest import record

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("abuse") / "serve.log"
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(tiny_model), "--port", str(port),
                         "--poll-seconds", "0"], f"http://127.0.0.1:{port}", "/healthz", log,
                        env={"SHOPREC_API_TOKEN": "test-token"})
    yield svc
    svc.stop()


def test_schemathesis_finds_no_server_errors(server):
    st = Path(sys.executable).with_name("st")
    proc = subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "60",
         "--header", "Authorization: Bearer test-token", "--no-color", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    record("serve_schemathesis", checks="not_a_server_error on every operation of /openapi.json",
           requests=int(cases.group(1)) if cases else None, faults_injected=int(cases.group(1)) if cases else 0,
           returncode=proc.returncode, lost=0 if proc.returncode == 0 else None)
    assert proc.returncode == 0, out[-4000:]
    assert cases and int(cases.group(1)) == int(cases.group(2)) > 100, out[-2000:]


def test_sixty_seconds_at_concurrency_16(server, tiny_model):
    users = pq.read_table(tiny_model / "histories.parquet")["user_id"].to_pylist()
    proc = psutil.Process(server.pid)
    headers = {"Authorization": "Bearer test-token"}
    latencies, errors = [], []

    async def client(i: int, deadline: float, c: httpx.AsyncClient) -> None:
        n = i
        while time.monotonic() < deadline:
            body = {"user_id": users[n % len(users)], "k": 10}
            t0 = time.perf_counter()
            try:
                r = await c.post(f"{server.url}/v1/recommend", json=body, headers=headers)
                if r.status_code != 200:
                    errors.append(r.status_code)
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
            latencies.append(time.perf_counter() - t0)
            n += 16

    async def run(seconds: float) -> None:
        limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
        async with httpx.AsyncClient(limits=limits, timeout=10) as c:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(client(i, deadline, c) for i in range(16)))

    asyncio.run(run(5))  # warm-up: allocator pools and caches reach their working size
    rss_start = proc.memory_info().rss
    latencies.clear()
    asyncio.run(run(60))
    rss_end = proc.memory_info().rss
    lat = sorted(latencies)
    result = {"load": "60 s at concurrency 16 on /v1/recommend", "requests": len(lat), "errors": len(errors),
              "rps": len(lat) / 60, "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * lat[int(0.99 * len(lat))],
              "rss_start_mb": rss_start / 2**20, "rss_end_mb": rss_end / 2**20,
              "rss_growth": rss_end / rss_start - 1, "lost": len(errors)}
    record("serve_load", **result)
    assert not errors, errors[:10]
    assert len(lat) > 1000
    assert result["rss_growth"] < 0.10, result
