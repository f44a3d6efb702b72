"""Compile the retrain pipeline, and run it on this machine with ``kfp.local``.

``run_local`` uses the SubprocessRunner without a virtualenv (use_venv=False): each component runs
as a subprocess of this Python, with shoprec already installed, exactly the code the cluster runs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from shoprec.registry import shoprec_home, tracking_uri

log = logging.getLogger(__name__)


def compile_pipeline(output: str | Path, cluster: bool = False) -> str:
    """Compile ``retrain`` (runs anywhere) or ``retrain_cluster`` (GPUs, secrets, KServe) to YAML."""
    from kfp import compiler

    from pipelines.retrain import retrain, retrain_cluster

    compiler.Compiler().compile(retrain_cluster if cluster else retrain, str(output))
    return str(output)


def run_local(data_uri: str | None = None, epochs: int | None = None, workers: int = 2,
              model_name: str = "shoprec-seqrec", margin: float = 0.0, pipeline_root: str | Path | None = None,
              recipe: str | None = None, ranker_name: str = "shoprec-ranker", ranker_recipe: str | None = None) -> dict:
    from kfp import local

    from pipelines.retrain import RANKER_RECIPE, RECIPE, retrain
    from shoprec import registry

    home = shoprec_home()
    if data_uri is None:
        data_uri = str(home / "data" / "builtin")
        if not Path(data_uri, "events").is_dir():
            from shoprec.synth import synthesize

            synthesize(data_uri)
    # Components run as subprocesses: give them the same tracking store and home as this process.
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()
    os.environ["SHOPREC_HOME"] = str(home)
    root = Path(pipeline_root or home / "kfp-local")
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    log.info("running the retrain pipeline locally on %s (pipeline root %s, MLflow %s)", data_uri, root,
             os.environ["MLFLOW_TRACKING_URI"])
    retrain(data_uri=data_uri, epochs=epochs or 0, workers=workers, model_name=model_name, margin=margin,
            recipe=recipe or RECIPE, ranker_name=ranker_name, ranker_recipe=ranker_recipe or RANKER_RECIPE)
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
    }
    ranker_latest = max(c.search_model_versions(f"name='{ranker_name}'"), key=lambda v: int(v.version))
    ranker_champion = registry.version_by_alias(ranker_name)
    result["ranker"] = {
        "name": ranker_name, "registered_version": str(ranker_latest.version),
        "champion_version": str(ranker_champion.version) if ranker_champion else None,
        "candidate": json.loads(ranker_latest.tags.get("shoprec.evaluation", "{}")),
        "reason": ranker_latest.tags.get("shoprec.reason"),
    }
    return result
