"""The ``shoprec`` command line: every pipeline step, the pipeline itself, the registry and the server.

Imports of heavy modules (torch, mlflow, kfp) happen inside each command so ``shoprec --help`` is quick.
"""

from __future__ import annotations

import json
import logging
import sys

import click


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="shoprec")
def main(verbose: bool) -> None:
    """shoprec: train, evaluate, register and serve a shop's search and recommendation models."""
    _setup_logging(verbose)


# ------------------------------------------------------------------ data
@main.group()
def data() -> None:
    """Built-in data and importers of public datasets."""


@data.command("synth")
@click.option("--out", required=True, help="Folder (or s3://bucket/prefix) to write the simulated shop to.")
@click.option("--users", default=2000, show_default=True)
@click.option("--items", default=400, show_default=True)
@click.option("--days", default=14, show_default=True)
@click.option("--seed", default=0, show_default=True)
def data_synth(out: str, users: int, items: int, days: int, seed: int) -> None:
    """Write a simulated shop: catalog.parquet and events/dt=DAY/events.jsonl.gz."""
    from shoprec.data.synth import synthesize

    if out.startswith("s3://"):
        import tempfile

        from shoprec.data.storage import upload_folder

        with tempfile.TemporaryDirectory() as tmp:
            stats = synthesize(tmp, users=users, items=items, days=days, seed=seed)
            upload_folder(tmp, out)
    else:
        stats = synthesize(out, users=users, items=items, days=days, seed=seed)
    _print_json(stats)


@data.group("import")
def data_import() -> None:
    """Write a public dataset as a raw event log (events/dt=DAY/events.jsonl.gz + catalog.parquet)."""


@data_import.command("s3rec")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, help="Folder for the raw event log.")
@click.option("--attributes", type=click.Path(exists=True, dir_okay=False), default=None,
              help="S3-Rec item2attributes.json for the catalog (default: NAME_item2attributes.json beside FILE).")
@click.option("--no-attributes", is_flag=True, help="Ignore any item2attributes.json.")
def data_import_s3rec(file: str, out: str, attributes: str | None, no_attributes: bool) -> None:
    """S3-Rec ``NAME.txt`` (user item item ... per line, time order; timestamps synthesised in that order)."""
    from shoprec.data.importers import import_s3rec, s3rec_attributes_file

    if no_attributes:
        attributes = None
    elif attributes is None:
        attributes = s3rec_attributes_file(file)
    _print_json(import_s3rec(file, out, attributes=attributes))


@data_import.command("recbole")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, help="Folder for the raw event log.")
@click.option("--name", default=None, help="Dataset name (NAME.inter); default: the only .inter file.")
def data_import_recbole(folder: str, out: str, name: str | None) -> None:
    """RecBole atomic files (NAME.inter with timestamps, NAME.item for titles)."""
    from shoprec.data.importers import import_recbole

    _print_json(import_recbole(folder, out, name=name))


@data_import.command("clickstream")
@click.argument("csv_file", metavar="CSV", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, help="Folder for the raw event log.")
def data_import_clickstream(csv_file: str, out: str) -> None:
    """DIGINETICA-style ';'-separated item views (session_id;user_id;item_id;timeframe;eventdate)."""
    from shoprec.data.importers import import_clickstream

    _print_json(import_clickstream(csv_file, out))


# ------------------------------------------------------------------ steps
@main.command("ingest")
@click.option("--source", required=True, help="Raw data: a folder or s3://bucket/prefix (events/ and catalog.parquet).")
@click.option("--out", required=True)
@click.option("--max-quarantine", default=0.05, show_default=True, help="Fail if more than this fraction is quarantined.")
def ingest_cmd(source: str, out: str, max_quarantine: float) -> None:
    """Validate raw events; accepted rows to Parquet by day, rejected rows to quarantine.jsonl."""
    from shoprec.data.ingest import IngestError, ingest

    try:
        report = ingest(source, out, max_quarantine_fraction=max_quarantine)
    except IngestError as e:
        raise click.ClickException(str(e)) from e
    _print_json(report.to_dict())


@main.command("features")
@click.option("--ingested", required=True)
@click.option("--out", required=True)
@click.option("--seed", default=0, show_default=True)
def features_cmd(ingested: str, out: str, seed: int) -> None:
    """Sequences, item vocabulary, search pairs and click samples from ingested events."""
    from shoprec.data.features import build_features

    _print_json(build_features(ingested, out, seed=seed))


@main.group()
def train() -> None:
    """Train models (under torchrun)."""


@train.command("seqrec")
@click.option("--features", required=True)
@click.option("--out", required=True)
@click.option("--nproc", default=2, show_default=True, help="torchrun workers (gloo on CPU, one per GPU with NCCL).")
@click.option("--recipe", default=None, help="YAML recipe (configs/seqrec/*.yaml).")
@click.option("--epochs", type=int, default=None)
@click.option("--objective", type=click.Choice(["bert4rec", "sasrec"]), default=None)
@click.option("--loss", type=click.Choice(["ce", "sampled_softmax", "gbce"]), default=None)
def train_seqrec(features: str, out: str, nproc: int, recipe: str | None, epochs: int | None,
                 objective: str | None, loss: str | None) -> None:
    """The sequential recommender, DDP-trained."""
    from shoprec.seqrec.launch import launch

    model = {k: v for k, v in {"objective": objective, "loss": loss}.items() if v}
    summary = launch(features, out, nproc=nproc, recipe=recipe, overrides={"epochs": epochs, "model": model})
    _print_json({k: summary[k] for k in ("best_epoch", "train_seconds", "sequences_per_s", "valid", "test")})


@main.command("evaluate")
@click.option("--model", "model_dir", required=True, help="Candidate model folder.")
@click.option("--features", required=True)
@click.option("--out", required=True, help="Folder for metrics.json and report.html.")
@click.option("--champion", default=None, help="Champion model folder or models:/NAME@champion URI.")
@click.option("--margin", default=0.0, show_default=True)
def evaluate_cmd(model_dir: str, features: str, out: str, champion: str | None, margin: float) -> None:
    """Compare the candidate with popularity and the champion; decide the gate."""
    from shoprec.evaluate import evaluate

    _print_json(evaluate(model_dir, features, out, champion=champion, margin=margin))


# ------------------------------------------------------------------ pipeline
@main.group()
def pipeline() -> None:
    """Compile, run locally, submit and schedule the retrain pipeline."""


@pipeline.command("compile")
@click.option("-o", "--output", default="retrain.yaml", show_default=True)
@click.option("--cluster", is_flag=True, help="The cluster variant: GPU training, secrets as env, KServe deploy.")
def pipeline_compile(output: str, cluster: bool) -> None:
    """Compile the KFP v2 pipeline to YAML."""
    from shoprec.pipeline.runner import compile_pipeline

    click.echo(compile_pipeline(output, cluster=cluster))


@pipeline.command("run")
@click.option("--local", "local", is_flag=True, required=True, help="Run with kfp.local on this machine.")
@click.option("--containers", is_flag=True,
              help="Every step in its image (kfp.local's DockerRunner; build them with `make images-local`), with a "
                   "local mlflow server and S3 API started unless MLFLOW_TRACKING_URI / AWS_ENDPOINT_URL are set.")
@click.option("--data", "data_uri", default=None, help="Raw data folder or s3:// URI (default: built-in shop).")
@click.option("--epochs", default=None, type=int)
@click.option("--workers", default=2, show_default=True)
@click.option("--model-name", default="shoprec-seqrec", show_default=True)
@click.option("--margin", default=0.0, show_default=True)
@click.option("--lookback-days", default=0, show_default=True, help="Train on the newest N days of logs (0: all).")
@click.option("--warm-start", is_flag=True, help="Start the recommender from the champion's weights.")
@click.option("--webhook-url", default="", help="Post the run's outcome here (Slack-compatible JSON).")
@click.option("--shards", default=1, show_default=True, type=click.IntRange(1),
              help="Shopper-hash shards: features and evaluation fan out into this many tasks.")
@click.option("--batch-shards", default=2, show_default=True, help="Shards of the nightly batch recommendations.")
@click.option("--batch-recs-uri", default="", help="Where they go (default: DATA/recommendations).")
@click.option("--redis-url", default="", help="Also load them into this Redis (the server's --rec-store).")
def pipeline_run(local: bool, containers: bool, data_uri: str | None, epochs: int | None, workers: int,
                 model_name: str, margin: float, lookback_days: int, warm_start: bool, webhook_url: str,
                 shards: int, batch_shards: int, batch_recs_uri: str, redis_url: str) -> None:
    """Run the whole DAG on this machine."""
    from shoprec.pipeline.containers import ContainerRunError
    from shoprec.pipeline.runner import run_local

    params = {"lookback_days": lookback_days, "warm_start": warm_start, "webhook_url": webhook_url, "shards": shards,
              "batch_shards": batch_shards, "batch_recs_uri": batch_recs_uri, "redis_url": redis_url}
    try:
        _print_json(run_local(data_uri=data_uri, epochs=epochs, workers=workers, model_name=model_name, margin=margin,
                              runner="docker" if containers else "subprocess", params=params))
    except ContainerRunError as e:
        raise click.ClickException(str(e)) from e


# ------------------------------------------------------------------ model registry
@main.group()
def models() -> None:
    """The model registry (MLFLOW_TRACKING_URI): versions, champion/challenger promotion, rollback, history."""


def _registry_call(fn, *args, **kwargs):
    from mlflow.exceptions import MlflowException

    from shoprec.registry.versions import RegistryError

    try:
        return fn(*args, **kwargs)
    except RegistryError as e:
        raise click.ClickException(str(e)) from e
    except MlflowException as e:
        raise click.ClickException(f"MLflow: {e.message}") from e


@models.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_list(name: str | None, as_json: bool) -> None:
    """Registered models, or the versions of NAME with their aliases, gate and evaluation metrics."""
    from shoprec.registry import versions as registry

    if not name:
        names = _registry_call(registry.list_models)
        if as_json:
            _print_json(names)
        else:
            click.echo("\n".join(names) if names else f"no registered models in {registry.tracking_uri()}")
        return
    rows = _registry_call(registry.list_versions, name)
    if as_json:
        _print_json(rows)
        return
    click.echo(f"{'version':>7}  {'aliases':<22} {'gate':<5} {'ndcg@10':>8} {'hr@10':>7} {'mrr@10':>7}  created")
    for r in rows:
        ev = [f"{v:.4f}" if isinstance(v := r["evaluation"].get(k), (int, float)) else "-"
              for k in ("ndcg@10", "hr@10", "mrr@10")]
        click.echo(f"{r['version']:>7}  {','.join(r['aliases']) or '-':<22} {r['gate'] or '-':<5} "
                   f"{ev[0]:>8} {ev[1]:>7} {ev[2]:>7}  {r['created'] or '-'}")


_TARGET = click.option("--target", type=click.Choice(["none", "local", "kserve"]), default="none", show_default=True,
                       help="Also serve the version, pinned (models:/NAME/N) with all traffic: the local server "
                            "pointer or the KServe InferenceService (server-side apply, waits for Ready). "
                            "@champion moves only after that succeeded.")
_NAMESPACE = click.option("--namespace", default="shoprec", show_default=True, help="The InferenceService's namespace.")
_SERVICE = click.option("--service", default=None, help="The InferenceService's name (default: NAME).")
_TIMEOUT = click.option("--timeout", "timeout_s", default=600.0, show_default=True,
                        help="Seconds to wait for the InferenceService to get Ready.")


def _serve_pinned(name: str, version: str, target: str, namespace: str, service: str | None, timeout_s: float) -> str:
    """Serve models:/NAME/VERSION on the target ("none": nothing); what now serves it, for the message."""
    if target == "none":
        return ""
    from shoprec.pipeline import deploy, k8s

    try:
        record = deploy.pin(name, version, target, namespace=namespace, service=service, ready_timeout_s=timeout_s)
    except (k8s.RolloutError, k8s.NoClusterError, ValueError) as e:
        raise click.ClickException(f"{e}; @champion not moved") from e
    where = f"{record['namespace']}/{record['service']}" if target == "kserve" else "the local server pointer"
    return f"; {where} serves {record['model_uri']}"


@models.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if the version did not pass its evaluation gate.")
@click.option("--reason", default="", help="Why (kept in the alias history).")
@_TARGET
@_NAMESPACE
@_SERVICE
@_TIMEOUT
def models_promote(name: str, version: str, force: bool, reason: str, target: str, namespace: str,
                   service: str | None, timeout_s: float) -> None:
    """Make VERSION of NAME the champion (it must have passed evaluation unless --force)."""
    from shoprec.registry import versions as registry

    reason = _registry_call(registry.check_promotable, name, version, reason=reason, force=force)
    served = _serve_pinned(name, version, target, namespace, service, timeout_s)
    entry = _registry_call(registry.record_alias, name, registry.CHAMPION, version, reason)
    click.echo(f"{name}@champion -> v{entry['version']} (was {('v' + entry['previous']) if entry['previous'] else 'none'})"
               f"{served}")


@models.command("rollback")
@click.argument("name")
@click.option("--reason", default="", help="Why (kept in the alias history).")
@_TARGET
@_NAMESPACE
@_SERVICE
@_TIMEOUT
def models_rollback(name: str, reason: str, target: str, namespace: str, service: str | None, timeout_s: float) -> None:
    """Move NAME's champion back to the previous champion in its alias history."""
    from shoprec.registry import versions as registry

    current, previous = _registry_call(registry.rollback_target, name)
    served = _serve_pinned(name, previous, target, namespace, service, timeout_s)
    entry = _registry_call(registry.record_alias, name, registry.CHAMPION, previous,
                           reason or f"rollback from v{current}", action="rollback")
    click.echo(f"{name}@champion -> v{entry['version']} (rolled back from v{entry['previous']}){served}")


@models.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models_history(name: str, as_json: bool) -> None:
    """Who moved which alias of NAME to which version, when and why."""
    from shoprec.registry import versions as registry

    _registry_call(registry.list_versions, name)  # a clear error for an unknown model
    entries = _registry_call(registry.alias_history, name)
    if as_json:
        _print_json(entries)
        return
    for e in entries:
        prev = f"v{e['previous']}" if e.get("previous") else "none"
        click.echo(f"{e['at']}  {e['alias']:<10} {prev:>5} -> v{e['version']:<4} {e.get('action', 'move'):<8} "
                   f"by {e['by']}: {e['reason']}")


# ------------------------------------------------------------------ pipeline on a cluster (submit, schedule)
def _compiled_package(package: str | None, cluster: bool) -> str:
    """The given package, or the pipeline compiled now to a temporary file."""
    if package:
        return package
    import tempfile

    from shoprec.pipeline.runner import compile_pipeline

    path = tempfile.NamedTemporaryFile(prefix="shoprec-retrain-", suffix=".yaml", delete=False).name
    return compile_pipeline(path, cluster=cluster)


def _kfp_call(fn, *args, **kwargs):
    from shoprec.pipeline.kfp_client import KfpError

    try:
        return fn(*args, **kwargs)
    except (KfpError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e


def _kfp_auth(token_file: str | None) -> dict:
    """The KFP credentials: --token-file (or KF_PIPELINES_SA_TOKEN_PATH), else a token in KF_PIPELINES_TOKEN."""
    import os

    from shoprec.pipeline.kfp_client import TOKEN_ENV

    token = os.environ.get(TOKEN_ENV) or None
    if token and token_file:
        raise click.UsageError(f"both {TOKEN_ENV} and --token-file are set: give one")
    return {"token": token, "token_file": token_file}


def _kfp_options(fn):
    """--namespace, --token-file and --pipeline-name, shared by submit and schedule."""
    fn = click.option("--pipeline-name", default=None,
                      help="KFP pipeline to add the version to (default: the package's pipeline name).")(fn)
    fn = click.option("--token-file", default=None, envvar="KF_PIPELINES_SA_TOKEN_PATH",
                      type=click.Path(dir_okay=False),
                      help="File with a bearer token for the KFP API, read on every request (e.g. a projected "
                           "service-account token). Or put the token itself in KF_PIPELINES_TOKEN.")(fn)
    return click.option("--namespace", default=None, envvar="KF_PIPELINES_NAMESPACE",
                        help="Multi-user KFP: the profile namespace for the pipeline, experiment and runs.")(fn)


@pipeline.command("submit")
@click.option("--host", required=True, envvar="KF_PIPELINES_ENDPOINT", help="KFP API, e.g. http://ml-pipeline-ui.kubeflow")
@click.option("--experiment", default=None, help="Experiment name (default: shoprec; made if missing).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline argument; repeat for more.")
@click.option("--package", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Compiled pipeline YAML (default: compile the pipeline now).")
@click.option("--run-name", default=None)
@click.option("--cluster/--portable", default=True, show_default=True,
              help="When compiling: the cluster variant (GPUs, secrets, KServe) or the portable one.")
@_kfp_options
def pipeline_submit(host: str, experiment: str | None, params: tuple[str, ...], package: str | None,
                    run_name: str | None, cluster: bool, namespace: str | None, token_file: str | None,
                    pipeline_name: str | None) -> None:
    """Upload the retrain pipeline as a new pipeline version and start one run of it on Kubeflow Pipelines."""
    from shoprec.pipeline import kfp_client

    auth = _kfp_auth(token_file)
    arguments = _kfp_call(kfp_client.parse_params, params)
    _print_json(_kfp_call(kfp_client.submit, _compiled_package(package, cluster), host, experiment=experiment,
                          params=arguments, run_name=run_name, namespace=namespace, pipeline_name=pipeline_name,
                          **auth))


@pipeline.command("schedule")
@click.option("--host", required=True, envvar="KF_PIPELINES_ENDPOINT", help="KFP API, e.g. http://ml-pipeline-ui.kubeflow")
@click.option("--cron", default="0 0 2 * * *", show_default=True,
              help="KFP cron, 6 fields with seconds first (server time zone, usually UTC).")
@click.option("--name", default="shoprec-retrain-nightly", show_default=True, help="The recurring run's name.")
@click.option("--experiment", default=None, help="Experiment name (default: shoprec; made if missing).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Pipeline argument; repeat for more.")
@click.option("--package", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Compiled pipeline YAML (default: compile the pipeline now).")
@click.option("--cluster/--portable", default=True, show_default=True,
              help="When compiling: the cluster variant (GPUs, secrets, KServe) or the portable one.")
@click.option("--disable", "disable", default=None, metavar="NAME", help="Disable this recurring run (name or id).")
@click.option("--list", "list_", is_flag=True, help="List the recurring runs.")
@_kfp_options
def pipeline_schedule(host: str, cron: str, name: str, experiment: str | None, params: tuple[str, ...],
                      package: str | None, cluster: bool, disable: str | None, list_: bool, namespace: str | None,
                      token_file: str | None, pipeline_name: str | None) -> None:
    """Run the retrain pipeline's new version on a schedule (one at a time, no catch-up), replacing one of the
    same name (the new one is created before the old one is deleted); or --disable / --list schedules."""
    from shoprec.pipeline import kfp_client

    auth = _kfp_auth(token_file)
    if list_:
        _print_json(_kfp_call(kfp_client.list_schedules, host, namespace=namespace, **auth))
    elif disable:
        _print_json(_kfp_call(kfp_client.disable_schedule, host, disable, namespace=namespace, **auth))
    else:
        arguments = _kfp_call(kfp_client.parse_params, params)
        cron = _kfp_call(kfp_client.check_cron, cron)  # before compiling, so a bad cron fails fast
        _print_json(_kfp_call(kfp_client.schedule, _compiled_package(package, cluster), host, cron=cron, name=name,
                              experiment=experiment, params=arguments, namespace=namespace,
                              pipeline_name=pipeline_name, **auth))


# ------------------------------------------------------------------ serving and demo
@main.command("serve")
@click.option("--model", "model_uri", required=True, help="models:/NAME@champion, runs:/..., or a model folder.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
@click.option("--ranker", "ranker_dir", default=None,
              help="Ranker folder or models:/ URI: /v1/search fuses BM25 and bi-encoder candidates and re-ranks them.")
@click.option("--search-index", default=None,
              help="A saved SearchIndex folder (BM25 + product vectors) to search instead of the served items.")
@click.option("--int8/--no-int8", default=True, show_default=True,
              help="Quantise the ranker's cross-encoder to int8 for CPU scoring.")
@click.option("--pair-max-len", default=None, type=int,
              help="Longest (query, title) pair in tokens for the cross-encoder (default: the ranker's max_len).")
@click.option("--poll-seconds", default=30.0, show_default=True,
              help="Look up the models:/NAME@ALIAS alias this often and swap in a moved version (0: never).")
@click.option("--max-batch", default=64, show_default=True, help="Most concurrent requests in one model forward.")
@click.option("--batch-wait-ms", default=0.0, show_default=True,
              help="Extra time to collect a batch (0: batch whatever queued while the last forward ran).")
@click.option("--torch-threads", default=None, type=int, help="Intra-op threads (default: half the cores, at most 4).")
@click.option("--max-body", default=64 * 1024, show_default=True, help="Largest request body in bytes (413 above).")
@click.option("--infer-thread/--infer-on-loop", default=None,
              help="Batched forwards on their own thread or on the event loop (default: a thread with > 2 cores).")
@click.option("--rec-store", default="", envvar="SHOPREC_REC_STORE_URL",
              help="Redis URL with the night's batch lists: /v1/recommend answers known shoppers from it, the model "
                   "otherwise.")
def serve_cmd(model_uri: str, host: str, port: int, ranker_dir: str | None, search_index: str | None, int8: bool,
              pair_max_len: int | None, poll_seconds: float, max_batch: int, batch_wait_ms: float,
              torch_threads: int | None, max_body: int, infer_thread: bool | None, rec_store: str) -> None:
    """Serve the model over HTTP: /v1/recommend, /v1/score, /v1/search, /admin/reload, /readyz, /metrics.

    With SHOPREC_API_TOKEN set, /v1/* and /admin/* need Authorization: Bearer <token>.
    """
    from shoprec.serving.app import run_server

    try:
        run_server(model_uri, host=host, port=port, ranker_dir=ranker_dir, poll_seconds=poll_seconds,
                   max_batch=max_batch, max_wait_ms=batch_wait_ms, torch_threads=torch_threads, max_body=max_body,
                   infer_thread=infer_thread, search_index=search_index, int8=int8, pair_max_len=pair_max_len,
                   rec_store=rec_store)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from e


@main.command("demo")
@click.option("--port", default=8765, show_default=True)
def demo_cmd(port: int) -> None:
    """Synthesize the shop, run the whole pipeline locally, serve the champion and ask it once."""
    from shoprec.pipeline.demo import run_demo

    run_demo(port=port)


if __name__ == "__main__":
    main()
