"""The retrain DAG: ingest -> features -> train -> evaluate -> register -> deploy (only if the gate passed).

Compile with ``shoprec pipeline compile -o retrain.yaml`` or ``kfp dsl compile --py pipelines/retrain.py
--output retrain.yaml``; run on this machine with ``shoprec pipeline run --local``.
"""

import json
from pathlib import Path

import yaml
from kfp import dsl

from components.deploy import deploy
from components.evaluate import evaluate
from components.features import features
from components.ingest import ingest
from components.register import register
from components.train import train

# One line of JSON (which is also YAML): KFP copies defaults into a comment header of the compiled
# file, and a multi-line default would break that YAML.
RECIPE = json.dumps(yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "seqrec" / "builtin.yaml").read_text()))


@dsl.pipeline(name="shoprec-retrain", description="Retrain the shop's recommender and promote it if it beats the champion.")
def retrain(
    data_uri: str = "s3://shoprec-raw/shop",
    epochs: int = 0,
    workers: int = 2,
    model_name: str = "shoprec-seqrec",
    margin: float = 0.0,
    max_quarantine: float = 0.05,
    deploy_target: str = "local",
    recipe: str = RECIPE,
):
    ingest_task = ingest(data_uri=data_uri, max_quarantine=max_quarantine)
    ingest_task.set_caching_options(False)  # new logs arrive under the same URI
    features_task = features(ingested=ingest_task.outputs["ingested"])
    train_task = train(features=features_task.outputs["features"], recipe=recipe, epochs=epochs, workers=workers)
    eval_task = evaluate(model=train_task.outputs["model"], features=features_task.outputs["features"],
                         model_name=model_name, margin=margin)
    eval_task.set_caching_options(False)  # the champion it compares with changes between runs
    register_task = register(model=train_task.outputs["model"], evaluation=eval_task.outputs["evaluation"],
                             model_name=model_name, kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                             data_snapshot=ingest_task.outputs["Output"])
    register_task.set_caching_options(False)
    with dsl.If(eval_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition syntax)
        deploy(model_name=model_name, version=register_task.outputs["version"], target=deploy_target) \
            .set_caching_options(False)
