from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE)
def train(features: Input[Dataset], recipe: str, epochs: int, workers: int, model: Output[Model],
          metrics: Output[Metrics]):
    """DDP training of the sequential recommender under torchrun (gloo on CPU, NCCL on GPUs)."""
    import json
    import tempfile

    from shoprec.train import launch

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
