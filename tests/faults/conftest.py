"""Helpers for the fault-injection tests: real processes started on 127.0.0.1 and stopped by PID,
and a small ledger each test writes to ``.shoprec/faults/<test>.json`` for benchmarks/reliability_report.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAULTS_DIR = Path(os.environ.get("SHOPREC_FAULTS_DIR", REPO / ".shoprec" / "faults"))
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def record(name: str, **figures) -> Path:
    """Write one test's figures (faults injected, rows/requests involved, lost) for the reliability report."""
    FAULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = FAULTS_DIR / f"{name}.json"
    figures = {"test": name, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(figures, indent=2, default=str))
    os.replace(tmp, path)
    return path


def stop_pid(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process we started (by its PID), SIGKILL if it does not go."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


class MotoServer:
    """``python -m moto.server`` as a real process on a fixed port, so it can be stopped and restarted."""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 60.0) -> MotoServer:
        self.starts += 1
        log = open(self.log_dir / f"moto-{self.starts}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"moto_server not ready on {self.url} after {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    def is_listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


@pytest.fixture
def moto(tmp_path):
    server = MotoServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def s3_env(monkeypatch, moto):
    for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": moto.url}.items():
        monkeypatch.setenv(k, v)
    return moto


def small_shop(root: Path, users: int = 40, items: int = 60, days: int = 3, seed: int = 3) -> dict:
    from shoprec.data.synth import synthesize

    return synthesize(root, users=users, items=items, days=days, seed=seed)
