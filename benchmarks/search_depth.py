"""Search quality and latency by cross-encoder re-rank depth on Home Depot (issue #5's search target).

    .venv/bin/python benchmarks/search_depth.py --from-work /tmp/rk-hd --work .shoprec/bench/search-hd \\
        --out benchmarks/results/search-homedepot.json          # or: make search-bench

The search path is the server's: BM25 top 100 and bi-encoder top 100 fused as the ranker's ``search``
settings say (``SearchSettings``: z-scored score sum by default, or reciprocal rank), the first ``depth``
re-ranked by the cross-encoder (blended with the fused score by ``rerank_weight``) (:class:`shoprec.ranker.search.SearchIndex`, loaded
the way ``shoprec serve`` loads it: :func:`shoprec.serving.app.load_search_ranker`, int8 cross-encoder,
float32 bi-encoder). Depths 0 (fused order, no cross-encoder), 10, 20 and 50, plus the float32
cross-encoder at depth 20 (and optionally shorter pairs, ``--pair-max-len``).

- Quality, in this process with the same ``SearchIndex.fused`` / ``SearchIndex.rerank`` calls the server
  makes (and its settings: traced encoders, int8 product vectors with the int8 cross-encoder): all HomeDepot test queries with a relevant product (split as ``benchmarks/ranker.py``: sorted
  search terms, ``default_rng(42)`` shuffle, 80/10/10), all 54,667 products ranked; NDCG@10, Recall@100,
  MRR@10 from ``benchmarks/ranker.py``'s ``retrieve_metrics``.
- Latency, over real HTTP: a ``shoprec serve`` process (``--search-index`` of the 54,667 products,
  ``--ranker``; a tiny recommender built here fills ``--model``), the keep-alive client of
  ``benchmarks/serve.py``, concurrency 1, ``--latency-queries`` test queries per depth; the server
  process's CPU time per request (from /proc) is reported next to wall time, because other jobs
  share this machine's cores.

Models: ``--from-work DIR`` takes what ``benchmarks/ranker.py homedepot`` left in DIR: its saved folders
(``--save-dir``: ``ranker/`` or ``lora-cross/`` + ``lora-bi/``) or else its LoRA training checkpoints
(``--work``: ``lora-cross/cross``, ``lora-bi/bi``), and ``lora-bi-vectors.npy`` (the bi-encoder's vectors of
all products in ``load_homedepot`` order); ``--cross``/``--bi`` (checkpoint files or folders, or saved
folders) and ``--vectors`` override. They are exported once into ``WORK/ranker`` (LoRA merged, the
bi-encoder under ``bi_encoder/``) and ``WORK/index``, again whenever the source files change.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ranker import RELEVANT, load_homedepot, retrieve_metrics  # noqa: E402
from serve import free_port, http_request, run_load, start, stop  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "benchmarks" / "results" / "search-homedepot.json"
SERVE_RESULT = REPO / "benchmarks" / "results" / "serve.json"
TARGET_P99_MS = 60.0
log = logging.getLogger("bench.search")


# ------------------------------------------------------------------ models
def _checkpoint_file(path: Path) -> Path | None:
    """The training checkpoint's state dict for ``path`` (a .safetensors file, a checkpoint folder or a run folder)."""
    for p in (path, path / "model.safetensors", path / "checkpoints" / "best" / "model.safetensors"):
        if p.is_file() and p.suffix == ".safetensors" and not (p.parent / "config.json").exists():
            return p
    return None


def source_stamp(*paths: Path | None) -> dict:
    """Where exported files came from (path, size and mtime of each file under them): re-export when it changes."""
    out = {}
    for p in paths:
        if p is not None and p.exists():
            files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
            out[str(p)] = [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]
    return out


def export_ranker(cross: Path, bi: Path | None, out: Path, args) -> Path:
    """A ranker folder (``shoprec.ranker.models.load_ranker`` layout) from saved folders or LoRA training checkpoints."""
    from safetensors.torch import load_file

    from shoprec.ranker.config import LoraSettings, RankerConfig
    from shoprec.ranker.models import build_bi_encoder, build_cross_encoder, save_model

    stamp = {"sources": source_stamp(cross, bi), "max_len": args.max_len, "lora_r": args.lora_r}
    if (out / "source.json").exists() and json.loads((out / "source.json").read_text()) == stamp:
        return out
    cfg = RankerConfig(max_len=args.max_len, bi_max_len=args.bi_max_len, aux_task="relevance", click_weight=0.0,
                       aux_weight=1.0, lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r, dropout=0.05))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for src, kind, dst in ((cross, "cross", tmp), (bi, "bi", tmp / "bi_encoder")):
        if src is None:
            continue
        ckpt = _checkpoint_file(src)
        if ckpt is None:  # a saved model folder already
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("bi_encoder", "search", "work"))
            continue
        model = build_cross_encoder(cfg) if kind == "cross" else build_bi_encoder(cfg)
        missing, unexpected = model.load_state_dict(load_file(str(ckpt)), strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise ValueError(f"{ckpt}: not a LoRA r={args.lora_r} {kind}-encoder checkpoint "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        save_model(model.eval(), dst, cfg)
        log.info("exported %s-encoder %s -> %s", kind, ckpt, dst)
    (tmp / "source.json").write_text(json.dumps(stamp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def build_index(out: Path, uids: list, titles: list[str], ranker, vectors: Path | None, ranker_dir: Path) -> Path:
    from shoprec.ranker.search import SearchIndex

    stamp = {"vectors": source_stamp(vectors), "ranker": json.loads((ranker_dir / "source.json").read_text())}
    if (out / "source.json").exists() and json.loads((out / "source.json").read_text()) == stamp:
        return out
    vec = np.load(vectors) if vectors else None  # else the bi-encoder encodes all titles (slow: ~9 min here)
    if vec is not None and vec.shape[0] != len(titles):
        raise ValueError(f"{vectors}: {vec.shape[0]} vectors for {len(titles)} products")
    shutil.rmtree(out, ignore_errors=True)
    SearchIndex.build([str(u) for u in uids], titles, ranker, vectors=vec).save(out)
    (out / "source.json").write_text(json.dumps(stamp))
    return out


def tiny_recommender(root: Path) -> Path:
    """``shoprec serve`` needs a recommender for --model: a small one on the built-in shop (about a minute)."""
    from shoprec.data.features import build_features
    from shoprec.data.ingest import ingest
    from shoprec.data.synth import synthesize
    from shoprec.seqrec.model import SeqRecConfig
    from shoprec.seqrec.train import TrainConfig, train

    if (root / "model" / "model.safetensors").exists():
        return root / "model"
    synthesize(root / "shop", users=300, items=80, days=5, seed=7)
    ingest(str(root / "shop"), root / "ingested", progress=False)
    build_features(root / "ingested", root / "features")
    train(root / "features", root / "model", TrainConfig(epochs=1, batch_size=32, patience=1,
          model=SeqRecConfig(objective="sasrec", max_len=20, d_model=32, n_heads=2, n_layers=1)), progress=False)
    return root / "model"


# ------------------------------------------------------------------ quality (in process)
def quality(index, queries: list[str], judged: list[dict], depth: int) -> dict:
    import torch

    t = time.perf_counter()
    fused = index.fused(queries, depth=100)  # as the server: the ranker's SearchSettings, fused scores kept
    cand_s = time.perf_counter() - t
    rankings, secs = [], []
    with torch.inference_mode():
        for q, (cand, scores) in zip(queries, fused):
            t0 = time.thread_time()
            rankings.append(index.rerank(q, cand, depth, scores)[0])  # blended by settings.rerank_weight
            secs.append(time.thread_time() - t0)
    return {**retrieve_metrics(rankings, judged), "rerank_cpu_ms_p50": round(1000 * float(np.median(secs)), 2),
            "candidates_s_all_queries": round(cand_s, 1)}


# ------------------------------------------------------------------ latency (HTTP)
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its threads) from /proc, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_latency(args, model_dir: Path, ranker_dir: Path, index_dir: Path, queries: list[str], depths: list[int],
                  extra: list[str], log_path: Path, c16_depth: int | None = None) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "shoprec.cli", "serve", "--model", str(model_dir), "--ranker", str(ranker_dir),
           "--search-index", str(index_dir), "--port", str(port), "--poll-seconds", "0", *extra]
    if args.torch_threads:
        cmd += ["--torch-threads", str(args.torch_threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("SHOPREC_API_TOKEN", None)
    proc = start(cmd, f"http://127.0.0.1:{port}", "/readyz", log_path, env)
    out = {}
    try:
        import httpx

        health = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        probe = httpx.post(f"http://127.0.0.1:{port}/v1/search", json={"query": queries[0], "k": 10,
                                                                          "rerank_depth": depths[-1]}).json()
        out["server"] = {"command": " ".join(["shoprec", *cmd[3:]]), "search": health.get("search"),
                         "answer_retrievers": probe["retrievers"]}
        for depth in depths:
            reqs = [http_request("/v1/search", {"query": q, "k": 10, "rerank_depth": depth}, port) for q in queries]
            run_load(port, reqs, 1, min(20, len(reqs)), 30)  # warm-up
            load0, cpu0 = os.getloadavg()[0], cpu_seconds(proc.pid)
            res = run_load(port, reqs, 1, len(reqs), args.latency_seconds)
            cpu = cpu_seconds(proc.pid) - cpu0
            row = {"p50_ms": round(res["p50_ms"], 2), "p99_ms": round(res["p99_ms"], 2), "rps_c1": round(res["rps"], 1),
                   "n": res["n"], "errors": res["errors"], "server_cpu_ms_per_request": round(1000 * cpu / res["n"], 2),
                   "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
            if depth == c16_depth:
                r16 = run_load(port, reqs, 16, len(reqs), args.latency_seconds)
                row.update({"rps_c16": round(r16["rps"], 1), "p50_ms_c16": round(r16["p50_ms"], 2),
                            "p99_ms_c16": round(r16["p99_ms"], 2), "errors_c16": r16["errors"]})
            out[depth] = row
            log.info("HTTP %s depth %d: %s", " ".join(extra) or "int8", depth, row)
    finally:
        stop(proc)
    return out


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from-work", default=".shoprec/ranker/bench-hd",
                    help="benchmarks/ranker.py's --work folder: lora-cross/cross, lora-bi/bi, lora-bi-vectors.npy.")
    ap.add_argument("--cross", default=None, help="Cross-encoder: checkpoint (file/folder) or saved ranker folder.")
    ap.add_argument("--bi", default=None, help="Bi-encoder: checkpoint (file/folder) or saved folder.")
    ap.add_argument("--vectors", default=None, help="Bi-encoder vectors of all products in load_homedepot's order.")
    ap.add_argument("--max-len", type=int, default=40, help="Pair length the checkpoints were trained with.")
    ap.add_argument("--bi-max-len", type=int, default=32)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--work", default=".shoprec/bench/search-hd")
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--depths", default="0,10,20,50")
    ap.add_argument("--pair-max-len", type=int, nargs="*", default=[],
                    help="Also measure depth 20 with the int8 cross-encoder on pairs cut to these lengths.")
    ap.add_argument("--latency-queries", type=int, default=300)
    ap.add_argument("--latency-seconds", type=float, default=120.0, help="Longest latency phase.")
    ap.add_argument("--quality-queries", type=int, default=0, help="Only this many test queries for quality (0: all).")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the in-process quality run.")
    ap.add_argument("--torch-threads", type=int, default=None, help="Server's --torch-threads (default: its own).")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--no-serve-json", action="store_true", help="Leave benchmarks/results/serve.json alone.")
    return ap.parse_args(argv)


def pick(given: str | None, *candidates: Path) -> Path:
    """The flag if given, else the first candidate that exists (else the last, reported as missing)."""
    return Path(given) if given else next((c for c in candidates if c.exists()), candidates[-1])


def model_paths(args) -> tuple[Path, Path, Path]:
    """Cross-encoder, bi-encoder and vectors: saved folders (benchmarks/ranker.py --save-dir) first, then its
    training checkpoints (--work)."""
    src = Path(args.from_work)
    cross = pick(args.cross, src / "ranker", src / "lora-cross" / "config.json", src / "lora-cross" / "cross")
    cross = cross.parent if cross.name == "config.json" else cross
    bi = pick(args.bi, src / "ranker" / "bi_encoder", src / "lora-bi" / "config.json", src / "lora-bi" / "bi")
    bi = bi.parent if bi.name == "config.json" else bi
    return cross, bi, pick(args.vectors, src / "lora-bi-vectors.npy")


def relevant_test_queries(df, uids) -> tuple[list[str], list[dict[int, float]]]:
    """Test queries with a relevant product and their judged products (corpus position -> relevance)."""
    test_df = df[df["split"] == "test"]
    pos = {u: i for i, u in enumerate(uids)}
    judged = [{pos[u]: r for u, r in zip(g["product_uid"], g["relevance"])}
              for _, g in test_df.groupby("search_term", sort=True)]
    test_q = sorted(test_df["search_term"].unique())
    keep = [i for i, j in enumerate(judged) if max(j.values()) >= RELEVANT]
    return [test_q[i] for i in keep], [judged[i] for i in keep]


def variants_of(depths: list[int], pair_max_len: list[int]) -> list[tuple[str, int, list[str]]]:
    """(name, depth, extra server flags): int8 at every depth, fp32 at 20, int8 on shorter pairs at 20."""
    variants = [("int8", d, []) for d in depths] + [("fp32", 20, ["--no-int8"])]
    return variants + [(f"int8-len{n}", 20, ["--pair-max-len", str(n)]) for n in pair_max_len]


def measure_quality(res: dict, args, variants, ranker_dir: Path, index_dir: Path, rq, rj, save) -> None:
    """All test queries (or --quality-queries), in process, the server's calls."""
    from shoprec.ranker.search import SearchIndex
    from shoprec.serving.search import load_search_ranker

    qn = args.quality_queries or len(rq)
    first_depth = variants[0][1]
    for name, depth, extra in variants:
        if name == "fp32" or name.startswith("int8-len") or name == "int8" and depth == first_depth:
            r = load_search_ranker(str(ranker_dir), int8=name != "fp32",
                                   pair_max_len=int(extra[1]) if name.startswith("int8-len") else None)
            index = SearchIndex.load(index_dir, r)
            if name != "fp32":  # as shoprec serve: --int8 also scores products with int8 vectors
                index.quantize_vectors()
        t = time.perf_counter()
        row = quality(index, rq[:qn], rj[:qn], depth)
        res["quality"][f"{name}@{depth}"] = {**row, "seconds": round(time.perf_counter() - t, 1)}
        log.info("quality %s depth %d: %s", name, depth, res["quality"][f"{name}@{depth}"])
        save()


def measure_latency(res: dict, args, variants, work: Path, ranker_dir: Path, index_dir: Path, rq, save) -> None:
    """Over HTTP, one server per cross-encoder variant."""
    model_dir = tiny_recommender(work / "rec")
    rng = np.random.default_rng(0)
    lat_q = [rq[i] for i in rng.permutation(len(rq))[:args.latency_queries]]
    groups: dict[tuple, list[int]] = {}
    for name, depth, extra in variants:
        groups.setdefault((name, tuple(extra)), []).append(depth)
    for (name, extra), ds in groups.items():
        got = serve_latency(args, model_dir, ranker_dir, index_dir, lat_q, ds, list(extra), work / f"serve-{name}.log",
                            c16_depth=20 if name == "int8" else None)
        res.setdefault("servers", {})[name] = got.pop("server")
        for d, row in got.items():
            res["latency"][f"{name}@{d}"] = row
        save()


def results_table(res: dict, variants) -> tuple[list[dict], dict]:
    """One row per variant (quality and latency side by side) and the p99 target at depth 20."""
    table = []
    for name, depth, _ in variants:
        key = f"{name}@{depth}"
        q, lat = res["quality"].get(key, {}), res["latency"].get(key, {})
        table.append({"cross_encoder": name, "rerank_depth": depth, "ndcg@10": q.get("ndcg@10"),
                      "recall@100": q.get("recall@100"), "mrr@10": q.get("mrr@10"), "p50_ms": lat.get("p50_ms"),
                      "p99_ms": lat.get("p99_ms"), "server_cpu_ms_per_request": lat.get("server_cpu_ms_per_request")})
    p99 = res["latency"].get("int8@20", {}).get("p99_ms")
    target = {"check": f"p99_ms at depth 20 (int8, concurrency 1) <= {TARGET_P99_MS:g}", "p99_ms": p99,
              "met": None if p99 is None else p99 <= TARGET_P99_MS}
    return table, target


def update_serve_json(res: dict, meta: dict, path: Path = SERVE_RESULT) -> None:
    """serve.json's search endpoint row: the int8 depth-20 latency of this run."""
    serve = json.loads(path.read_text())
    lat = res["latency"]["int8@20"]
    serve.setdefault("endpoints", {}).setdefault("search", {})["shoprec-homedepot-rerank20"] = {
        **{k: lat.get(k) for k in ("p50_ms", "p99_ms", "rps_c1", "rps_c16", "p50_ms_c16", "p99_ms_c16")},
        "note": "54,667 Home Depot products, BM25 + bi-encoder candidates fused, top 20 re-ranked by the int8 "
                f"cross-encoder (search settings {meta.get('search')})",
        "source": "benchmarks/results/search-homedepot.json", "command": res["command"]}
    path.write_text(json.dumps(serve, indent=2) + "\n")


def describe(argv, args, paths: dict, n_products: int, n_queries: int, meta: dict) -> dict:
    import torch

    return {
        "command": " ".join(["python benchmarks/search_depth.py", *(argv if argv is not None else sys.argv[1:])]),
        "models": {**paths, "pair_max_len": meta["max_len"], "bi_max_len": meta["bi_max_len"]},
        "data": {"products": n_products, "test_queries_with_relevant": n_queries},
        "quality": {}, "latency": {},
        "setup": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                  "quality": "in process, same SearchIndex.fused + SearchIndex.rerank calls as the server; "
                             f"torch threads {args.threads}",
                  "latency": "HTTP keep-alive client of benchmarks/serve.py, concurrency 1, k=10, "
                             "shoprec serve default threads (torch threads = cores // 2)",
                  "retrieval": "BM25 + bi-encoder candidates fused and re-ranked as the ranker config's search "
                               "settings say (search_settings); cross-encoder relevance head"},
        "search_settings": meta.get("search"),
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from shoprec.serving.search import load_search_ranker

    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.depths.split(",")]
    cross, bi, vectors = model_paths(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    df, uids, titles = load_homedepot()
    ranker_dir = export_ranker(cross, bi if bi.exists() else None, work / "ranker", args)
    index_dir = build_index(work / "index", uids, titles, load_search_ranker(str(ranker_dir), int8=False),
                            vectors if vectors.exists() else None, ranker_dir)
    rq, rj = relevant_test_queries(df, uids)
    meta = json.loads((ranker_dir / "config.json").read_text())["ranker"]
    paths = {"cross": str(cross), "bi": str(bi), "vectors": str(vectors), "exported": str(ranker_dir),
             "index": str(index_dir)}
    res = describe(argv, args, paths, len(uids), len(rq), meta)
    out_path = Path(args.out)

    def save():
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=2) + "\n")

    variants = variants_of(depths, args.pair_max_len)
    if not args.skip_quality:
        measure_quality(res, args, variants, ranker_dir, index_dir, rq, rj, save)
    measure_latency(res, args, variants, work, ranker_dir, index_dir, rq, save)
    res["table"], res["target"] = results_table(res, variants)
    save()
    if not args.no_serve_json and SERVE_RESULT.exists() and "int8@20" in res["latency"]:
        update_serve_json(res, meta)
    for row in res["table"]:
        log.info("%-10s depth %2d  NDCG@10 %s  R@100 %s  p50 %s  p99 %s ms", row["cross_encoder"], row["rerank_depth"],
                 row["ndcg@10"], row["recall@100"], row["p50_ms"], row["p99_ms"])
    log.info("target %s", res["target"])
    return res


if __name__ == "__main__":
    main()
