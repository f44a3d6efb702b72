from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_ranker(features: Input[Dataset], recipe: str, ranker: Output[Model], metrics: Output[Metrics]):
    """LoRA fine-tuning of the MiniLM cross-encoder (click + purchase heads) and bi-encoder on search and click logs."""
    import tempfile

    from shoprec.ranker import load_config
    from shoprec.ranker import train_ranker as run_train

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(recipe)
    summary = run_train(features.path, ranker.path, load_config(f.name))
    for key, value in summary["test"].items():
        metrics.log_metric(f"test_{key}", value)
    metrics.log_metric("train_seconds", summary["seconds"])
