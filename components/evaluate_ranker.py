from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_ranker(ranker: Input[Model], features: Input[Dataset], model_name: str, margin: float,
                    evaluation: Output[Artifact], summary: Output[Markdown], metrics: Output[Metrics]) -> bool:
    """Click AUC / log-loss and search NDCG@10 of the ranker vs the champion ranker; returns the gate."""
    import shutil
    from pathlib import Path

    from shoprec.evaluate import evaluate_ranker_vs_champion
    from shoprec.registry.versions import download_model_dir

    champion = download_model_dir(model_name, "champion")
    result = evaluate_ranker_vs_champion(ranker.path, features.path, evaluation.path,
                                         champion=champion[0] if champion else None, margin=margin,
                                         champion_version=champion[1] if champion else None)
    shutil.copy(Path(evaluation.path) / "report.md", summary.path)
    for who, res in result["results"].items():
        for key in result["key_metrics"]:
            metrics.log_metric(f"{who}_{key}", res[key])
    return result["gate"]
