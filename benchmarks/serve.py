"""Serving latency and throughput: ``shoprec serve`` against ``mlflow models serve`` of the same registered model.

The model: the built-in shop (``shoprec.data.synth``) -> ingest -> features -> a SASRec-sized model (d_model 64,
2 layers, max_len 50) trained here, evaluated and registered as ``@champion`` in a temporary MLflow store
(SQLite). Both servers load ``models:/NAME@champion`` from it on 127.0.0.1:

- ``shoprec serve --poll-seconds 0`` (one process, micro-batching),
- ``mlflow models serve --env-manager local --workers 1`` (the same pyfunc, from code).

One client for both: a bounded asyncio load loop (this process, uvloop when installed) over keep-alive
HTTP/1.1 connections, ``c`` connections each sending its next request when the last one is answered,
until ``--requests`` are done or ``--seconds`` have passed. Every answer's status is checked. Phases
alternate between the servers for ``--rounds`` rounds; the medians over rounds are reported.

    .venv/bin/python benchmarks/serve.py            # or: make serve-bench

writes ``benchmarks/results/serve.json``. Its ``search`` rows are BM25 over the built-in shop's titles;
``benchmarks/search_depth.py`` adds ``shoprec-homedepot-rerank20`` (54,667 products, BM25 + bi-encoder,
top 20 re-ranked by the int8 cross-encoder), which a re-run here keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "serve.json"
NAME = "bench-seqrec"


# ------------------------------------------------------------------ the model
def build_model(root: Path, users: int, items: int, days: int, epochs: int) -> Path:
    from shoprec.data.features import build_features
    from shoprec.data.ingest import ingest
    from shoprec.data.synth import synthesize
    from shoprec.evaluate import evaluate
    from shoprec.seqrec.model import SeqRecConfig
    from shoprec.seqrec.train import TrainConfig, train

    synthesize(root / "shop", users=users, items=items, days=days, seed=0)
    ingest(str(root / "shop"), root / "ingested", progress=False)
    build_features(root / "ingested", root / "features")
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=2e-3, patience=epochs,
                      model=SeqRecConfig(objective="sasrec", max_len=50, d_model=64, n_heads=2, n_layers=2))
    train(root / "features", root / "model", cfg, progress=False)
    evaluate(root / "model", root / "features", root / "evaluation")
    return root / "model"


# ------------------------------------------------------------------ servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], url: str, health: str, log: Path, env: dict, timeout: float = 180) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + health, timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    stop(proc)
    raise TimeoutError(f"{cmd[:4]} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------ the load loop
def http_request(path: str, body: dict, port: int) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: keep-alive\r\n\r\n").encode() + data


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked = None, False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def load(port: int, requests: list[bytes], concurrency: int, total: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    counter = [0]
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while counter[0] < total and time.perf_counter() < deadline:
                i = counter[0]
                counter[0] += 1
                t0 = time.perf_counter()
                writer.write(requests[(i * 7919 + w) % len(requests)])
                status = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors[0] += 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"n": len(latencies), "errors": errors[0], "rps": len(latencies) / wall,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


def run_load(*args) -> dict:
    return asyncio.run(load(*args))


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000, help="Most requests per phase.")
    ap.add_argument("--seconds", type=float, default=6.0, help="Longest phase.")
    ap.add_argument("--workdir", default=None, help="Keep the model and stores here (default: a temp folder).")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
        client_loop = "uvloop"
    except ImportError:
        client_loop = "asyncio"

    root = Path(args.workdir or tempfile.mkdtemp(prefix="shoprec-serve-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "SHOPREC_HOME": str(root / "home")}
    env.pop("SHOPREC_API_TOKEN", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # mlflow runs `uvicorn`
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "SHOPREC_HOME")})
    os.environ.pop("SHOPREC_API_TOKEN", None)
    procs: list[subprocess.Popen] = []
    try:
        from shoprec.registry import versions as registry

        if registry.version_by_alias(NAME) if (root / "mlflow.db").exists() else None:
            model_dir = root / "model"
            print(f"reusing {NAME}@champion in {root}", flush=True)
        else:
            t = time.perf_counter()
            model_dir = build_model(root, args.users, args.items, args.days, args.epochs)
            print(f"model trained in {time.perf_counter() - t:.0f} s", flush=True)
            registry.register(model_dir, root / "evaluation", NAME, kfp_run_id="serve-bench")
        uri = f"models:/{NAME}@champion"

        import pyarrow.parquet as pq

        hist = pq.read_table(model_dir / "histories.parquet")
        users = hist["user_id"].to_pylist()
        titles = pq.read_table(model_dir / "items.parquet")["title"].to_pylist()
        config = json.loads((model_dir / "config.json").read_text())["model"]
        rng = random.Random(0)
        sample = rng.sample(users, min(500, len(users)))
        queries = [" ".join(rng.sample(t.split(), min(2, len(t.split())))) for t in rng.sample(titles, min(200, len(titles)))]

        ports = {"shoprec": free_port(), "mlflow": free_port()}
        bin_dir = Path(sys.executable).parent
        procs.append(start([sys.executable, "-m", "shoprec.cli", "serve", "--model", uri, "--port", str(ports["shoprec"]),
                            "--poll-seconds", "0"], f"http://127.0.0.1:{ports['shoprec']}", "/readyz",
                           root / "shoprec-serve.log", env))
        procs.append(start([str(bin_dir / "mlflow"), "models", "serve", "--env-manager", "local", "-m", uri,
                            "-h", "127.0.0.1", "-p", str(ports["mlflow"]), "--workers", "1"],
                           f"http://127.0.0.1:{ports['mlflow']}", "/ping", root / "mlflow-serve.log", env))

        reqs = {
            ("recommend", "shoprec"): [http_request("/v1/recommend", {"user_id": u, "k": 10}, ports["shoprec"])
                                       for u in sample],
            ("recommend", "mlflow"): [http_request("/invocations", {"dataframe_split": {"columns": ["user_id"],
                                                                                       "data": [[u]]},
                                                                    "params": {"k": 10}}, ports["mlflow"])
                                      for u in sample],
            ("search", "shoprec"): [http_request("/v1/search", {"query": q, "k": 10}, ports["shoprec"])
                                    for q in queries],
        }
        # Same answers from both: the top 10 of one shopper.
        ours = httpx.post(f"http://127.0.0.1:{ports['shoprec']}/v1/recommend", json={"user_id": sample[0], "k": 10}).json()
        theirs = httpx.post(f"http://127.0.0.1:{ports['mlflow']}/invocations",
                            json={"dataframe_split": {"columns": ["user_id"], "data": [[sample[0]]]},
                                  "params": {"k": 10}}).json()
        same_top10 = [i["item_id"] for i in ours["items"]] == theirs["predictions"][0]["items"]
        print(f"same top-10 from both servers: {same_top10}", flush=True)

        runs: dict[tuple, list[dict]] = {}
        for key, rq in reqs.items():  # warm-up
            run_load(ports[key[1]], rq, 4, 200, 5)
        for r in range(args.rounds):
            for (endpoint, server), rq in reqs.items():
                for c in (1, 16):
                    res = run_load(ports[server], rq, c, args.requests, args.seconds)
                    runs.setdefault((endpoint, server, c), []).append(res)
                    print(f"round {r + 1} {endpoint:9s} {server:7s} c={c:2d}: {res['rps']:7.0f} rps  "
                          f"p50 {res['p50_ms']:6.2f} ms  p99 {res['p99_ms']:6.2f} ms  n={res['n']} "
                          f"errors={res['errors']}", flush=True)

        def med(endpoint, server, c, field):
            return round(statistics.median(x[field] for x in runs[(endpoint, server, c)]), 2)

        endpoints: dict[str, dict] = {}
        for endpoint, server in reqs:
            endpoints.setdefault(endpoint, {})[server] = {
                "p50_ms": med(endpoint, server, 1, "p50_ms"), "p99_ms": med(endpoint, server, 1, "p99_ms"),
                "rps_c1": med(endpoint, server, 1, "rps"), "rps_c16": med(endpoint, server, 16, "rps"),
                "p50_ms_c16": med(endpoint, server, 16, "p50_ms"), "p99_ms_c16": med(endpoint, server, 16, "p99_ms"),
                "errors": sum(x["errors"] for c in (1, 16) for x in runs[(endpoint, server, c)]),
            }
        ours_r, peer = endpoints["recommend"]["shoprec"], endpoints["recommend"]["mlflow"]
        result = {
            "command": " ".join(["python benchmarks/serve.py", *(argv if argv is not None else sys.argv[1:])]),
            "endpoints": endpoints,
            "ratios": {"recommend_p99_c1_vs_mlflow": round(ours_r["p99_ms"] / peer["p99_ms"], 3),
                       "recommend_rps_c16_vs_mlflow": round(ours_r["rps_c16"] / peer["rps_c16"], 2)},
            "targets": {"recommend_p99_c1_vs_mlflow": "<= 0.6", "recommend_rps_c16_vs_mlflow": ">= 5"},
            "same_top10": same_top10,
            "model": {k: config[k] for k in ("objective", "d_model", "n_layers", "n_heads", "max_len", "n_items")},
            "setup": {"rounds": args.rounds, "max_requests_per_phase": args.requests, "max_seconds_per_phase": args.seconds,
                      "statistic": "median over rounds", "client": f"asyncio keep-alive HTTP/1.1 ({client_loop})",
                      "shoprec": "shoprec serve, 1 process, micro-batching, torch threads = cores // 2",
                      "mlflow": "mlflow models serve --env-manager local --workers 1",
                      "cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        if Path(args.out).exists():  # keep the rows other benchmarks add (search_depth.py: Home Depot, re-ranked)
            old = json.loads(Path(args.out).read_text()).get("endpoints", {}).get("search", {})
            for key, row in old.items():
                if isinstance(row, dict) and row.get("source") and key not in endpoints["search"]:
                    endpoints["search"][key] = row
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["ratios"]), flush=True)
        return result
    finally:
        for p in procs:
            stop(p)
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
