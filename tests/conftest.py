"""Shared fixtures: tiny built-in data, a trained tiny model, and real servers started on 127.0.0.1.

Every server is a real process (``mlflow server``, moto's S3 server, uvicorn) started here and
stopped by its PID when the session ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TINY = {"users": 300, "items": 80, "days": 5, "seed": 7}


@pytest.fixture(scope="session")
def load_benchmark():
    """A script under benchmarks/ imported as a module (they are scripts, not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses defined in the script look their module up there
        spec.loader.exec_module(mod)
        return mod

    return load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log, self.pid = proc, url, log, proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()


def start_service(cmd: list[str], url: str, health_path: str, log: Path, env: dict | None = None,
                  timeout: float = 90.0) -> Service:
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True)
    service = Service(proc, url, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + health_path, timeout=2).status_code < 500:
                return service
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    service.stop()
    raise TimeoutError(f"{cmd[:4]} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def one_torch_thread():
    """One torch thread: on a small shared CPU, more threads spin-wait and run many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` with a SQLite database and served artifacts."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    svc = start_service(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", (root / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        f"http://127.0.0.1:{port}", "/health", root / "server.log")
    yield svc
    svc.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3-compatible server as a process; boto3 reaches it through AWS_ENDPOINT_URL."""
    root = tmp_path_factory.mktemp("moto")
    port = free_port()
    svc = start_service([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                        f"http://127.0.0.1:{port}", "/", root / "moto.log")
    yield svc
    svc.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_server


@pytest.fixture(scope="session")
def tiny_shop(tmp_path_factory) -> Path:
    from shoprec.data.synth import synthesize

    root = tmp_path_factory.mktemp("shop")
    synthesize(root, **TINY)
    return root


@pytest.fixture(scope="session")
def tiny_features(tiny_shop, tmp_path_factory) -> Path:
    from shoprec.data.features import build_features
    from shoprec.data.ingest import ingest

    ingested = tmp_path_factory.mktemp("ingested")
    ingest(str(tiny_shop), ingested, progress=False)
    out = tmp_path_factory.mktemp("features")
    build_features(ingested, out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_features, tmp_path_factory) -> Path:
    """A SASRec model trained in-process for a few epochs on the tiny shop."""
    from shoprec.seqrec.model import SeqRecConfig
    from shoprec.seqrec.train import TrainConfig, train

    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(epochs=6, batch_size=32, lr=3e-3, patience=10,
                      model=SeqRecConfig(objective="sasrec", max_len=20, d_model=32, n_heads=2, n_layers=1))
    train(tiny_features, out, cfg, progress=False)
    return out


class Receiver:
    """A webhook on 127.0.0.1 that records what it is sent; answers ``codes`` in turn (then 200)."""

    def __init__(self, codes: list[int] | None = None):
        self.bodies: list[dict] = []
        self.codes = list(codes or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = outer.codes.pop(0) if outer.codes else 200
                if code == 200:
                    outer.bodies.append(body)
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1 recording what it is sent (notifications)."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def make_receiver():
    """Receivers that answer the given status codes in turn (then 200); all closed after the test."""
    made: list[Receiver] = []

    def make(codes: list[int] | None = None) -> Receiver:
        made.append(Receiver(codes))
        return made[-1]

    yield make
    for r in made:
        r.close()
