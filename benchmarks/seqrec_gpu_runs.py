"""The Beauty runs that wait for a GPU (issue 24 item 1), as fixed in ``benchmarks/seqrec_gpu_plan.json``.

The plan (revised on 2026-12-05, before any run) trains every candidate recipe at seeds 1, 2 and 3: 4 x 3 = 12 runs,
all at once on one GPU, each with a wall-clock budget of the plan's ``max_elapsed_minutes`` (7) of epochs, so that
the whole plan fits ONE 10-minute device command. The candidate with the highest MEAN validation NDCG@10 over its
three seeds is adopted (test figures play no part), and its three seeds' mean test figures are the single-model
figure; the other candidates are exploratory rows.

Here (no GPU needed), once:

    .venv/bin/python benchmarks/seqrec_gpu_runs.py prepare        # Beauty.txt -> .gpu-beauty/prep/features (3.4 MB)
    .venv/bin/python benchmarks/seqrec_gpu_runs.py commands       # every run's torchrun command (run --parallel
                                                                  # adds its own port and CPU threads)

On the device machine (its ``python3`` has torch, pandas, pyarrow, pyyaml; the repository there is the session's
checkout, so this file and the plan must be committed there), in one command, carrying the features:

    run(command="PYTHONUNBUFFERED=1 python3 benchmarks/seqrec_gpu_runs.py run --parallel 12 --python python3 --copy-to $OUT --copy-checkpoints",
        carry=[".gpu-beauty/prep/features"], timeout_s=600)

(the machine's start, a minute or two, comes on top of the 600 s: 15 device minutes leave no room for a second
machine, so check here first that ``commands`` prints 12 runs and that ``.gpu-beauty/prep/features`` is there)
then here, where FILES_AT is the folder the reply names (``files_at``):

    .venv/bin/python benchmarks/seqrec_gpu_runs.py fetch FILES_AT   # -> .gpu-beauty/NAME/{metrics,run}.json
    .venv/bin/python benchmarks/seqrec_gpu_runs.py select           # the plan's rule on the runs' validation
    .venv/bin/python benchmarks/seqrec_gpu_runs.py merge            # -> benchmarks/results/seqrec-beauty.json

What comes back: a device call returns at most 8 files from $OUT (16 MiB each, 64 MiB together, at most two
folders down), so ``--copy-to`` writes ONE file for all the runs, ``$OUT/seqrec-gpu-runs.json`` (each run's
``metrics.json`` and ``run.json``, and the end of its ``train.log`` when it failed), rewritten as each run ends, so
that the finished runs come back even if the command is stopped at its limit. With ``--copy-checkpoints``, a run
that its budget stopped also sends back ``$OUT/NAME.ckpt.tar.gz`` (its last and best checkpoints), in plan order
while the limits allow: the d 64 bsarec.yaml runs' come to about 13 MiB (ids only) and 15-16 MiB (with attributes,
which may not fit), the d 256 ones' to about 80 MiB, which stay there; so at most 4 runs a call can go on elsewhere. To go on with such a run on the next machine: ``fetch`` (it unpacks the
tar into ``.gpu-beauty/NAME/checkpoints``), then carry ``.gpu-beauty/NAME`` too and run
``run --only NAME --continue-stopped`` (``--only``: a run not carried would otherwise be trained afresh). A run
that failed is run again alone, ``run --only NAME``, on a later machine: ``select`` waits for every run.

``run`` trains the plan's runs (``--only`` narrows them), one after another by default or up to ``--parallel N``
at once; each is ``python -m torch.distributed.run --rdzv-endpoint=127.0.0.1:PORT ... -m shoprec.seqrec.train
--out .gpu-beauty/NAME`` with the candidate's recipe and the plan's overrides plus the run's seed (and, in
parallel, ``threads`` and ``OMP_NUM_THREADS`` of the CPU cores // N), its own free rendezvous port, and its output
in ``.gpu-beauty/NAME/train.log`` (echoed when sequential). A run that fails does not stop the others; ``run``
exits with an error naming the failed runs once all have ended. A run whose ``metrics.json`` is there with the
same configuration is not run again, an unfinished one resumes from its checkpoint. Each run folder gets
``run.json`` (the command, the device, the start and the wall time). ``select`` writes ``.gpu-beauty/selection.json``;
``merge`` (which applies the same rule) adds every finished run as a model row ``gpu-NAME``, the adopted
candidate's three seeds' mean as ``seed_means["gpu-adopted"]`` and each other candidate's as
``seed_means["gpu-exploratory-CANDIDATE"]`` through ``benchmarks/seqrec.py --merge-only --also ...`` (the command
goes in the JSON), with the plan, its revision and the choice as a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PLAN = REPO / "benchmarks" / "seqrec_gpu_plan.json"
BEAUTY = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"
# What comes back from a device call: at most 8 files under $OUT, 16 MiB each, 64 MiB together, two folders down at
# most (/work/.library/device/README.md). All the runs' small files go in one JSON; checkpoint tars take the rest.
RETURNED = "seqrec-gpu-runs.json"
RETURN_FILES, RETURN_LIMIT, RETURN_TOTAL = 8, 16 * 2**20, 64 * 2**20
COPIED = ("metrics.json", "run.json")  # each run's files in RETURNED
# --copy-checkpoints: what a stopped run needs to go on on the next machine, flattened into NAME.ckpt.tar.gz
CHECKPOINT_FILES = {"last.pt": "checkpoints/last.pt", "best-model.safetensors": "checkpoints/best/model.safetensors",
                    "best-config.json": "checkpoints/best/config.json"}
LOG_TAIL = 4000  # characters of a failed run's train.log in RETURNED


def log(msg: str) -> None:
    print(f"[seqrec-gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def plain_name(name: str) -> bool:
    return bool(name) and name.replace("-", "").replace("_", "").replace(".", "").isalnum()


def load_plan(path: str | Path = PLAN) -> dict:
    """The plan, checked (unique plain candidate names, int seeds, recipes that load with their overrides, distinct
    configurations), with ``runs``: every candidate at every seed, named ``CANDIDATE-seedN``, candidate by candidate."""
    plan = json.loads(Path(path).read_text())
    for key in ("features", "root", "candidates", "seeds", "selection_rule"):
        if key not in plan:
            raise ValueError(f"{path}: no {key!r}")
    names = [c.get("name") for c in plan["candidates"]]
    if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and plain_name(n) for n in names):
        raise ValueError(f"{path}: candidate names must be unique, letters, digits, '-', '_' and '.' only: {names}")
    seeds = plan["seeds"]
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"{path}: seeds must be distinct ints: {seeds}")
    plan["runs"] = [{"name": f"{c['name']}-seed{s}", "candidate": c["name"], "recipe": c["recipe"],
                     "overrides": c.get("overrides", {}), "seed": s} for c in plan["candidates"] for s in seeds]
    configs = [json.dumps(comparable(training_config(plan, r)), sort_keys=True)  # the recipe loads with the overrides
               for r in plan["runs"] if r["seed"] == seeds[0]]
    if len(set(configs)) != len(configs):
        raise ValueError(f"{path}: two candidates are the same configuration")
    return plan


def candidate_runs(plan: dict, candidate: str) -> list[dict]:
    return [r for r in plan["runs"] if r["candidate"] == candidate]


def overrides_of(plan: dict, run: dict, threads: int | None = None) -> tuple[str, dict]:
    """The recipe and the full overrides (plan's common ones, the candidate's, its seed; ``threads`` when given)."""
    from shoprec.seqrec.train import merge_overrides

    extra = {"seed": run["seed"]} | ({"threads": threads} if threads else {})
    return run["recipe"], merge_overrides(plan.get("common_overrides", {}), run.get("overrides", {}), extra)


def training_config(plan: dict, run: dict) -> dict:
    from shoprec.seqrec.train import load_recipe

    recipe, overrides = overrides_of(plan, run)
    return asdict(load_recipe(REPO / recipe, **json.loads(json.dumps(overrides))))


def comparable(config: dict) -> dict:
    """A run's configuration less what training fills in from the data and the CPU threads."""
    from shoprec.seqrec.ensemble import SET_BY_TRAINING

    return {**{k: v for k, v in config.items() if k != "threads"},
            "model": {k: v for k, v in config["model"].items() if k not in SET_BY_TRAINING}}


def run_command(plan: dict, run: dict, python: str = sys.executable, features: str | None = None,
                root: str | None = None, port: int | None = None, threads: int | None = None) -> list[str]:
    """The exact torchrun command of one run (relative paths: it runs in the repository root). ``port``: its own
    rendezvous on 127.0.0.1 (runs side by side); without it, ``--standalone``."""
    recipe, overrides = overrides_of(plan, run, threads)
    out = Path(root or plan["root"]) / run["name"]
    rdzv = (["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run['name']}"]
            if port else ["--standalone"])
    return [python, "-m", "torch.distributed.run", *rdzv, "--nnodes=1",
            f"--nproc_per_node={plan.get('nproc', 1)}", "--max-restarts=0", "-m", "shoprec.seqrec.train",
            "--features", str(features or plan["features"]), "--out", str(out), "--recipe", recipe,
            "--overrides", json.dumps(overrides, sort_keys=True)]


def finished(folder: Path) -> dict | None:
    f = folder / "metrics.json"
    return json.loads(f.read_text()) if f.exists() else None


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def stopped_for_time(m: dict, folder: Path) -> bool:
    """A finished run that its wall-clock budget stopped and that can go on from its checkpoint."""
    return m.get("stopped_by") == "max_elapsed_minutes" and (folder / "checkpoints" / "last.pt").exists()


class Ports:
    """Free TCP ports on 127.0.0.1, each handed out once (runs side by side each get their own rendezvous)."""

    def __init__(self):
        self.given: set[int] = set()
        self.lock = threading.Lock()

    def take(self) -> int:
        with self.lock:
            while True:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                if port not in self.given:
                    self.given.add(port)
                    return port


def execute(plan: dict, runs: list[dict], python: str, root: Path, features: str, copy_to: Path | None,
            allow_cpu: bool, continue_stopped: bool = False, copy_checkpoints: bool = False,
            parallel: int = 1) -> list[str]:
    """Train ``runs``, up to ``parallel`` at once (each its own torchrun, port, CPU threads and ``train.log``);
    returns the names trained or found finished. A failed run does not stop the others: once all have ended, a
    ``SystemExit`` names the failures. ``continue_stopped``: a run its wall-clock budget stopped goes on from its
    checkpoint (with a fresh budget) instead of counting as done."""
    import torch

    if not torch.cuda.is_available() and not allow_cpu:
        raise SystemExit("no GPU here: these runs are for a device machine (--allow-cpu to run them anyway)")
    if not (Path(features) / "sequences.parquet").exists():
        raise SystemExit(f"{features}: no features (run `seqrec_gpu_runs.py prepare` here and carry them)")
    if parallel < 1:
        raise SystemExit("--parallel: at least 1")
    threads = max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else None
    device = device_name()
    todo = []
    for run in runs:
        folder = root / run["name"]
        want = comparable(training_config(plan, run))
        have = finished(folder)
        go_on = have is not None and continue_stopped and stopped_for_time(have, folder)
        if have is not None and comparable(have["config"]) == want and not go_on:
            log(f"{run['name']}: finished earlier in {folder}, not run again")
            continue
        if go_on and comparable(have["config"]) == want:
            log(f"{run['name']}: stopped by its wall-clock budget after {have['epochs_run']} epochs; going on")
            (folder / "metrics.json").unlink()
        elif have is not None:
            log(f"{run['name']}: {folder} holds a run of another configuration; moving it aside")
            shutil.move(str(folder), str(folder) + f".old-{int(time.time())}")
        todo.append(run)

    ports, lock, failed = Ports(), threading.Lock(), {}
    names = [r["name"] for r in runs]
    if copy_to is not None:
        copy_back(root, names, copy_to)

    def one(run: dict) -> None:
        try:
            rc = train_one(plan, run, python, root, features, ports.take(), threads, parallel, device)
            if rc == 0 and finished(root / run["name"]) is None:
                rc = "exited 0 without metrics.json"
        except Exception as e:  # noqa: BLE001 - one run's trouble (no interpreter, say) is its own
            rc = f"{type(e).__name__}: {e}"
        with lock:
            if rc != 0:
                failed[run["name"]] = rc
                log(f"{run['name']}: failed ({rc}); see {root / run['name'] / 'train.log'}")
            if copy_to is not None:
                copy_back(root, names, copy_to)

    if todo:
        log(f"{len(todo)} runs to train, {min(parallel, len(todo))} at a time"
            + (f", {threads} CPU threads each" if threads else ""))
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for f in [pool.submit(one, r) for r in todo]:
            f.result()
    done = []
    for run in runs:
        m = finished(root / run["name"])
        if m is None:
            continue
        log(f"{run['name']}: valid ndcg@10 {m['valid']['ndcg@10']:.4f}, test ndcg@10 {m['test']['ndcg@10']:.4f} "
            f"hr@10 {m['test']['hr@10']:.4f}, best epoch {m['best_epoch']} of {m['epochs_run']} "
            f"({m.get('stopped_by', '?')})")
        done.append(run["name"])
    if copy_to is not None and copy_checkpoints:
        copy_checkpoint_tars(root, [r["name"] for r in runs if r["name"] in done], copy_to)
    if failed:
        raise SystemExit(f"{len(failed)} of {len(todo)} runs failed (torchrun's exit status, or why): {failed}")
    return done


def train_one(plan: dict, run: dict, python: str, root: Path, features: str, port: int, threads: int | None,
              parallel: int, device: str) -> int:
    """One run's torchrun, its output into ``NAME/train.log`` (echoed on stderr when runs go one at a time), then
    ``NAME/run.json``; returns torchrun's exit status."""
    import torch

    folder = root / run["name"]
    cmd = run_command(plan, run, python, features, str(root), port, threads)
    log(f"{run['name']}: {shlex.join(cmd)}")
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started, t0 = time.time(), time.perf_counter()
    with open(folder / "train.log", "a") as logf:
        if parallel == 1:
            p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in p.stdout:
                sys.stderr.write(line)
                logf.write(line)
        else:
            p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT)
        rc = p.wait()
    recipe, overrides = overrides_of(plan, run, threads)
    record = {"name": run["name"], "candidate": run["candidate"], "seed": run["seed"], "command": shlex.join(cmd),
              "recipe": recipe, "overrides": overrides, "device": device, "torch": torch.__version__,
              "returncode": rc, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
              "start_time": round(started, 3), "wall_seconds": round(time.perf_counter() - t0, 1),
              "parallel": parallel, "plan": "benchmarks/seqrec_gpu_plan.json",
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if (folder / "run.json").exists():  # an earlier attempt (stopped by its budget, or failed)
        earlier = json.loads((folder / "run.json").read_text())
        record["earlier_attempts"] = earlier.pop("earlier_attempts", []) + [earlier]
    (folder / "run.json").write_text(json.dumps(record, indent=2) + "\n")
    return rc


def copy_back(root: Path, names: list[str], copy_to: Path) -> Path:
    """``copy_to/RETURNED`` (a device's $OUT: what comes back): for each of ``names`` that has run, its
    ``metrics.json`` and ``run.json`` (None where absent), and the end of its ``train.log`` when it has no metrics.
    Written whole through a temporary file, so a command stopped at its limit leaves the last complete one."""
    runs = {}
    for name in names:
        folder = root / name
        if not any((folder / f).exists() for f in COPIED):
            continue
        entry = {f.removesuffix(".json"): json.loads((folder / f).read_text()) if (folder / f).exists() else None
                 for f in COPIED}
        if entry["metrics"] is None and (folder / "train.log").exists():
            entry["log_tail"] = (folder / "train.log").read_text(errors="replace")[-LOG_TAIL:]
        runs[name] = entry
    copy_to.mkdir(parents=True, exist_ok=True)
    out = copy_to / RETURNED
    tmp = copy_to / (RETURNED + ".tmp")
    tmp.write_text(json.dumps({"runs": runs, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    tmp.replace(out)
    return out


def copy_checkpoint_tars(root: Path, names: list[str], copy_to: Path) -> list[str]:
    """``copy_to/NAME.ckpt.tar.gz`` (:data:`CHECKPOINT_FILES`, flattened) for each of ``names`` that its budget
    stopped, in order, while what comes back stays within the limits (files, size of each, size together); returns
    the names sent. The others stay on the machine (logged): they cannot go on elsewhere."""
    used = [f for f in copy_to.iterdir() if f.is_file()] if copy_to.exists() else []
    count, total, sent = len(used), sum(f.stat().st_size for f in used), []
    for name in names:
        folder = root / name
        m = finished(folder)
        if m is None or not stopped_for_time(m, folder):
            continue
        files = {flat: folder / path for flat, path in CHECKPOINT_FILES.items()}
        missing = [str(f) for f in files.values() if not f.exists()]
        if missing or count + 1 > RETURN_FILES:
            log(f"{name}: checkpoints stay here ({'missing: ' + ', '.join(missing) if missing else 'no file left'}); "
                "the run cannot go on elsewhere")
            continue
        tar = copy_to / f"{name}.ckpt.tar.gz"
        with tarfile.open(tar, "w:gz", compresslevel=1) as t:
            for flat, f in files.items():
                t.add(f, arcname=flat)
        size = tar.stat().st_size
        if size > RETURN_LIMIT or total + size > RETURN_TOTAL:
            tar.unlink()
            log(f"{name}: checkpoints stay here ({size / 2**20:.1f} MiB: over 16 MiB, or over 64 MiB with the "
                f"{total / 2**20:.1f} MiB before it); the run cannot go on elsewhere")
            continue
        count, total = count + 1, total + size
        sent.append(name)
    return sent


def fetch(src: Path, root: Path) -> list[str]:
    """What a device call sent back (``src``, its files_at): each run of ``src/RETURNED`` into ``root/NAME/``
    (``metrics.json``, ``run.json``), and each ``src/NAME.ckpt.tar.gz`` unpacked into ``root/NAME/checkpoints/``
    (carry ``.gpu-beauty/NAME`` to go on with the run). Returns the runs' names."""
    if not (src / RETURNED).exists():
        raise SystemExit(f"{src}: no {RETURNED} (run with --copy-to $OUT)")
    got = []
    for name, entry in json.loads((src / RETURNED).read_text())["runs"].items():
        if not plain_name(name):
            raise SystemExit(f"{src / RETURNED}: odd run name {name!r}")
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in COPIED:
            if entry.get(f.removesuffix(".json")) is not None:
                (root / name / f).write_text(json.dumps(entry[f.removesuffix(".json")], indent=2) + "\n")
        if entry.get("log_tail"):
            (root / name / "train-log-tail.txt").write_text(entry["log_tail"])
        tar = src / f"{name}.ckpt.tar.gz"
        if tar.exists():
            with tarfile.open(tar) as t:
                for flat, path in CHECKPOINT_FILES.items():
                    data = t.extractfile(flat).read()
                    (root / name / path).parent.mkdir(parents=True, exist_ok=True)
                    (root / name / path).write_bytes(data)
        got.append(name)
    return got


def select(plan: dict, root: Path) -> dict:
    """The plan's rule: the candidate with the highest mean, over its seeds, of the best-epoch validation NDCG@10
    (ties: first listed). Reads no test figure. Writes and returns ``root/selection.json``."""
    missing = [r["name"] for r in plan["runs"] if finished(root / r["name"]) is None]
    if missing:
        raise SystemExit(f"runs not finished yet: {missing}")
    table = {}
    for c in plan["candidates"]:
        runs = {}
        for r in candidate_runs(plan, c["name"]):
            m = finished(root / r["name"])
            if comparable(m["config"]) != comparable(training_config(plan, r)):
                raise SystemExit(f"{root / r['name']} was trained with another configuration than the plan's {r['name']}")
            runs[r["name"]] = {"seed": r["seed"], "valid_ndcg@10": m["valid"]["ndcg@10"], "best_epoch": m["best_epoch"],
                               "epochs_run": m["epochs_run"], "stopped_by": m.get("stopped_by")}
        table[c["name"]] = {"mean_valid_ndcg@10": sum(v["valid_ndcg@10"] for v in runs.values()) / len(runs), "runs": runs}
    order = [c["name"] for c in plan["candidates"]]
    best = max(order, key=lambda n: (table[n]["mean_valid_ndcg@10"], -order.index(n)))
    chosen = next(c for c in plan["candidates"] if c["name"] == best)
    selection = {"rule": plan["selection_rule"], "revised": plan.get("revised"), "candidates": table, "chosen": best,
                 "recipe": chosen["recipe"], "overrides": chosen.get("overrides", {}),
                 "runs": [r["name"] for r in candidate_runs(plan, best)]}
    (root / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    return selection


def merge_command(plan: dict, root: Path, out: str, python: str = sys.executable) -> list[str]:
    """``benchmarks/seqrec.py --merge-only`` with every finished run of the plan (``--also PREFIX-NAME=FOLDER``,
    PREFIX the plan's ``row_prefix``, gpu by default, its note's first words the plan's ``title``), and, once all
    runs are there, the plan's choice (:func:`select`): the adopted candidate's seed mean as ``PREFIX-adopted``,
    each other one's as ``PREFIX-exploratory-CANDIDATE``, and the plan, its revision and the choice as a note."""
    prefix = plan.get("row_prefix", "gpu")  # a CPU plan's rows are cpu-NAME
    adopted = f"{prefix}-adopted"
    rel = root.relative_to(REPO) if root.is_absolute() and root.is_relative_to(REPO) else root
    cmd = [python, "benchmarks/seqrec.py", "--merge-only", "--out", out]
    runs = [r for r in plan["runs"] if finished(root / r["name"]) is not None]
    if not runs:
        raise SystemExit(f"no finished run under {root}")
    for r in runs:
        cmd += ["--also", f"{prefix}-{r['name']}={rel / r['name']}"]
    selection = select(plan, root) if len(runs) == len(plan["runs"]) else None
    title = plan.get("title", "GPU runs of benchmarks/seqrec_gpu_plan.json")
    note = (f"{title} (seqrec_gpu_runs.py; each row's trained_by holds its command and device), revised "
            f"{plan.get('revised', '(never)')} Rule, fixed before the runs: {plan['selection_rule']}")
    if selection:
        for c in plan["candidates"]:
            key = adopted if c["name"] == selection["chosen"] else f"{prefix}-exploratory-{c['name']}"
            cmd += ["--seed-mean", key + "=" + ",".join(f"{prefix}-{r['name']}" for r in candidate_runs(plan, c["name"]))]
        note += " Mean validation NDCG@10 over the seeds: " + "; ".join(
            f"{k} {v['mean_valid_ndcg@10']:.4f} (" + ", ".join(
                f"seed {r['seed']} {r['valid_ndcg@10']:.4f} {r['stopped_by']}" for r in v['runs'].values()) + ")"
            for k, v in selection["candidates"].items())
        note += (f"; adopted: {selection['chosen']} ({selection['recipe']}, overrides "
                 f"{json.dumps(selection['overrides'])}): seed_means['{adopted}'] is the single-model figure, the "
                 f"other candidates (seed_means['{prefix}-exploratory-*'] and their rows) are exploratory.")
    else:
        missing = [r["name"] for r in plan["runs"] if r not in runs]
        note += f" Not all runs finished ({missing}): no choice made, every row here is exploratory."
    return cmd + ["--note", note]


def prepare(data: Path, root: Path) -> Path:
    """Beauty.txt and its attributes -> ``root/prep/features`` through the shop's own import (as seqrec.py does)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_seqrec", REPO / "benchmarks" / "seqrec.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.prepare(data, root / "prep")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["prepare", "commands", "run", "fetch", "select", "merge"])
    ap.add_argument("source", nargs="?", help="fetch: the folder the device call's files came back in")
    ap.add_argument("--plan", default=str(PLAN))
    ap.add_argument("--root", default=None, help="run folders (default: the plan's root, .gpu-beauty)")
    ap.add_argument("--features", default=None, help="default: the plan's features")
    ap.add_argument("--data", default=str(BEAUTY), help="prepare: Beauty.txt (attributes beside it)")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="these runs only (CANDIDATE-seedN)")
    ap.add_argument("--parallel", type=int, default=1, metavar="N",
                    help="run: up to N runs at once, each its own torchrun, port and cores // N CPU threads "
                         "(default 1: one after another; the plan's one-shot device command uses 12)")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the commands (python3 on a device)")
    ap.add_argument("--copy-to", default=None, help=f"run: write every run's metrics.json and run.json into one "
                                                    f"{RETURNED} here ($OUT), as each run ends")
    ap.add_argument("--allow-cpu", action="store_true", help="run: train without a GPU (smoke tests)")
    ap.add_argument("--continue-stopped", action="store_true",
                    help="run: a run its wall-clock budget stopped goes on from its checkpoint (carry its folder)")
    ap.add_argument("--copy-checkpoints", action="store_true",
                    help="run: with --copy-to, budget-stopped runs' checkpoints come back too, as NAME.ckpt.tar.gz, "
                         "while $OUT's limits allow (d 64 runs only, 4 at most)")
    ap.add_argument("--out", default="benchmarks/results/seqrec-beauty.json", help="merge: the result file")
    ap.add_argument("--dry-run", action="store_true", help="merge: print the command, run nothing")
    a = ap.parse_args(argv)

    plan = load_plan(a.plan)
    root = Path(a.root or plan["root"])
    root = root if root.is_absolute() else REPO / root
    features = a.features or plan["features"]
    runs = [r for r in plan["runs"] if not a.only or r["name"] in a.only]
    unknown = set(a.only) - {r["name"] for r in plan["runs"]}
    if unknown:
        raise SystemExit(f"--only: no such run in the plan: {sorted(unknown)}")

    if a.action == "prepare":
        log(f"features in {prepare(Path(a.data), root)}")
    elif a.action == "commands":
        for r in runs:
            print(f"# {r['name']} (candidate {r['candidate']}, seed {r['seed']})")
            print(shlex.join(run_command(plan, r, a.python, features, a.root or plan["root"])))
    elif a.action == "run":
        execute(plan, runs, a.python, root, features, Path(a.copy_to) if a.copy_to else None, a.allow_cpu,
                a.continue_stopped, a.copy_checkpoints, a.parallel)
    elif a.action == "fetch":
        if not a.source:
            raise SystemExit("fetch: name the folder the device's files came back in")
        log(f"fetched {fetch(Path(a.source), root)} into {root}")
    elif a.action == "select":
        s = select(plan, root)
        log(f"adopted {s['chosen']}: " + ", ".join(f"{k} {v['mean_valid_ndcg@10']:.4f}" for k, v in s["candidates"].items()))
    elif a.action == "merge":
        cmd = merge_command(plan, root, a.out, a.python)
        print(shlex.join(cmd))
        if not a.dry_run:
            subprocess.run(cmd, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
