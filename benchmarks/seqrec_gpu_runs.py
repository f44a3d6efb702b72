"""The Beauty runs that wait for a GPU (issue 24 item 1), as fixed in ``benchmarks/seqrec_gpu_plan.json``.

Here (no GPU needed), once:

    .venv/bin/python benchmarks/seqrec_gpu_runs.py prepare        # Beauty.txt -> .gpu-beauty/prep/features (3.4 MB)
    .venv/bin/python benchmarks/seqrec_gpu_runs.py commands       # the exact torchrun command of every run

On the device machine (its ``python3`` has torch, pandas, pyarrow, pyyaml; the repository there is the main
checkout, so this file must be committed on it), one or two runs per command, each with a wall-clock budget of the
plan's ``max_elapsed_minutes``; carry the features:

    run(command="PYTHONUNBUFFERED=1 python3 benchmarks/seqrec_gpu_runs.py run --only bsarec-seed0 --python python3
                 --copy-to $OUT", carry=[".gpu-beauty/prep/features"], timeout_s=600)

then here:

    .venv/bin/python benchmarks/seqrec_gpu_runs.py fetch FILES_AT   # $OUT's NAME/{metrics,run}.json -> .gpu-beauty/NAME/

A run that its budget stopped (``stopped_by: max_elapsed_minutes``) can go on on the next machine: run it with
``--copy-checkpoints`` (its checkpoint files come back when each is under 16 MiB: the d 64 bsarec.yaml runs, not the
d 256 ones), ``fetch`` them, then carry ``.gpu-beauty/NAME`` too and run it with ``--continue-stopped``.
    .venv/bin/python benchmarks/seqrec_gpu_runs.py select           # the plan's rule on the select runs' validation
    .venv/bin/python benchmarks/seqrec_gpu_runs.py run --stage confirm ...   # on the device again, seeds 1-3
    .venv/bin/python benchmarks/seqrec_gpu_runs.py merge            # -> benchmarks/results/seqrec-beauty.json

``run`` goes through the plan's runs in order (``--stage``, ``--only`` narrow it), one after another, each
``python -m torch.distributed.run ... -m shoprec.seqrec.train --out .gpu-beauty/NAME`` with the recipe and the
plan's overrides plus the run's seed; a run whose ``metrics.json`` is there with the same configuration is not run
again, an unfinished one resumes from its checkpoint. Each run folder gets ``run.json`` (the command, the device,
the wall time). Confirm runs (``recipe: selected``) take the recipe and overrides of the candidate that ``select``
chose, from ``.gpu-beauty/selection.json``. ``merge`` adds every finished run as a model row ``gpu-NAME`` and the
confirm seeds' mean as ``seed_means["gpu-adopted"]`` through ``benchmarks/seqrec.py --merge-only --also ...``
(the command goes in the JSON), with the plan and the choice as a note.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PLAN = REPO / "benchmarks" / "seqrec_gpu_plan.json"
BEAUTY = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"
STAGES = ("select", "confirm")
SELECTED = "selected"
COPIED = ("metrics.json", "run.json")  # what comes back from the device: 2 files a run ($OUT takes 8 at most)
# --copy-checkpoints: what a stopped run needs to go on on the next machine, flattened ($OUT/NAME/file comes back,
# $OUT/NAME/checkpoints/best/file would not), if each file is under the 16 MiB a returned file may have
CHECKPOINT_FILES = {"last.pt": "checkpoints/last.pt", "best-model.safetensors": "checkpoints/best/model.safetensors",
                    "best-config.json": "checkpoints/best/config.json"}
RETURN_LIMIT = 16 * 2**20


def log(msg: str) -> None:
    print(f"[seqrec-gpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_plan(path: str | Path = PLAN) -> dict:
    """The plan, checked: unique names, known stages, recipes that load, seeds as ints, confirm after select."""
    plan = json.loads(Path(path).read_text())
    for key in ("features", "root", "runs", "selection_rule"):
        if key not in plan:
            raise ValueError(f"{path}: no {key!r}")
    names = [r["name"] for r in plan["runs"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: run names repeat: {names}")
    for r in plan["runs"]:
        if r.get("stage") not in STAGES or not isinstance(r.get("seed"), int):
            raise ValueError(f"{path}: run {r.get('name')!r} needs a stage in {STAGES} and an int seed")
        if not r["name"].replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"{path}: run name {r['name']!r}: letters, digits, '-', '_' and '.' only")
        if (r["recipe"] == SELECTED) != (r["stage"] == "confirm"):
            raise ValueError(f"{path}: run {r['name']!r}: confirm runs, and only they, take the 'selected' recipe")
        if r["recipe"] != SELECTED:
            training_config(plan, r)  # the recipe loads with the overrides
    stages = [r["stage"] for r in plan["runs"]]
    if stages != sorted(stages, key=STAGES.index):
        raise ValueError(f"{path}: select runs come before confirm runs")
    return plan


def overrides_of(plan: dict, run: dict, selection: dict | None = None) -> tuple[str, dict]:
    """The recipe and the full overrides (plan's common ones, the run's, its seed) of ``run``."""
    from shoprec.seqrec.train import merge_overrides

    recipe, own = run["recipe"], run.get("overrides", {})
    if recipe == SELECTED:
        if not selection:
            raise SystemExit(f"{run['name']}: no selection yet; run `seqrec_gpu_runs.py select` after the select stage")
        recipe, own = selection["recipe"], selection["overrides"]
    return recipe, merge_overrides(plan.get("common_overrides", {}), own, {"seed": run["seed"]})


def training_config(plan: dict, run: dict, selection: dict | None = None) -> dict:
    from shoprec.seqrec.train import load_recipe

    recipe, overrides = overrides_of(plan, run, selection)
    return asdict(load_recipe(REPO / recipe, **json.loads(json.dumps(overrides))))


def comparable(config: dict) -> dict:
    """A run's configuration less what training fills in from the data and the CPU threads."""
    from shoprec.seqrec.ensemble import SET_BY_TRAINING

    return {**{k: v for k, v in config.items() if k != "threads"},
            "model": {k: v for k, v in config["model"].items() if k not in SET_BY_TRAINING}}


def run_command(plan: dict, run: dict, selection: dict | None = None, python: str = sys.executable,
                features: str | None = None, root: str | None = None) -> list[str]:
    """The exact torchrun command of one run (relative paths: it runs in the repository root)."""
    recipe, overrides = overrides_of(plan, run, selection)
    out = Path(root or plan["root"]) / run["name"]
    return [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={plan.get('nproc', 1)}", "--max-restarts=0", "-m", "shoprec.seqrec.train",
            "--features", str(features or plan["features"]), "--out", str(out), "--recipe", recipe,
            "--overrides", json.dumps(overrides, sort_keys=True)]


def read_selection(root: Path) -> dict | None:
    f = root / "selection.json"
    return json.loads(f.read_text()) if f.exists() else None


def finished(folder: Path) -> dict | None:
    f = folder / "metrics.json"
    return json.loads(f.read_text()) if f.exists() else None


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def stopped_for_time(m: dict, folder: Path) -> bool:
    """A finished run that its wall-clock budget stopped and that can go on from its checkpoint."""
    return m.get("stopped_by") == "max_elapsed_minutes" and (folder / "checkpoints" / "last.pt").exists()


def execute(plan: dict, runs: list[dict], python: str, root: Path, features: str, copy_to: Path | None,
            allow_cpu: bool, continue_stopped: bool = False, copy_checkpoints: bool = False) -> list[str]:
    """Train ``runs`` one after another; returns the names trained or found finished. ``continue_stopped``: a run
    its wall-clock budget stopped goes on from its checkpoint (with a fresh budget) instead of counting as done."""
    import torch

    if not torch.cuda.is_available() and not allow_cpu:
        raise SystemExit("no GPU here: these runs are for a device machine (--allow-cpu to run them anyway)")
    if not (Path(features) / "sequences.parquet").exists():
        raise SystemExit(f"{features}: no features (run `seqrec_gpu_runs.py prepare` here and carry them)")
    done = []
    for run in runs:
        selection = read_selection(root) if run["recipe"] == SELECTED else None
        folder = root / run["name"]
        want = comparable(training_config(plan, run, selection))
        have = finished(folder)
        go_on = have is not None and continue_stopped and stopped_for_time(have, folder)
        if have is not None and comparable(have["config"]) == want and not go_on:
            log(f"{run['name']}: finished earlier in {folder}, not run again")
        else:
            if go_on and comparable(have["config"]) == want:
                log(f"{run['name']}: stopped by its wall-clock budget after {have['epochs_run']} epochs; going on")
                (folder / "metrics.json").unlink()
                have = None
            if have is not None:
                log(f"{run['name']}: {folder} holds a run of another configuration; moving it aside")
                shutil.move(str(folder), str(folder) + f".old-{int(time.time())}")
            cmd = run_command(plan, run, selection, python, features, str(root))
            log(f"{run['name']}: {shlex.join(cmd)}")
            folder.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            t0 = time.perf_counter()
            with open(folder / "train.log", "a") as logf:
                p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for line in p.stdout:
                    sys.stderr.write(line)
                    logf.write(line)
                rc = p.wait()
            record = {"name": run["name"], "stage": run["stage"], "seed": run["seed"], "command": shlex.join(cmd),
                      "recipe": overrides_of(plan, run, selection)[0], "overrides": overrides_of(plan, run, selection)[1],
                      "device": device_name(), "torch": torch.__version__, "returncode": rc,
                      "wall_seconds": round(time.perf_counter() - t0, 1), "plan": "benchmarks/seqrec_gpu_plan.json",
                      "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if selection:
                record["selection"] = selection
            if (folder / "run.json").exists():  # an earlier attempt (stopped by its budget, or failed)
                earlier = json.loads((folder / "run.json").read_text())
                record["earlier_attempts"] = earlier.pop("earlier_attempts", []) + [earlier]
            (folder / "run.json").write_text(json.dumps(record, indent=2) + "\n")
            if rc != 0:
                copy_back(folder, copy_to, copy_checkpoints)
                raise SystemExit(f"{run['name']}: torchrun exited with {rc}; see {folder / 'train.log'}")
        m = finished(folder)
        log(f"{run['name']}: valid ndcg@10 {m['valid']['ndcg@10']:.4f}, test ndcg@10 {m['test']['ndcg@10']:.4f} "
            f"hr@10 {m['test']['hr@10']:.4f}, best epoch {m['best_epoch']} of {m['epochs_run']} "
            f"({m.get('stopped_by', '?')})")
        copy_back(folder, copy_to, copy_checkpoints and stopped_for_time(m, folder))
        done.append(run["name"])
    return done


def copy_back(folder: Path, copy_to: Path | None, checkpoints: bool = False) -> None:
    """The run's small files into ``copy_to/NAME/`` (a device's $OUT: what comes back); with ``checkpoints``, also
    what it needs to go on elsewhere (:data:`CHECKPOINT_FILES`), when every one of them may come back."""
    if copy_to is None:
        return
    dest = copy_to / folder.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (folder / name).exists():
            shutil.copy(folder / name, dest / name)
    if checkpoints:
        files = {flat: folder / path for flat, path in CHECKPOINT_FILES.items()}
        too_big = [str(f) for f in files.values() if not f.exists() or f.stat().st_size >= RETURN_LIMIT]
        if too_big:
            log(f"{folder.name}: checkpoints stay here (missing or over 16 MiB: {too_big}); the run cannot go on elsewhere")
            return
        for flat, f in files.items():
            shutil.copy(f, dest / flat)


def fetch(src: Path, root: Path) -> list[str]:
    """Copy ``src/NAME/{metrics,run}.json`` (a device call's files) into ``root/NAME/``, and its checkpoint files,
    if they came back, into ``root/NAME/checkpoints/`` (carry ``.gpu-beauty/NAME`` to go on with the run)."""
    got = []
    for d in sorted(p for p in src.iterdir() if p.is_dir()):
        if not (d / "metrics.json").exists() and not (d / "run.json").exists():
            continue
        (root / d.name).mkdir(parents=True, exist_ok=True)
        for name in COPIED:
            if (d / name).exists():
                shutil.copy(d / name, root / d.name / name)
        if all((d / flat).exists() for flat in CHECKPOINT_FILES):
            for flat, path in CHECKPOINT_FILES.items():
                (root / d.name / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(d / flat, root / d.name / path)
        got.append(d.name)
    return got


def select(plan: dict, root: Path) -> dict:
    """The plan's rule: the select candidate with the highest best-epoch validation NDCG@10 (ties: first listed)."""
    candidates = [r for r in plan["runs"] if r["stage"] == "select"]
    missing = [r["name"] for r in candidates if finished(root / r["name"]) is None]
    if missing:
        raise SystemExit(f"select runs not finished yet: {missing}")
    valid = {}
    for r in candidates:
        m = finished(root / r["name"])
        if comparable(m["config"]) != comparable(training_config(plan, r)):
            raise SystemExit(f"{root / r['name']} was trained with another configuration than the plan's {r['name']}")
        valid[r["name"]] = {"valid_ndcg@10": m["valid"]["ndcg@10"], "best_epoch": m["best_epoch"],
                            "epochs_run": m["epochs_run"], "stopped_by": m.get("stopped_by")}
    best = max(candidates, key=lambda r: (valid[r["name"]]["valid_ndcg@10"], -candidates.index(r)))
    selection = {"rule": plan["selection_rule"], "candidates": valid, "chosen": best["name"],
                 "recipe": best["recipe"], "overrides": best.get("overrides", {})}
    (root / "selection.json").write_text(json.dumps(selection, indent=2) + "\n")
    return selection


def merge_command(plan: dict, root: Path, out: str, python: str = sys.executable) -> list[str]:
    """``benchmarks/seqrec.py --merge-only`` with every finished run of the plan (``--also gpu-NAME=FOLDER``), the
    confirm seeds' mean when all three are there, and the plan and the choice as a note."""
    rel = root.relative_to(REPO) if root.is_absolute() and root.is_relative_to(REPO) else root
    cmd = [python, "benchmarks/seqrec.py", "--merge-only", "--out", out]
    runs = [r for r in plan["runs"] if finished(root / r["name"]) is not None]
    if not runs:
        raise SystemExit(f"no finished run under {root}")
    for r in runs:
        cmd += ["--also", f"gpu-{r['name']}={rel / r['name']}"]
    confirm = [r for r in plan["runs"] if r["stage"] == "confirm"]
    selection = read_selection(root)
    if all(r in runs for r in confirm) and selection:
        cmd += ["--seed-mean", "gpu-adopted=" + ",".join(f"gpu-{r['name']}" for r in confirm)]
    note = (f"GPU runs of benchmarks/seqrec_gpu_plan.json (seqrec_gpu_runs.py; each row's trained_by holds its "
            f"command and device). Rule, fixed before the runs: {plan['selection_rule']}")
    if selection:
        note += " Validation NDCG@10 of the candidates: " + ", ".join(
            f"{k} {v['valid_ndcg@10']:.4f} ({v['stopped_by']})" for k, v in selection["candidates"].items())
        note += f"; adopted: {selection['chosen']} ({selection['recipe']}, overrides {json.dumps(selection['overrides'])})."
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
    ap.add_argument("--stage", choices=STAGES, default=None)
    ap.add_argument("--only", action="append", default=[], metavar="NAME")
    ap.add_argument("--python", default=sys.executable, help="the interpreter of the commands (python3 on a device)")
    ap.add_argument("--copy-to", default=None, help="run: copy each run's metrics.json and run.json here ($OUT)")
    ap.add_argument("--allow-cpu", action="store_true", help="run: train without a GPU (smoke tests)")
    ap.add_argument("--continue-stopped", action="store_true",
                    help="run: a run its wall-clock budget stopped goes on from its checkpoint (carry its folder)")
    ap.add_argument("--copy-checkpoints", action="store_true",
                    help="run: with --copy-to, a budget-stopped run's checkpoints come back too (5 files: one run a call)")
    ap.add_argument("--out", default="benchmarks/results/seqrec-beauty.json", help="merge: the result file")
    ap.add_argument("--dry-run", action="store_true", help="merge: print the command, run nothing")
    a = ap.parse_args(argv)

    plan = load_plan(a.plan)
    root = Path(a.root or plan["root"])
    root = root if root.is_absolute() else REPO / root
    features = a.features or plan["features"]
    runs = [r for r in plan["runs"] if (a.stage is None or r["stage"] == a.stage) and (not a.only or r["name"] in a.only)]
    unknown = set(a.only) - {r["name"] for r in plan["runs"]}
    if unknown:
        raise SystemExit(f"--only: no such run in the plan: {sorted(unknown)}")

    if a.action == "prepare":
        log(f"features in {prepare(Path(a.data), root)}")
    elif a.action == "commands":
        selection = read_selection(root)
        for r in runs:
            if r["recipe"] == SELECTED and not selection:
                print(f"# {r['name']}: recipe chosen by `select` after the select stage; seed {r['seed']}")
                continue
            print(f"# {r['name']} ({r['stage']})")
            print(shlex.join(run_command(plan, r, selection, a.python, features, a.root or plan["root"])))
    elif a.action == "run":
        execute(plan, runs, a.python, root, features, Path(a.copy_to) if a.copy_to else None, a.allow_cpu,
                a.continue_stopped, a.copy_checkpoints)
    elif a.action == "fetch":
        if not a.source:
            raise SystemExit("fetch: name the folder the device's files came back in")
        log(f"fetched {fetch(Path(a.source), root)} into {root}")
    elif a.action == "select":
        s = select(plan, root)
        log(f"adopted {s['chosen']}: {json.dumps(s['candidates'])}")
    elif a.action == "merge":
        cmd = merge_command(plan, root, a.out, a.python)
        print(shlex.join(cmd))
        if not a.dry_run:
            subprocess.run(cmd, cwd=REPO, check=True)


if __name__ == "__main__":
    main()
