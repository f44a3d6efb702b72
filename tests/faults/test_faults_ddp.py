"""A killed DDP worker and a kill while the checkpoint is written.

- ``torchrun --nproc_per_node=2 --max-restarts=2`` (the command :func:`shoprec.seqrec.launch.launch` builds) on a
  tiny synthetic shop; once ``checkpoints/last.pt`` holds epoch >= 1, one gloo worker is SIGKILLed. torchrun
  must restart the group, training must resume from the checkpoint (log line and a history with every
  epoch exactly once), and the final test metric is compared with an uninterrupted run of the same seed.
- A process SIGKILLed in the middle of ``_save_atomic`` (torch.save to a temporary name, then rename)
  leaves the previous ``last.pt`` loadable; and a leftover partial ``.last.pt.tmp`` does not stop a resume.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from tests.faults.conftest import record, stop_pid

OVERRIDES = {"epochs": 10, "batch_size": 16, "lr": 0.003, "patience": 100, "seed": 11,
             "model": {"objective": "bert4rec", "loss": "ce", "max_len": 20, "d_model": 32, "n_heads": 2,
                       "n_layers": 1, "mask_prob": 0.3}}
TOLERANCE = 0.02  # relative, on test ndcg@10


def _torchrun_cmd(features: Path, out: Path) -> list[str]:
    # exactly what shoprec.seqrec.launch.launch(nproc=2, max_restarts=2, overrides=OVERRIDES) runs
    from shoprec.seqrec.launch import torchrun_command

    return torchrun_command(features, out, nproc=2, max_restarts=2, overrides=OVERRIDES)


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    from shoprec.data.features import build_features
    from shoprec.data.ingest import ingest
    from shoprec.data.synth import synthesize

    root = tmp_path_factory.mktemp("ddp")
    synthesize(root / "shop", users=1200, items=80, days=4, seed=5)
    ingest(str(root / "shop"), root / "ingested", progress=False)
    build_features(root / "ingested", root / "features")
    return root / "features"


def _ckpt_epoch(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["state"]["epoch"]
    except Exception:  # not there yet, or being replaced
        return -1


def _workers(agent: psutil.Process) -> dict[int, int]:
    """rank -> pid of the training workers under the torchrun agent."""
    found = {}
    for p in agent.children(recursive=True):
        try:
            if "shoprec.seqrec.train" in " ".join(p.cmdline()):
                found[int(p.environ().get("RANK", "-1"))] = p.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.mark.faults
def test_killed_worker_is_restarted_and_training_resumes(features, tmp_path):
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    ref_out = tmp_path / "reference"
    ref = subprocess.run(_torchrun_cmd(features, ref_out), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_metrics = json.loads((ref_out / "metrics.json").read_text())

    out = tmp_path / "killed"
    log_path = tmp_path / "killed.log"
    with open(log_path, "wb") as log:
        agent_proc = subprocess.Popen(_torchrun_cmd(features, out), env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
    try:
        agent = psutil.Process(agent_proc.pid)
        last = out / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 300
        while _ckpt_epoch(last) < 1:
            assert agent_proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint for epoch 1"
            time.sleep(0.05)
        workers = _workers(agent)
        assert sorted(workers) == [0, 1], workers
        epoch_at_kill = _ckpt_epoch(last)
        assert epoch_at_kill < OVERRIDES["epochs"] - 1, "training finished before the kill; make epochs longer"
        os.kill(workers[1], signal.SIGKILL)  # a gloo worker dies mid-epoch
        killed_at = time.monotonic()
        try:
            rc = agent_proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            tree = [(c.pid, c.status(), " ".join(c.cmdline())[:80]) for c in agent.children(recursive=True)]
            pytest.fail(f"torchrun still running 240 s after the kill; processes {tree}\n"
                        + log_path.read_text(errors="replace")[-4000:])
    finally:
        children = []
        try:
            children = agent.children(recursive=True)
        except psutil.Error:
            pass
        stop_pid(agent_proc)
        for c in children:  # workers stuck in a rendezvous outlive their agent; stop them by PID
            try:
                c.kill()
            except psutil.NoSuchProcess:
                pass
    text = log_path.read_text(errors="replace")
    if rc != 0:
        record("ddp_killed_worker", faults_injected=1, outcome=f"FAILED: torchrun exited with {rc}",
               fault=f"SIGKILL of gloo worker rank 1 after checkpoint of epoch {epoch_at_kill}",
               gloo_mesh_failures_on_restart=text.count("connectFullMesh failed"),
               resumed=bool(re.search("resumed from", text)), lost="the training job (checkpoint kept)",
               seconds=round(time.perf_counter() - t0, 1))
    assert rc == 0, text[-3000:]
    assert not psutil.pid_exists(workers[1]) or psutil.Process(workers[1]).status() == psutil.STATUS_ZOMBIE

    resumed = [int(m) for m in re.findall(r"resumed from \S+ after epoch (\d+)", text)]
    assert resumed, "no 'resumed from' line: the restarted workers started from zero\n" + text[-3000:]
    assert resumed[0] >= epoch_at_kill  # the checkpoint on disk when we killed (or a later one)
    assert len(re.findall(r"epoch 0 loss", text)) == 1, "epoch 0 was trained twice"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(OVERRIDES["epochs"]))

    a, b = ref_metrics["test"]["ndcg@10"], metrics["test"]["ndcg@10"]
    rel = abs(b - a) / a
    record("ddp_killed_worker", faults_injected=1, outcome="passed", fault="SIGKILL of gloo worker rank 1 after checkpoint of epoch "
           f"{epoch_at_kill}", restarts=len(resumed), resumed_after_epoch=resumed[0],
           epochs=OVERRIDES["epochs"], epochs_lost=0, epochs_retrained=resumed[0] - epoch_at_kill,
           shoppers=metrics.get("sequences_per_s") and None, rows=None,
           reference_test_ndcg10=a, resumed_test_ndcg10=b, relative_difference=rel, tolerance=TOLERANCE,
           reference_test_hr10=ref_metrics["test"]["hr@10"], resumed_test_hr10=metrics["test"]["hr@10"],
           recovery_seconds=round(time.monotonic() - killed_at, 1), lost=0,
           seconds=round(time.perf_counter() - t0, 1))
    assert rel <= TOLERANCE, f"test ndcg@10 {b:.4f} after the kill vs {a:.4f} uninterrupted ({rel:.1%})"


N_FLOATS = 5_000_000
SAVER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from shoprec.trainer.loop import _save_atomic
    path, N = Path(sys.argv[1]), int(sys.argv[2])
    for version in range(1, 10**6):
        _save_atomic({"version": torch.tensor(version), "w": torch.full((N,), float(version))}, path)
        print(version, flush=True)
""")


@pytest.mark.faults
def test_kill_during_checkpoint_write_leaves_previous_usable(tmp_path):
    """SIGKILL a process while ``.last.pt.tmp`` is being written; ``last.pt`` must still load, untorn."""
    t0 = time.perf_counter()
    path, tmp = tmp_path / "last.pt", tmp_path / ".last.pt.tmp"
    rng = random.Random(0)
    kills, mid_write = 0, 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(N_FLOATS)], stdout=subprocess.PIPE, text=True)
        try:
            proc.stdout.readline()  # at least one complete checkpoint exists
            time.sleep(rng.uniform(0.0, 0.3))
            deadline = time.monotonic() + 10
            while not tmp.exists() and time.monotonic() < deadline:  # catch it in the middle of torch.save
                pass
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
        finally:
            stop_pid(proc)
        mid_write += tmp.exists()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        v = int(ckpt["version"])
        assert v >= 1 and torch.equal(ckpt["w"], torch.full((N_FLOATS,), float(v))), "torn checkpoint"
        tmp.unlink(missing_ok=True)
    assert mid_write >= kills // 2, f"only {mid_write} of {kills} kills landed during a write"
    record("checkpoint_kill_during_write", faults_injected=kills, kills_during_write=mid_write,
           checkpoints_checked=kills, torn_checkpoints=0, lost=0, seconds=round(time.perf_counter() - t0, 1))


@pytest.mark.faults
def test_resume_ignores_partial_tmp_checkpoint(features, tmp_path, caplog):
    """A kill during torch.save leaves ``.last.pt.tmp`` half written: resume loads ``last.pt`` and goes on."""
    from shoprec.seqrec.train import TrainConfig, train

    t0 = time.perf_counter()
    over = {**OVERRIDES, "epochs": 2, "model": dict(OVERRIDES["model"])}
    out = tmp_path / "model"
    train(features, out, TrainConfig.from_dict(over), progress=False)
    last = out / "checkpoints" / "last.pt"
    good = last.read_bytes()
    (last.parent / ".last.pt.tmp").write_bytes(good[: len(good) // 2])  # what a kill mid-write leaves
    with caplog.at_level(logging.INFO, logger="shoprec.trainer.loop"):  # the shared loop logs the resume
        summary = train(features, out, TrainConfig.from_dict({**over, "epochs": 3}), progress=False)
    assert any(re.search(r"resumed from .* after epoch 1", r.getMessage()) for r in caplog.records)
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    assert _ckpt_epoch(last) == 2
    assert not (last.parent / ".last.pt.tmp").exists()  # replaced by the next complete write
    record("checkpoint_partial_tmp_resume", faults_injected=1, epochs_before=2, resumed_after_epoch=1,
           epochs_after=3, lost=0, seconds=round(time.perf_counter() - t0, 1))
