from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train(features: Input[Dataset], recipe: str, epochs: int, workers: int, nodes: int, model: Output[Model],
          metrics: Output[Metrics]):
    """DDP training of the sequential recommender: torchrun in this pod (gloo on CPU, NCCL on GPUs), or a
    Kubeflow Trainer TrainJob when ``nodes`` > 1, ``workers`` processes per node."""
    import json
    import tempfile

    from shoprec.train import launch
    from shoprec.trainjob import train_on_trainjob

    if nodes > 1:
        summary = train_on_trainjob(features.uri, model.uri, model.path, recipe, epochs, nodes, workers)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(recipe)
        overrides = {"epochs": epochs} if epochs > 0 else {}
        summary = launch(features.path, model.path, nproc=workers, recipe=f.name, overrides=overrides)
    for key in ("ndcg@10", "hr@10", "mrr@10"):
        metrics.log_metric(f"valid_{key}", summary["valid"][key])
    metrics.log_metric("best_epoch", summary["best_epoch"])
    metrics.log_metric("sequences_per_s", summary["sequences_per_s"])
    model.metadata.update({"objective": summary["objective"], "best_epoch": summary["best_epoch"],
                           "config": json.dumps(summary["config"])})
