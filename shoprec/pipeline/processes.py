"""Processes the pipeline's local side starts (servers, the demo's server): stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
