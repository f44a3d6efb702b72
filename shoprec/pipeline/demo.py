"""``make demo``: the whole pipeline on the built-in shop, then the server on the new champion, asked once."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import httpx

from shoprec.pipeline.processes import stop
from shoprec.pipeline.runner import run_local
from shoprec.registry import versions as registry


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            r = httpx.get(f"{url}/healthz", timeout=2.0)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no healthy answer from {url}/healthz within {timeout:.0f} s")


ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_EVENT = re.compile(r"(Executing task|Task) '([^']+)'(?: finished with status (\w+))?")


def step_events(line: str) -> tuple[str, str] | None:
    """(task, "started" or its final status) from one line of kfp.local's log, else None."""
    m = TASK_EVENT.search(ANSI.sub("", line))
    if not m or (m.group(1) == "Task" and not m.group(3)):
        return None
    return m.group(2), "started" if m.group(1) == "Executing task" else m.group(3)


def _follow(path: Path, out, stop: threading.Event) -> None:
    """Print one line per step to ``out`` as the log at ``path`` says it starts (a repeated step once)."""
    seen: set[str] = set()
    with open(path) as log:
        while True:
            line = log.readline()
            if not line:
                if stop.is_set():
                    return
                time.sleep(0.2)
                continue
            event = step_events(line)
            if event and event[1] == "started" and event[0] not in seen:
                seen.add(event[0])
                print(f"   step: {event[0]}", file=out, flush=True)
            elif event and event[1] not in ("started", "SUCCESS"):
                print(f"   step {event[0]}: {event[1]}", file=out, flush=True)


@contextmanager
def steps_only(log_path: Path):
    """Every step's own output (executor inputs, bars, library warnings) goes to ``log_path``; the console gets
    one line per step. On a failure the log's last lines are shown too."""
    console = sys.stdout
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as log:
        stop = threading.Event()
        follower = threading.Thread(target=_follow, args=(log_path, console, stop), daemon=True)
        follower.start()
        root = logging.getLogger()
        saved = root.handlers[:]
        root.handlers = [logging.StreamHandler(log)]  # the runner's and kfp's own log lines too
        try:
            with redirect_stdout(log), redirect_stderr(log):
                yield
        except BaseException:
            stop.set()
            follower.join()
            tail = log_path.read_text().splitlines()[-30:]
            print("\n".join(["the pipeline failed; the end of its log:", *tail]), file=console)
            raise
        finally:
            root.handlers = saved
            _drop_handlers_on(log)
        stop.set()
        follower.join()


def _drop_handlers_on(stream) -> None:
    """Logging handlers that libraries set up while output went to ``stream`` would write to it once closed."""
    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in list(lg.handlers):
            if getattr(h, "stream", None) is stream:
                lg.removeHandler(h)


def batch_line(recs: dict | None) -> str:
    """The demo's line about the night's batch recommendations (a committed manifest, or None)."""
    if not recs:
        return "batch: no recommendations were committed for tonight (see the pipeline log)"
    return (f"batch: {recs['shoppers']} shoppers got their top-{recs['k']} ({recs['rows']} rows, {recs['shards']} "
            f"shards, {recs['model_name']} v{recs['version']}, {recs['date']}) written to {recs['uri']}")


def run_demo(port: int = 8765, model_name: str = "shoprec-seqrec") -> dict:
    say = print
    log_path = registry.shoprec_home() / "demo-pipeline.log"
    say("== 1/2  retrain pipeline (kfp.local): ingest -> features -> train -> evaluate -> register -> deploy "
        f"-> promote -> batch recommendations -> notify\n   (each step's own output: {log_path})")
    with steps_only(log_path):
        result = run_local(model_name=model_name)
    cand = result["candidate"]["ndcg@10"]
    say(f"candidate  NDCG@10 {cand:.4f}   HR@10 {result['candidate']['hr@10']:.4f}")
    say(f"popularity NDCG@10 {result['popularity_ndcg@10']:.4f}")
    if result["champion_ndcg@10_before"] is not None:
        say(f"champion   NDCG@10 {result['champion_ndcg@10_before']:.4f} (before this run)")
    verdict = "PROMOTED" if result["promoted"] else "KEPT the champion"
    say(f"decision: {verdict} (v{result['registered_version']} registered; champion is v{result['champion_version']})"
        f" because {result['reason']}")
    rk = result["ranker"]
    say(f"ranker v{rk['registered_version']}: click AUC {rk['candidate']['auc']:.4f}, log-loss "
        f"{rk['candidate']['logloss']:.4f}, search NDCG@10 {rk['candidate']['search_ndcg@10']:.4f}; "
        f"champion ranker is v{rk['champion_version']} ({rk['reason']})")
    say(batch_line(result.get("batch")))
    say(f"MLflow: {result['tracking_uri']}  (mlflow ui --backend-store-uri {result['tracking_uri']})")

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is the server log's job
    server_log = registry.shoprec_home() / "demo-server.log"
    say(f"== 2/2  serving models:/{model_name}@champion on http://127.0.0.1:{port} (its log: {server_log})")
    with open(server_log, "w") as quiet, redirect_stderr(quiet):  # the download's progress bars
        model_dir, _ = registry.download_model_dir(model_name, "champion")
    import pyarrow.parquet as pq

    users = pq.read_table(model_dir / "histories.parquet")
    user, history = users["user_id"][0].as_py(), users["items"][0].as_py()
    proc = subprocess.Popen([sys.executable, "-m", "shoprec.cli", "serve", "--model", f"models:/{model_name}@champion",
                             "--ranker", f"models:/{rk['name']}@champion", "--port", str(port)],
                            env={**os.environ, "MLFLOW_TRACKING_URI": result["tracking_uri"]},
                            stdout=open(server_log, "a"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        health = wait_healthy(url, proc)
        r = httpx.post(f"{url}/v1/recommend", json={"user_id": user, "k": 10}, timeout=10.0)
        r.raise_for_status()
        answer = r.json()
        query = " ".join(answer["items"][0]["title"].split()[1:3])
        found = httpx.post(f"{url}/v1/search", json={"query": query, "k": 5, "rerank_depth": 20}, timeout=30.0)
        found.raise_for_status()
    finally:
        stop(proc)
    import pyarrow.parquet as pq2

    titles = pq2.read_table(model_dir / "items.parquet").column("title").to_pylist()
    recent = ", ".join(titles[i - 1] for i in history[-3:])
    say(f"server: {health['model']} v{health['version']}; POST /v1/recommend {{\"user_id\": \"{user}\", \"k\": 10}}")
    say(f"shopper {user} recently: {recent}")
    for rank, item in enumerate(answer["items"], start=1):
        say(f"  {rank:2d}. {item['item_id']}  {item['title']:<34s} score {item['score']:.3f}")
    say(f'POST /v1/search {{"query": "{query}", "k": 5}} (BM25 + bi-encoder candidates, re-ranked with the LoRA MiniLM cross-encoder):')
    for rank, item in enumerate(found.json()["items"], start=1):
        say(f"  {rank:2d}. {item['item_id']}  {item['title']:<34s} score {item['score']:.3f}")
    return {"pipeline": result, "answer": answer, "search": found.json()}
