"""Compile the retrain pipeline, and run it on this machine with ``kfp.local``.

``run_local`` runs every component either as a subprocess of this Python (``runner="subprocess"``:
kfp.local's SubprocessRunner without a virtualenv, shoprec already installed) or in its own container
(``runner="docker"``: the images ``make images-local`` built, see :mod:`shoprec.pipeline.containers`).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
from pathlib import Path

from shoprec.registry.versions import shoprec_home, tracking_uri

log = logging.getLogger(__name__)


def compile_pipeline(output: str | Path, cluster: bool = False) -> str:
    """Compile ``retrain`` (runs anywhere) or ``retrain_cluster`` (GPUs, secrets, KServe) to YAML."""
    from kfp import compiler

    from pipelines.retrain import retrain, retrain_cluster

    compiler.Compiler().compile(retrain_cluster if cluster else retrain, str(output))
    return str(output)


def run_local(data_uri: str | None = None, epochs: int | None = None, workers: int = 2,
              model_name: str = "shoprec-seqrec", margin: float = 0.0, pipeline_root: str | Path | None = None,
              recipe: str | None = None, ranker_name: str = "shoprec-ranker", ranker_recipe: str | None = None,
              runner: str = "subprocess", params: dict | None = None) -> dict:
    """Run the retrain DAG with kfp.local; returns what it registered and decided.

    ``params``: more pipeline parameters (e.g. ``lookback_days``, ``warm_start``, ``webhook_url``, ``shards``,
    ``batch_shards``, ``batch_recs_uri``); ``batch_date`` is fixed to today here when not given, so the result can
    name the night's recommendations (``result["batch"]``: the committed manifest, or None).

    ``runner="docker"`` runs every step in its image; a local ``data_uri`` is then uploaded to an S3 API and an
    ``mlflow server`` is started unless AWS_ENDPOINT_URL / an http MLFLOW_TRACKING_URI say where they are
    (:class:`shoprec.pipeline.containers.local_services`).
    """
    if runner not in ("subprocess", "docker"):
        raise ValueError(f"runner must be 'subprocess' or 'docker', not {runner!r}")
    home = shoprec_home()
    if data_uri is None:
        data_uri = str(home / "data" / "builtin")
        if not Path(data_uri, "events").is_dir():
            from shoprec.data.synth import synthesize

            synthesize(data_uri)
    from shoprec.seqrec.batch import batch_date

    params = {**(params or {})}
    params["batch_date"] = batch_date(params.get("batch_date", ""))
    args = dict(epochs=epochs, workers=workers, model_name=model_name, margin=margin, pipeline_root=pipeline_root,
                recipe=recipe, ranker_name=ranker_name, ranker_recipe=ranker_recipe, params=params)
    if runner == "subprocess":
        return _run(home, data_uri, runner, **args)
    from shoprec.pipeline import containers as container_runner

    container_runner.use_built_images(home)  # before the components are defined
    with container_runner.local_services(home, data_uri) as services:
        return _run(home, services.data_uri, runner, **args)


def _run(home: Path, data_uri: str, runner: str, epochs: int | None, workers: int, model_name: str, margin: float,
         pipeline_root: str | Path | None, recipe: str | None, ranker_name: str, ranker_recipe: str | None,
         params: dict) -> dict:
    from kfp import local

    from pipelines.retrain import RANKER_RECIPE, RECIPE, retrain
    from shoprec.registry import versions as registry

    # Components run as subprocesses: give them the same tracking store and home as this process.
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()
    os.environ["SHOPREC_HOME"] = str(home)
    if runner == "docker":
        task_runner, root = _docker_runner(home, data_uri, pipeline_root)
    else:
        task_runner, root = local.SubprocessRunner(use_venv=False), Path(pipeline_root or home / "kfp-local")
        root.mkdir(parents=True, exist_ok=True)
    local.init(runner=task_runner, pipeline_root=str(root), raise_on_error=True)
    log.info("running the retrain pipeline locally on %s (%s runner, pipeline root %s, MLflow %s)", data_uri, runner,
             root, os.environ["MLFLOW_TRACKING_URI"])
    original_print = builtins.print
    try:
        retrain(data_uri=data_uri, epochs=epochs or 0, workers=workers, model_name=model_name, margin=margin,
                recipe=recipe or RECIPE, ranker_name=ranker_name, ranker_recipe=ranker_recipe or RANKER_RECIPE,
                **params)
    finally:
        # kfp.local indents a task's output by swapping builtins.print; with tasks of a ParallelFor ending in
        # another order than they started, an indenting print can stay in place after the run (kfp 2.17)
        builtins.print = original_print
    c = registry.client()
    latest = max(c.search_model_versions(f"name='{model_name}'"), key=lambda v: int(v.version))
    champion = registry.version_by_alias(model_name)
    evaluation = json.loads(latest.tags.get("shoprec.evaluation", "{}"))
    run = c.get_run(latest.run_id)
    result = {
        "model_name": model_name, "registered_version": str(latest.version),
        "champion_version": str(champion.version) if champion else None,
        "promoted": bool(champion and champion.version == latest.version),
        "candidate": evaluation,
        "popularity_ndcg@10": run.data.metrics.get("popularity_ndcg_at_10"),
        "champion_ndcg@10_before": run.data.metrics.get("champion_ndcg_at_10"),
        "reason": latest.tags.get("shoprec.reason"),
        "gate": latest.tags.get("shoprec.gate"),
        "tracking_uri": os.environ["MLFLOW_TRACKING_URI"],
        "runner": runner,
    }
    from shoprec.seqrec.batch import default_dest, read_manifest

    # Both branches of the gate make the night's lists with the champion after the run (the new one if promoted).
    dest = params.get("batch_recs_uri") or default_dest(data_uri)
    result["batch"] = read_manifest(dest, params["batch_date"], str(champion.version)) if champion else None
    ranker_latest = max(c.search_model_versions(f"name='{ranker_name}'"), key=lambda v: int(v.version))
    ranker_champion = registry.version_by_alias(ranker_name)
    result["ranker"] = {
        "name": ranker_name, "registered_version": str(ranker_latest.version),
        "champion_version": str(ranker_champion.version) if ranker_champion else None,
        "candidate": json.loads(ranker_latest.tags.get("shoprec.evaluation", "{}")),
        "reason": ranker_latest.tags.get("shoprec.reason"),
    }
    return result


def _docker_runner(home: Path, data_uri: str, pipeline_root: str | Path | None):
    """The DockerRunner and its pipeline root; the steps' home (deploy pointers) is ``home/containers/home``."""
    import components
    from shoprec.pipeline import containers as cr
    from shoprec.pipeline import k8s

    wanted = [k8s.base_image(), k8s.trainer_image()]
    if [components.BASE_IMAGE, components.TRAINER_IMAGE] != wanted:
        raise cr.ContainerRunError(f"the components were defined for {components.BASE_IMAGE} before the local images "
                                   f"({wanted[0]}) were chosen: run the containerised pipeline in a fresh process")
    cr.check_images_present(cr.docker_client(), wanted)
    step_home = cr.shared_folder(home / "containers" / "home")
    env = cr.step_env(step_home)
    cr.check_reachable(data_uri, env)
    root = cr.shared_folder(Path(pipeline_root or home / "containers" / "kfp"))
    return cr.docker_runner(step_home, env), root
