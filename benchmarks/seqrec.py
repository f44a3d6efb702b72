"""Amazon Beauty benchmark: shoprec's best recipe and BERT4Rec, RecBole side by side.

    .venv/bin/python benchmarks/seqrec.py [--nproc 2] [--ddp-compare] [--recbole-budget-min 30] [--skip-recbole]

1. imports ``Beauty.txt`` (S3-Rec split) through the shop's own path: importer -> raw event log ->
   ``ingest`` -> ``features``, and checks that the sequences are exactly the file's (same users, items, order);
2. trains and tests each recipe with torchrun: ``medium.yaml`` (the best single model: SASRec, full
   cross-entropy), ``medium-ensemble.yaml`` (the best: three medium.yaml members, one after another), ``medium-ss.yaml`` (SASRec, sampled softmax, 5x cheaper per epoch) and ``medium-bert4rec.yaml``; with
   ``--nproc N`` each process takes ``batch_size / N`` so the global batch is the recipe's. Test metrics come
   from the best-validation checkpoint (leave-one-out, all items ranked, history removed). ``--ddp-compare``
   also trains ``medium-ss.yaml`` with the other process count (1 vs 2) and compares quality and throughput;
3. runs the peer, RecBole 1.2.1 SASRec and BERT4Rec, in its own virtualenv (created on first use under
   ``.shoprec/bench/recbole-venv``) on a fixed wall-clock budget per model (``benchmarks/recbole_peer.py``),
   and scores its best-validation model under both protocols (RecBole's and shoprec's);
4. writes ``benchmarks/results/seqrec-beauty.json`` with the comparisons (time for shoprec's best recipe to
   reach RecBole's best validation NDCG@10, epoch-time ratio at the same model size).

``--reuse`` takes finished runs from the work folder instead of training again; ``--recbole-results``
takes the peer's JSON files from an earlier run. ``--merge-recbole-long RUN.json`` trains nothing: it adds a
RecBole SASRec run with a longer budget (e.g. ``recbole_peer.py --budget-min 125``) to ``--out`` as
``peers["recbole-sasrec-long"]``, with ``comparison["converged_best_vs_recbole-sasrec-long"]``: whether RecBole's
curve had levelled off and shoprec's best minus RecBole's best on test.

``--merge-only`` trains nothing either: it adds the ``--also NAME=FOLDER`` runs (e.g. the GPU runs of
``benchmarks/seqrec_gpu_runs.py``, with the folder's ``run.json``, the command that trained it, as
``trained_by``), ``--merge-peer NAME=JSON`` peer runs of ``recbole_peer.py`` (e.g. SASRecF), ``--seed-mean``
rows and ``--note`` lines to the existing ``--out``, and writes ``published`` afresh; each added row records
this command.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEAUTY = Path(os.environ.get("SHOPREC_SHARED_DATA", REPO.parent / "shared" / "data")) / "amazon-s3rec" / "Beauty.txt"
RECBOLE_PINS = ["recbole==1.2.1", "numpy==1.26.4", "pandas==2.2.3", "scipy==1.13.1", "scikit-learn==1.5.2",
                "torch==2.13.0"]
PUBLISHED = {
    "_note": ("Beauty (S3-Rec split), leave-one-out, all items ranked, history excluded; NDCG@10 / HR@10 as "
              "listed in the project issue (not re-checked against the papers here)"),
    "SASRec": {"ndcg@10": 0.0318, "hr@10": 0.0605},
    "DuoRec": {"ndcg@10": 0.0443, "hr@10": 0.0845},
    "eSASRec": {"ndcg@10": 0.0523, "hr@10": 0.0928},
    "SASRec + sampled softmax": {"ndcg@10": 0.0531, "hr@10": 0.0921},
    "BSARec": {
        "ndcg@10": 0.0611, "hr@10": 0.1008, "ndcg@5": 0.0523, "hr@5": 0.0736, "ndcg@20": 0.0703, "hr@20": 0.1373,
        "valid_ndcg@10": 0.0753, "valid_hr@10": 0.1238, "best_epoch": 54, "epochs_run": 65, "seed": 42,
        "parameters": 878208,
        "source": ("github.com/yehjin-shin/BSARec, src/output/BSARec_Beauty_best.log (its official training log; "
                   "Shin et al., AAAI 2024): test line after early stopping; valid figures are epoch 54's, the "
                   "last epoch whose model it saved (its early stopping saves when any of HR/NDCG@5/10/20 rises). "
                   "d 64, 2 layers, 1 head, dropout 0.5, lr 5e-4, batch 256, c 5, alpha 0.7, full cross-entropy; "
                   "one seed. Read here, not copied from the issue."),
    },
}
METRIC_KEYS = ("ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20", "mrr")


def log(msg: str) -> None:
    print(f"[seqrec-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def prepare(data: Path, work: Path) -> Path:
    """Beauty.txt (+ Beauty_item2attributes.json beside it) -> raw events -> ingest -> features; asserts the
    sequences are the file's. Features made before items had attributes are made again."""
    import shutil

    from shoprec.data.features import build_features, load_items, load_sequences
    from shoprec.data.importers import import_s3rec, s3rec_attributes_file
    from shoprec.data.ingest import ingest

    feats = work / "features"
    if (feats / "items.parquet").exists() and "attributes" not in load_items(feats):
        log("features have no item attributes: making them again")
        for name in ("raw", "ingested", "features"):
            shutil.rmtree(work / name, ignore_errors=True)
    if not (feats / "sequences.parquet").exists():
        import_s3rec(data, work / "raw", attributes=s3rec_attributes_file(data))
        ingest(str(work / "raw"), work / "ingested", progress=False)
        build_features(work / "ingested", feats)
    users, seqs = load_sequences(feats)
    items = load_items(feats)
    ids = dict(zip(items["idx"], items["item_id"]))
    got = {u: [ids[i] for i in s] for u, s in zip(users, seqs)}
    ref = {p[0]: p[1:] for p in (line.split() for line in open(data)) if p}
    if got != ref:
        raise SystemExit("imported sequences differ from the source file")
    log(f"features: {len(users)} users, {len(items)} items, sequences identical to {data.name}")
    return feats


def train_recipe(feats: Path, out: Path, recipe: Path, nproc: int, reuse: bool, overrides: dict) -> dict:
    from shoprec.seqrec.launch import launch

    if reuse and (out / "metrics.json").exists():
        s = json.loads((out / "metrics.json").read_text())
        import yaml

        from shoprec.seqrec.train import merge_overrides, recipe_members

        members = recipe_members(recipe) or [{}]  # an ensemble recipe: each member's model config is checked
        runs = s["config"]["members"] if "members" in s["config"] else [s["config"]]
        if len(runs) != len(members):
            raise SystemExit(f"{out} has {len(runs)} member(s), {recipe.name} {len(members)}; delete it or drop --reuse")
        recipe_model = yaml.safe_load(recipe.read_text()).get("model", {})
        for member, run in zip(members, runs):
            want = {**recipe_model, **merge_overrides(member, overrides)["model"]}
            have = run["model"]
            differ = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            if differ:
                raise SystemExit(f"{out} was trained with another model config than {recipe.name} (run, recipe): "
                                 f"{differ}; delete it or drop --reuse")
        return s
    log(f"training {recipe.name} with {nproc} process(es) -> {out}")
    env = {"OMP_NUM_THREADS": "1"} if nproc > 1 else {}
    return launch(feats, out, nproc=nproc, recipe=recipe, max_restarts=0, overrides=overrides, env=env)


def recbole_venv(venv: Path) -> Path:
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import recbole"], capture_output=True).returncode == 0:
        return py
    log(f"creating RecBole's virtualenv {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # torch first, pinned: otherwise recbole's dependencies pull a newer multi-GB build.
    subprocess.run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", *RECBOLE_PINS], check=True)
    return py


def run_recbole(data: Path, work: Path, budget_min: float, venv: Path, parallel: bool, clock: str = "cpu") -> dict:
    py = recbole_venv(venv)
    procs = {}
    for model in ("SASRec", "BERT4Rec"):
        cmd = [str(py), str(REPO / "benchmarks" / "recbole_peer.py"), "--model", model, "--data", str(data),
               "--work", str(work), "--budget-min", str(budget_min), "--budget-clock", clock, "--threads", "1",
               "--out", str(work / f"{model}.json")]
        log("running " + shlex.join(cmd))
        logf = open(work / f"{model}.log", "w")
        procs[model] = (subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT), logf)
        if not parallel:
            procs[model][0].wait()
    for model, (p, logf) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"RecBole {model} failed, see {work / (model + '.log')}")
        logf.close()
    return load_recbole(work)


def load_recbole(folder: Path) -> dict:
    return {m: json.loads((folder / f"{m}.json").read_text()) for m in ("SASRec", "BERT4Rec")}


def summarise(s: dict, command: str) -> dict:
    hist = s["history"]  # empty for an ensemble, whose members' figures are in s["members"]
    best = s["best_epoch"]
    row = {k: s["test"][k] for k in METRIC_KEYS}
    row.update({
        "valid_ndcg@10": s["valid"]["ndcg@10"], "best_epoch": best, "epochs_run": s["epochs_run"],
        "train_seconds": s["train_seconds"], "train_cpu_seconds": s.get("train_cpu_seconds"),
        "elapsed_seconds": s.get("elapsed_seconds"),
        "epoch_seconds_median": sorted(h["epoch_seconds"] for h in hist)[len(hist) // 2] if hist else None,
        "epoch_cpu_seconds_median": (sorted(h.get("epoch_cpu_seconds") or 0 for h in hist)[len(hist) // 2]
                                     if hist else None),
        "sequences_per_s": s["sequences_per_s"], "world_size": s["world_size"],
        "objective": s["objective"], "loss": s["loss"], "config": s["config"],
        "valid_curve": [round(h["valid_ndcg@10"], 5) for h in hist], "command": command,
    })
    if "members" in s:
        row["members"] = s["members"]
    return row


def model_size(m: dict) -> str:
    return f"d={m['d_model']}, {m['n_layers']} layers, {m['n_heads']} heads, max_len {m['max_len']}"


def target_popularity(seqs: list[list[int]]) -> dict:
    """How often the valid and the test targets occur in the training parts (all but the last two items)
    of all sequences. Test targets are rarer there, because the valid interactions are held out of training:
    one reason validation scores run above test scores under leave-one-out."""
    from collections import Counter

    seqs = [s for s in seqs if len(s) >= 3]
    train = Counter(i for s in seqs for i in s[:-2])
    with_valid = Counter(i for s in seqs for i in s[:-1])
    out = {}
    for name, cut, counts in (("valid_targets_in_train", 2, train), ("test_targets_in_train", 1, train),
                              ("test_targets_in_train_and_valid", 1, with_valid)):
        c = np.array([counts[s[-cut]] for s in seqs])
        out[name] = {"median_count": float(np.median(c)), "never_seen": int((c == 0).sum()),
                     "seen_under_5_times": int((c < 5).sum())}
    return out


def checkpoint_size(folder: Path) -> str:
    """Width and depth of a (possibly unfinished) run, read from its last checkpoint's weights."""
    import torch

    w = torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]
    layers = {k.split(".")[1] for k in w if k.startswith("blocks.")}
    return f"d={w['item_emb.weight'].shape[1]}, {len(layers)} layers"


def first_reaching(hist: list[dict], target: float, key: str = "valid_ndcg@10") -> dict | None:
    for h in hist:
        if h[key] >= target:
            return h
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(BEAUTY))
    ap.add_argument("--work", default=str(REPO / ".shoprec" / "bench" / "seqrec"))
    ap.add_argument("--recipe", default=str(REPO / "configs" / "seqrec" / "medium.yaml"))
    ap.add_argument("--ensemble-recipe", default=str(REPO / "configs" / "seqrec" / "medium-ensemble.yaml"),
                    help="three medium.yaml models scored together (shoprec/seqrec/ensemble.py): the best model")
    ap.add_argument("--ss-recipe", default=str(REPO / "configs" / "seqrec" / "medium-ss.yaml"))
    ap.add_argument("--bert4rec-recipe", default=str(REPO / "configs" / "seqrec" / "medium-bert4rec.yaml"))
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--overrides", default="{}", help="JSON TrainConfig overrides for both recipes (e.g. threads)")
    ap.add_argument("--reuse", action="store_true", help="reuse finished shoprec runs in --work")
    ap.add_argument("--ddp-compare", action="store_true",
                    help="also train the best recipe with 2 gloo processes (same global batch) and compare")
    ap.add_argument("--skip-recbole", action="store_true")
    ap.add_argument("--recbole-results", default=None, help="folder with SASRec.json/BERT4Rec.json from recbole_peer.py")
    ap.add_argument("--recbole-budget-min", type=float, default=30.0)
    ap.add_argument("--recbole-budget-clock", choices=["wall", "cpu"], default="cpu",
                    help="the peer's budget in CPU seconds of its 1 thread (fair on a shared machine) or wall-clock")
    ap.add_argument("--recbole-parallel", action="store_true", help="run both RecBole models at once (1 thread each)")
    ap.add_argument("--recbole-venv", default=str(REPO / ".shoprec" / "bench" / "recbole-venv"))
    ap.add_argument("--sasrec-ce-run", default=None,
                    help="a shoprec SASRec run with full cross-entropy (RecBole's loss), 1 process: its epoch times "
                         "are compared with RecBole SASRec's too (metrics.json or checkpoints/last.pt)")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=FOLDER",
                    help="a finished run (its metrics.json) reported as one more model row, e.g. an ablation")
    ap.add_argument("--note", action="append", default=[], help="a line for the result's notes (conditions)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "seqrec-beauty.json"))
    ap.add_argument("--merge-recbole-long", metavar="JSON", default=None,
                    help="only add this long RecBole SASRec run (recbole_peer.py's output) to --out, training nothing")
    ap.add_argument("--recbole-long-command", default="",
                    help="with --merge-recbole-long: the recbole_peer.py command that made it, for the record")
    ap.add_argument("--merge-only", action="store_true",
                    help="train nothing: add the --also runs, --merge-peer runs, --seed-mean rows and --note lines to --out")
    ap.add_argument("--merge-peer", action="append", default=[], metavar="NAME=JSON",
                    help="with --merge-only: a recbole_peer.py result (e.g. SASRecF) added as peers[NAME]")
    ap.add_argument("--peer-command", action="append", default=[], metavar="NAME=COMMAND",
                    help="with --merge-peer: the recbole_peer.py command that made peers[NAME], for the record")
    ap.add_argument("--seed-mean", action="append", default=[], metavar="NAME=ROW,ROW,ROW",
                    help="with --merge-only: seed_means[NAME], the mean and each of these model rows' test figures")
    a = ap.parse_args()
    if a.merge_only:
        command = shlex.join([Path(sys.executable).name, "benchmarks/seqrec.py", *sys.argv[1:]])
        done = merge_only(Path(a.out), a.also, a.merge_peer, dict(c.split("=", 1) for c in a.peer_command),
                          a.seed_mean, a.note, command)
        log(f"merged into {a.out}: {json.dumps(done)}")
        return
    if a.merge_recbole_long:
        cmp = merge_recbole_long(Path(a.out), Path(a.merge_recbole_long), a.recbole_long_command)
        log(f"added recbole-sasrec-long to {a.out}: {json.dumps(cmp)}")
        return

    data, work = Path(a.data), Path(a.work)
    if not data.exists():
        raise SystemExit(f"{data} not found (set SHOPREC_SHARED_DATA or --data)")
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join([Path(sys.executable).name, "benchmarks/seqrec.py", *sys.argv[1:]])
    feats = prepare(data, work)
    overrides = json.loads(a.overrides)
    models = {}
    import yaml

    def per_process(recipe: str, nproc: int) -> dict:
        batch = yaml.safe_load(Path(recipe).read_text()).get("batch_size", 128)
        return {**overrides, "batch_size": max(1, batch // nproc)} if nproc > 1 else dict(overrides)

    for name, recipe in (("shoprec-best", a.recipe), ("shoprec-ensemble", a.ensemble_recipe),
                         ("shoprec-sasrec-ss", a.ss_recipe), ("shoprec-bert4rec", a.bert4rec_recipe)):
        s = train_recipe(feats, work / name, Path(recipe), a.nproc, a.reuse, per_process(recipe, a.nproc))
        models[name] = summarise(s, command) | {"recipe": str(Path(recipe).relative_to(REPO))}
        log(f"{name}: test ndcg@10 {s['test']['ndcg@10']:.4f} hr@10 {s['test']['hr@10']:.4f}")

    for spec in a.also:
        name, row = also_row(spec, command)
        models[name] = row
        log(f"{name} ({row['run']}): test ndcg@10 {row['ndcg@10']:.4f} hr@10 {row['hr@10']:.4f}")

    ddp = None
    if a.ddp_compare:
        other = 1 if a.nproc == 2 else 2
        s2 = train_recipe(feats, work / f"shoprec-sasrec-ss-{other}proc", Path(a.ss_recipe), other, a.reuse,
                          {**per_process(a.ss_recipe, other), "threads": 1})
        runs = {a.nproc: models["shoprec-sasrec-ss"], other: summarise(s2, command)}
        one, two = runs[1], runs[2]
        ddp = {
            "what": ("medium-ss.yaml under torchrun with 1 and with 2 gloo processes (1 thread each; the "
                     "per-process batch is halved with 2 so the global batch is the recipe's)"),
            "1_process": {k: one[k] for k in ("ndcg@10", "hr@10", "best_epoch", "epochs_run", "sequences_per_s",
                                              "epoch_seconds_median", "epoch_cpu_seconds_median", "train_seconds")},
            "2_processes": {k: two[k] for k in ("ndcg@10", "hr@10", "best_epoch", "epochs_run", "sequences_per_s",
                                                "epoch_seconds_median", "epoch_cpu_seconds_median",
                                                "train_seconds")},
        }
        ddp["throughput_ratio_2_over_1"] = ddp["2_processes"]["sequences_per_s"] / ddp["1_process"]["sequences_per_s"]
        log(f"2 processes: test ndcg@10 {two['ndcg@10']:.4f} vs {one['ndcg@10']:.4f} with 1")
        models[f"shoprec-sasrec-ss-{other}proc"] = runs[other]

    result = {
        "command": command, "dataset": {
            "name": "Amazon Beauty (S3-Rec preprocessing)", "source": str(data),
            "users": None, "items": None,
            "import": "shoprec data import s3rec -> ingest -> features; sequences identical to the file"},
        "protocol": ("leave-one-out (last item test, second-last valid, rest train); every item ranked; the "
                     "user's earlier items removed from the candidates; ties count against the target; early "
                     "stopping on valid NDCG@10; test metrics from the best-valid checkpoint only"),
        "models": models, "published": PUBLISHED, "notes": a.note,
    }
    if ddp:
        result["ddp"] = ddp
    from shoprec.data.features import load_items, load_sequences
    users, seqs = load_sequences(feats)
    result["dataset"]["users"] = len(users)
    result["dataset"]["items"] = len(load_items(feats))
    result["dataset"]["target_popularity"] = target_popularity(seqs)

    peers = None
    if a.recbole_results:
        peers = load_recbole(Path(a.recbole_results))
    elif not a.skip_recbole:
        peers = run_recbole(data, work / "recbole", a.recbole_budget_min, Path(a.recbole_venv), a.recbole_parallel,
                            a.recbole_budget_clock)
    if peers:
        result["peers"] = {}
        for m, r in peers.items():
            result["peers"][f"recbole-{m.lower()}"] = peer_row(r)
        result["comparison"] = compare(models, peers, work, a.sasrec_ce_run)
    out = Path(a.out)
    if out.exists():  # blocks written by other scripts (seqrec_ensemble.py) are kept
        result["exploratory"] = json.loads(out.read_text()).get("exploratory", {})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {a.out}")
    print(json.dumps({k: {m: {x: v[x] for x in ("ndcg@10", "hr@10")} for m, v in result[k].items()}
                      for k in ("models", "peers") if k in result}, indent=1))


def also_row(spec: str, command: str) -> tuple[str, dict]:
    """``NAME=FOLDER`` of a finished run as a model row; the folder's ``run.json`` (how it was trained, written by
    ``seqrec_gpu_runs.py``), when there is one, goes in as ``trained_by``, and its ``test_recbole_protocol.json``
    (``seqrec_protocols.py``) as ``test_recbole_protocol``."""
    name, _, folder = spec.partition("=")
    if not name or not folder or not (Path(folder) / "metrics.json").exists():
        raise SystemExit(f"--also {spec!r}: expected NAME=FOLDER of a finished run (with metrics.json)")
    s = json.loads((Path(folder) / "metrics.json").read_text())
    row = summarise(s, command) | {"run": folder}
    if "stopped_by" in s:
        row["stopped_by"] = s["stopped_by"]
    if (Path(folder) / "run.json").exists():
        row["trained_by"] = json.loads((Path(folder) / "run.json").read_text())
    protocols = Path(folder) / "test_recbole_protocol.json"  # written by seqrec_protocols.py
    if protocols.exists():
        both = json.loads(protocols.read_text())
        row["test_recbole_protocol"] = both["test_recbole_protocol"] | {"command": both["command"]}
    return name, row


def seed_mean(rows: dict, names: list[str]) -> dict:
    """The mean test (and valid) figures of model rows that differ by seed only, with each row's own."""
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"--seed-mean: no model row {missing}")
    each = {n: {k: rows[n][k] for k in ("ndcg@10", "hr@10", "valid_ndcg@10")} | {"seed": rows[n]["config"]["seed"]}
            for n in names}
    out = {"rows": names, "each": each}
    for k in ("ndcg@10", "hr@10", "valid_ndcg@10"):
        out[k] = float(np.mean([e[k] for e in each.values()]))
    return out


def merge_only(result_file: Path, also: list[str], peers: list[str], peer_commands: dict, seed_means: list[str],
               notes: list[str], command: str) -> dict:
    """Add finished runs, peers, seed means and notes to an existing result file; trains nothing."""
    result = json.loads(result_file.read_text())
    done: dict[str, list] = {"models": [], "peers": [], "seed_means": []}
    for spec in also:
        name, row = also_row(spec, command)
        result["models"][name] = row
        done["models"].append(name)
    for spec in peers:
        name, _, path = spec.partition("=")
        if not name or not Path(path).exists():
            raise SystemExit(f"--merge-peer {spec!r}: expected NAME=JSON of a recbole_peer.py result")
        r = json.loads(Path(path).read_text())
        result.setdefault("peers", {})[name] = peer_row(r) | {
            "model": r.get("model"), "recbole_config": r.get("config"), "result_file": path,
            "command": peer_commands.get(name, ""), "merged_by": command}
        # whether its validation had stopped rising (patience 10), and shoprec's bests against it
        result.setdefault("comparison", {})[f"converged_best_vs_{name}"] = converged_comparison(result["models"], r)
        done["peers"].append(name)
    for spec in seed_means:
        name, _, rows = spec.partition("=")
        result.setdefault("seed_means", {})[name] = seed_mean(result["models"], rows.split(",")) | {"command": command}
        done["seed_means"].append(name)
    result["published"] = PUBLISHED
    result["notes"] = result.get("notes", []) + list(notes)
    result["merge_commands"] = result.get("merge_commands", []) + [command]  # what wrote the rows above too
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return done


def peer_row(r: dict) -> dict:
    """One RecBole run of ``recbole_peer.py`` as a ``peers`` entry (top-level metrics under shoprec's protocol)."""
    return {
        "ndcg@10": r["test_shoprec_protocol"]["ndcg@10"], "hr@10": r["test_shoprec_protocol"]["hr@10"],
        "protocol_of_top_level_metrics": "shoprec (history removed)",
        "test_shoprec_protocol": {k: r["test_shoprec_protocol"][k] for k in METRIC_KEYS},
        "test_recbole_protocol": r["test_recbole_protocol"],
        "best_epoch": r["best_epoch"], "epochs_run": r["epochs_run"], "stopped_by": r["stopped_by"],
        "budget_minutes": r["budget_minutes"], "budget_clock": r.get("budget_clock"), "threads": r["threads"],
        "parameters": r["parameters"], "train_seconds": r["train_seconds"], "train_cpu_seconds": r["train_cpu_seconds"],
        "wall_seconds": r["wall_seconds"], "epoch_seconds_median": r["epoch_seconds_median"],
        # CPU seconds of training+validation in all (without the re-scoring under shoprec's protocol) and up to the
        # end of the best epoch: the cost to reach the peer's best; runs from before these were kept lack them
        **{k: v for k, v in (("cpu_seconds", r.get("cpu_seconds")), ("deadline", r.get("deadline")),
                             ("cpu_seconds_to_best", next((c.get("cpu_seconds_total") for c in r["curve"]
                                                           if c.get("epoch") == r["best_epoch"]), None)))
           if v is not None},
        "valid_curve": r["curve"],
    }


def converged_comparison(models: dict, r: dict, patience: int = 10) -> dict:
    """shoprec's best models against RecBole SASRec's best of a long run: how far RecBole's curve had levelled
    off (epochs since its best, valid gain over its last five epochs), RecBole's test NDCG@10 under both
    protocols, and shoprec's test NDCG@10 minus RecBole's under shoprec's. ``patience``: recbole_peer.py's."""
    curve = [c["valid_ndcg@10"] for c in r["curve"]]
    best = r["best_epoch"]
    tail = curve[-6:]
    out = {
        "recbole_epochs_run": len(curve), "recbole_best_epoch": best, "recbole_stopped_by": r["stopped_by"],
        "recbole_epochs_after_best": len(curve) - 1 - best,
        "recbole_converged": r["stopped_by"] == "early stopping" or len(curve) - 1 - best >= patience,
        "recbole_valid_ndcg@10_gain_over_last_5_epochs": tail[-1] - tail[0] if len(tail) > 1 else None,
        "recbole_best_valid_ndcg@10": curve[best],
        "recbole_test_ndcg@10_shoprec_protocol": r["test_shoprec_protocol"]["ndcg@10"],
        "recbole_test_ndcg@10_recbole_protocol": r["test_recbole_protocol"]["ndcg@10"],
        "target": "shoprec's converged best is above RecBole's (test NDCG@10, shoprec's protocol)",
    }
    for name in ("shoprec-best", "shoprec-ensemble"):
        if name in models:
            diff = models[name]["ndcg@10"] - r["test_shoprec_protocol"]["ndcg@10"]
            out[name] = {"ndcg@10": models[name]["ndcg@10"], "minus_recbole": diff, "above": diff > 0}
    return out


def merge_recbole_long(result_file: Path, recbole_json: Path, command: str) -> dict:
    """Add a long RecBole SASRec run (``recbole_peer.py`` with a larger budget) to an existing result file."""
    result = json.loads(result_file.read_text())
    r = json.loads(recbole_json.read_text())
    if r.get("model") != "SASRec":
        raise SystemExit(f"{recbole_json}: expected a RecBole SASRec run, found {r.get('model')!r}")
    result.setdefault("peers", {})["recbole-sasrec-long"] = peer_row(r) | {"command": command}
    result.setdefault("comparison", {})["converged_best_vs_recbole-sasrec-long"] = converged_comparison(
        result["models"], r)
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    return result["comparison"]["converged_best_vs_recbole-sasrec-long"]


def run_history(folder: Path) -> list[dict]:
    if (folder / "metrics.json").exists():
        return json.loads((folder / "metrics.json").read_text())["history"]
    import torch

    return torch.load(folder / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["state"]["history"]


def compare(models: dict, peers: dict, work: Path, sasrec_ce_run: str | None = None) -> dict:
    """Time-to-RecBole-best and epoch-time ratios, from the recorded curves."""
    out = {}
    best_hist = json.loads((work / "shoprec-best" / "metrics.json").read_text())["history"]
    b4_hist = json.loads((work / "shoprec-bert4rec" / "metrics.json").read_text())["history"]
    for m, r in peers.items():
        best = max(r["curve"], key=lambda c: c["valid_ndcg@10_shoprec_protocol"])
        target = best["valid_ndcg@10_shoprec_protocol"]
        mine = best_hist if m == "SASRec" else b4_hist
        # Training CPU seconds up to the end of an epoch: RecBole's one thread, shoprec's rank-0 process
        # (each of shoprec's processes does the same work), so on a quiet machine both equal wall seconds.
        rb_cpu_to_best = sum(c["epoch_cpu_seconds"] for c in r["curve"] if c["epoch"] <= best["epoch"])
        for label, hist in (("shoprec-best", best_hist), (f"shoprec-{m.lower()}-objective", mine)):
            hit = first_reaching(hist, target)
            my_cpu = hit.get("train_cpu_seconds_total") if hit else None
            out[f"{label}_vs_recbole-{m.lower()}"] = {
                "recbole_best_valid_ndcg@10_shoprec_protocol": target,
                "recbole_best_epoch": best["epoch"],
                "recbole_seconds_to_its_best": best["elapsed_seconds_total"],
                "recbole_train_cpu_seconds_to_its_best": rb_cpu_to_best,
                "shoprec_epoch_reaching_it": hit["epoch"] if hit else None,
                "shoprec_seconds_to_reach_it": hit["elapsed_seconds_total"] if hit else None,
                "shoprec_train_cpu_seconds_to_reach_it": my_cpu,
                "time_ratio_recbole_over_shoprec": (best["elapsed_seconds_total"] / hit["elapsed_seconds_total"]
                                                    if hit else None),
                "cpu_time_ratio_recbole_over_shoprec": rb_cpu_to_best / my_cpu if my_cpu else None,
                "target": "shoprec reaches it in at most 1/5 of RecBole's time: ratio >= 5",
            }
        rb_epoch = r["epoch_seconds_median"]
        my_epoch = sorted(h["epoch_seconds"] for h in mine)[len(mine) // 2]
        rb_cpu = sorted(c["epoch_cpu_seconds"] for c in r["curve"])[len(r["curve"]) // 2]
        my_cpu = sorted(h.get("epoch_cpu_seconds") or 0 for h in mine)[len(mine) // 2]
        out[f"throughput_{m.lower()}"] = {
            "what": ("median seconds for one pass over all training interactions, same data; RecBole d=64, 2 "
                     "layers, 2 heads, max_len 50; shoprec {}; shoprec side: the same objective, its recipe's loss; "
                     "CPU seconds are the rank-0 process's").format(model_size(models[
                         "shoprec-best" if m == "SASRec" else "shoprec-bert4rec"]["config"]["model"])),
            "shoprec_run": "shoprec-best" if m == "SASRec" else "shoprec-bert4rec",
            "shoprec_processes": models["shoprec-best" if m == "SASRec" else "shoprec-bert4rec"]["world_size"],
            "recbole_threads": r.get("threads", 1),
            "recbole_epoch_seconds": rb_epoch, "shoprec_epoch_seconds": my_epoch,
            "ratio_wall": rb_epoch / my_epoch if my_epoch else None,
            "recbole_epoch_cpu_seconds": rb_cpu, "shoprec_epoch_cpu_seconds": my_cpu,
            "ratio_cpu": rb_cpu / my_cpu if my_cpu else None,
        }
    if sasrec_ce_run and "SASRec" in peers:
        hist = run_history(Path(sasrec_ce_run))
        r = peers["SASRec"]
        rb_cpu = sorted(c["epoch_cpu_seconds"] for c in r["curve"])[len(r["curve"]) // 2]
        my_cpu = sorted(h["epoch_cpu_seconds"] for h in hist)[len(hist) // 2]
        my_wall = sorted(h["epoch_seconds"] for h in hist)[len(hist) // 2]
        out["throughput_sasrec_same_loss"] = {
            "what": "shoprec SASRec with full cross-entropy (RecBole's loss), 1 process, 1 thread; "
                    + checkpoint_size(Path(sasrec_ce_run)) + " (RecBole: d=64, 2 layers)",
            "run": str(sasrec_ce_run), "epochs_measured": len(hist),
            "recbole_epoch_seconds": r["epoch_seconds_median"], "shoprec_epoch_seconds": my_wall,
            "ratio_wall": r["epoch_seconds_median"] / my_wall,
            "recbole_epoch_cpu_seconds": rb_cpu, "shoprec_epoch_cpu_seconds": my_cpu, "ratio_cpu": rb_cpu / my_cpu,
        }
    out["shoprec_best_test_minus_recbole_best_test_ndcg@10"] = {
        f"recbole-{m.lower()}": models["shoprec-best"]["ndcg@10"] - r["test_shoprec_protocol"]["ndcg@10"]
        for m, r in peers.items()}
    return out


if __name__ == "__main__":
    main()
