"""The retrain DAG and its cluster variant.

    ExitHandler(notify):
    list-partitions (data window) -> ParallelFor(day): ingest -> day-features
                    -> merge-ingest, gather-partials, ParallelFor(shopper shard of ``shards``): feature-shard -> features (vocabulary,
                       manifest) -> train (warm start optional; each rank reads its share of the shards)
                    -> ParallelFor(shard): evaluate-shard -> evaluate (sums, gate) -> register (@challenger)
                    -> if the gate passed: deploy (canary of models:/NAME/N) -> promote (checks, @champion)
                       -> batch recommendations with vN: batch-plan -> ParallelFor(shard): batch-shard -> batch-commit
                    -> else: the same batch with the @champion, so the night still gets its recommendations
    notify: whatever happened, one message to ``webhook_url`` (failed, promoted, kept, canary rolled back)

``retrain`` runs anywhere (``shoprec pipeline run --local`` runs it with kfp.local); ``retrain_cluster``
is the same DAG with what a Kubernetes cluster needs: GPUs for the train step, a memory-backed
``/dev/shm`` for NCCL, node selector and tolerations for GPU nodes, credentials from Secrets (keys that may
be absent optional, see ``shoprec.pipeline.k8s.OPTIONAL_SECRET_KEYS``), retries, and the image settings of the
compiling shell on every task (``shoprec.pipeline.k8s.image_env``) so the TrainJob and InferenceService a step
creates use the same images as the steps.
Compile with ``shoprec pipeline compile [--cluster] -o retrain.yaml`` or ``kfp dsl compile --py
pipelines/retrain.py --function retrain --output retrain.yaml``.
"""

import json
from pathlib import Path

import yaml
from kfp import dsl, kubernetes

from components.batch_recommend import batch_commit, batch_plan, batch_shard
from components.day_features import day_features
from components.deploy import deploy
from components.evaluate import evaluate
from components.evaluate_ranker import evaluate_ranker
from components.evaluate_shard import evaluate_shard
from components.feature_shard import feature_shard
from components.features import features
from components.gather_partials import gather_partials
from components.ingest import ingest
from components.list_partitions import list_partitions
from components.merge_ingest import merge_ingest
from components.notify import notify
from components.promote import promote
from components.register import register
from components.shard_numbers import shard_numbers
from components.train import launcher_gpus, train
from components.train_ranker import train_ranker
from shoprec.pipeline.k8s import SERVER_SECRET, image_env, secret_env_groups
from shoprec.pipeline.trainjob import SECRET_ENV, nccl_debug_requested

# One line of JSON (which is also YAML): KFP copies defaults into a comment header of the compiled
# file, and a multi-line default would break that YAML.
RECIPE = json.dumps(yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "seqrec" / "builtin.yaml").read_text()))
RANKER_RECIPE = json.dumps(yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "ranker" / "builtin.yaml").read_text()))
MAX_PARALLEL_DAYS = 8
MAX_PARALLEL_SHARDS = 16


def _dag(data_uri, epochs, workers, model_name, margin, max_quarantine, deploy_target, recipe, ranker_name,
         ranker_recipe, canary_percent, max_error_rate, ready_timeout, window, warm_start, webhook_url,
         nodes=1, gpus=None, shards=1, batch=None) -> dict:
    notify_task = notify(webhook_url=webhook_url, model_name=model_name, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    notify_task.set_caching_options(False)
    with dsl.ExitHandler(notify_task, name="retrain"):
        tasks = _steps(data_uri, epochs, workers, model_name, margin, max_quarantine, deploy_target, recipe,
                       ranker_name, ranker_recipe, canary_percent, max_error_rate, ready_timeout, window, warm_start,
                       nodes, shards, batch)
        if gpus is not None:  # cluster: the train step's GPU count, inside the handler like every task it feeds
            tasks["launcher_gpus"] = launcher_gpus(gpus=gpus, nodes=nodes)
    return {**tasks, "notify": notify_task}


def _steps(data_uri, epochs, workers, model_name, margin, max_quarantine, deploy_target, recipe, ranker_name,
           ranker_recipe, canary_percent, max_error_rate, ready_timeout, window, warm_start, nodes, shards,
           batch) -> dict:
    lookback_days, start_date, end_date = window
    days = list_partitions(data_uri=data_uri, lookback_days=lookback_days, start_date=start_date, end_date=end_date)
    days.set_caching_options(False)  # new days arrive under the same URI
    with dsl.ParallelFor(days.output, parallelism=MAX_PARALLEL_DAYS) as day:
        ingest_task = ingest(data_uri=data_uri, partition=day, max_quarantine=max_quarantine)
        ingest_task.set_caching_options(False)  # a day's file can be re-delivered with late events
        day_task = day_features(ingested=ingest_task.outputs["ingested"])
    merge_task = merge_ingest(parts=dsl.Collected(ingest_task.outputs["ingested"]), max_quarantine=max_quarantine)
    # The merge by shopper: one task per shopper-hash shard over all days' partials, then the small final step.
    gather_task = gather_partials(partials=dsl.Collected(day_task.outputs["partial"]))
    shard_list = shard_numbers(shards=shards)
    with dsl.ParallelFor(shard_list.output, parallelism=MAX_PARALLEL_SHARDS) as shard:
        shard_task = feature_shard(partials=gather_task.outputs["gathered"],
                                   ingest_summary=merge_task.outputs["summary"], shard=shard, shards=shards)
    features_task = features(shards=dsl.Collected(shard_task.outputs["features_shard"]),
                             ingest_summary=merge_task.outputs["summary"])
    train_task = train(features=features_task.outputs["features"], recipe=recipe, epochs=epochs, workers=workers,
                       nodes=nodes, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,  # checkpoint key: retries resume
                       warm_start=warm_start, model_name=model_name)
    with dsl.ParallelFor(shard_list.output, parallelism=MAX_PARALLEL_SHARDS) as eval_shard:
        eval_shard_task = evaluate_shard(model=train_task.outputs["model"], features=features_task.outputs["features"],
                                         shard=eval_shard, shards=shards, model_name=model_name)
        eval_shard_task.set_caching_options(False)  # the champion it compares with changes between runs
    eval_task = evaluate(model=train_task.outputs["model"], parts=dsl.Collected(eval_shard_task.outputs["part"]),
                         margin=margin)
    eval_task.set_caching_options(False)  # the champion it compares with changes between runs
    register_task = register(model=train_task.outputs["model"], evaluation=eval_task.outputs["evaluation"],
                             model_name=model_name, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                             data_snapshot=merge_task.outputs["Output"], kind="seqrec")
    register_task.set_caching_options(False)
    # The ranker trains in parallel with the recommender, on the same features, and is gated on its own.
    ranker_task = train_ranker(features=features_task.outputs["features"], recipe=ranker_recipe)
    ranker_eval = evaluate_ranker(ranker=ranker_task.outputs["ranker"], features=features_task.outputs["features"],
                                  model_name=ranker_name, margin=margin)
    ranker_eval.set_caching_options(False)
    ranker_register = register(model=ranker_task.outputs["ranker"], evaluation=ranker_eval.outputs["evaluation"],
                               model_name=ranker_name, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                               data_snapshot=merge_task.outputs["Output"], kind="ranker")
    ranker_register.set_caching_options(False)
    with dsl.If(eval_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition syntax)
        # The exact version, pinned; the ranker's new version rides along when its own gate passed.
        deploy_task = deploy(model_name=model_name, version=register_task.outputs["version"], target=deploy_target,
                             ranker_name=ranker_name, ranker_version=ranker_register.outputs["version"],
                             ranker_gate=ranker_register.outputs["gate_passed"], canary_percent=canary_percent,
                             ready_timeout=ready_timeout)
        deploy_task.set_caching_options(False)
        promote_task = promote(deployment=deploy_task.output, max_error_rate=max_error_rate,
                               ready_timeout=ready_timeout)
        promote_task.set_caching_options(False)
        batch_tasks = _batch_recs(features_task, data_uri, model_name, register_task.outputs["version"], batch,
                                  after=promote_task)
    with dsl.Else(name="gate-failed"):  # the night's recommendations still come, from the @champion
        kept_tasks = _batch_recs(features_task, data_uri, model_name, "", batch)
    return {"days": days, "ingest": ingest_task, "day_features": day_task, "merge": merge_task,
            "gather_partials": gather_task, "shard_numbers": shard_list, "feature_shard": shard_task, "features": features_task,
            "evaluate_shard": eval_shard_task, "train": train_task, "evaluate": eval_task, "register": register_task,
            "deploy": deploy_task, "promote": promote_task, "train_ranker": ranker_task,
            "evaluate_ranker": ranker_eval, "register_ranker": ranker_register,
            **batch_tasks, **{f"{name}_kept": task for name, task in kept_tasks.items()}}


def _batch_recs(features_task, data_uri, model_name, version, batch, after=None) -> dict:
    """Top-K for every shopper of the window with ``version`` ("": the @champion), in shards, committed under
    ``batch_recs_uri/date=D/version=N/`` and loaded into Redis when a URL is given (shoprec.seqrec.batch)."""
    shards, k, dest_uri, date, redis_url = batch
    plan = batch_plan(features=features_task.outputs["features"], model_name=model_name, version=version,
                      shards=shards, date=date)
    plan.set_caching_options(False)  # the champion and today's date change between runs
    if after is not None:
        plan.after(after)
    with dsl.ParallelFor(plan.output, parallelism=MAX_PARALLEL_SHARDS) as spec:
        shard = batch_shard(features=features_task.outputs["features"], spec=spec, k=k)
    commit = batch_commit(parts=dsl.Collected(shard.outputs["recs"]), data_uri=data_uri, dest_uri=dest_uri,
                          redis_url=redis_url)
    commit.set_caching_options(False)  # it writes to S3 and Redis
    return {"batch_plan": plan, "batch_shard": shard, "batch_commit": commit}


@dsl.pipeline(name="shoprec-retrain",
              description="Retrain the shop's recommender and promote it if it beats the champion.")
def retrain(
    data_uri: str = "s3://shoprec-raw/shop",
    epochs: int = 0,
    workers: int = 2,
    model_name: str = "shoprec-seqrec",
    margin: float = 0.0,
    max_quarantine: float = 0.05,
    deploy_target: str = "local",
    recipe: str = RECIPE,
    ranker_name: str = "shoprec-ranker",
    ranker_recipe: str = RANKER_RECIPE,
    canary_percent: int = 10,
    max_error_rate: float = 0.01,
    ready_timeout: int = 900,
    lookback_days: int = 0,
    start_date: str = "",
    end_date: str = "",
    warm_start: bool = False,
    webhook_url: str = "",
    shards: int = 1,
    batch_shards: int = 2,
    batch_k: int = 20,
    batch_recs_uri: str = "",
    batch_date: str = "",
    redis_url: str = "",
):
    _dag(data_uri, epochs, workers, model_name, margin, max_quarantine, deploy_target, recipe, ranker_name,
         ranker_recipe, canary_percent, max_error_rate, ready_timeout, (lookback_days, start_date, end_date),
         warm_start, webhook_url, shards=shards, batch=(batch_shards, batch_k, batch_recs_uri, batch_date, redis_url))


# What the promote step adds: the server's bearer token, for its smoke requests.
SERVER_TOKEN_ENV = {"SHOPREC_API_TOKEN": (SERVER_SECRET, "api-token")}
# What the batch commit adds: the Redis URL (with its password) the server reads too; optional.
REC_STORE_ENV = {"SHOPREC_REC_STORE_URL": (SERVER_SECRET, "rec-store-url")}
BATCH_TASKS = tuple(f"{step}{branch}" for branch in ("", "_kept") for step in ("batch_plan", "batch_shard", "batch_commit"))


def _secrets_as_env(task, secret_env: dict[str, tuple[str, str]] = SECRET_ENV) -> None:
    """Env from Secrets; keys that may be absent (shoprec.pipeline.k8s.OPTIONAL_SECRET_KEYS) in a separate optional group."""
    for secret, optional, key_to_env in secret_env_groups(secret_env):
        kubernetes.use_secret_as_env(task, secret, secret_key_to_env=key_to_env, optional=optional)


@dsl.pipeline(name="shoprec-retrain-cluster",
              description="The retrain DAG on Kubernetes: GPU DDP training, secrets from the cluster, KServe deploy.")
def retrain_cluster(
    data_uri: str = "s3://shoprec-raw/shop",
    epochs: int = 0,
    gpus: int = 1,
    nodes: int = 1,
    model_name: str = "shoprec-seqrec",
    margin: float = 0.0,
    max_quarantine: float = 0.05,
    deploy_target: str = "kserve",
    recipe: str = RECIPE,
    ranker_name: str = "shoprec-ranker",
    ranker_recipe: str = RANKER_RECIPE,
    canary_percent: int = 10,
    max_error_rate: float = 0.01,
    ready_timeout: int = 900,
    lookback_days: int = 0,
    start_date: str = "",
    end_date: str = "",
    warm_start: bool = False,
    webhook_url: str = "",
    shards: int = 1,
    batch_shards: int = 4,
    batch_k: int = 20,
    batch_recs_uri: str = "",
    batch_date: str = "",
    redis_url: str = "",
):
    tasks = _dag(data_uri, epochs, gpus, model_name, margin, max_quarantine, deploy_target, recipe, ranker_name,
                 ranker_recipe, canary_percent, max_error_rate, ready_timeout, (lookback_days, start_date, end_date),
                 warm_start, webhook_url, nodes=nodes, gpus=gpus, shards=shards,
                 batch=(batch_shards, batch_k, batch_recs_uri, batch_date, redis_url))
    images = image_env()  # resolved now, from the compiling shell
    for task in tasks.values():
        for var, value in sorted(images.items()):
            task.set_env_variable(var, value)
    for name in ("days", "ingest", "evaluate_shard", "evaluate", "register", "deploy", "evaluate_ranker",
                 "register_ranker", "notify"):
        _secrets_as_env(tasks[name])
    _secrets_as_env(tasks["promote"], {**SECRET_ENV, **SERVER_TOKEN_ENV})
    for name in BATCH_TASKS:  # the model from MLflow, the features and the destination on S3; Redis (optional)
        _secrets_as_env(tasks[name], {**SECRET_ENV, **REC_STORE_ENV} if name.startswith("batch_commit") else SECRET_ENV)
    for name in ("days", "ingest", "day_features", "merge", "gather_partials", "shard_numbers", "feature_shard",
                 "features", "evaluate_shard", "evaluate", "register", "deploy", "evaluate_ranker", "register_ranker",
                 "notify", *BATCH_TASKS):
        tasks[name].set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2.0)
    t = tasks["train"]
    # the pod trains on its GPUs with one node; with more it only launches and watches the TrainJob: no GPU
    t.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(tasks["launcher_gpus"].output)
    t.set_cpu_request("4").set_memory_request("16G").set_memory_limit("32G")
    t.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)  # resumes from its checkpoint
    kubernetes.empty_dir_mount(t, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit="8Gi")
    kubernetes.add_node_selector(t, label_key="nvidia.com/gpu.present", label_value="true")
    kubernetes.add_toleration(t, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.set_timeout(t, seconds=6 * 3600)
    for env, field in (("SHOPREC_POD_NAME", "metadata.name"), ("SHOPREC_POD_UID", "metadata.uid"),
                       ("SHOPREC_POD_NAMESPACE", "metadata.namespace")):  # the TrainJob's owner reference
        kubernetes.use_field_path_as_env(t, env, field)
    if nccl_debug_requested():  # compiled with SHOPREC_NCCL_DEBUG=1: NCCL's logs in the step and its TrainJob
        t.set_env_variable("SHOPREC_NCCL_DEBUG", "1")
    _secrets_as_env(t)
