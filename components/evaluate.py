from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(model: Input[Model], features: Input[Dataset], model_name: str, margin: float,
             evaluation: Output[Artifact], report: Output[HTML], summary: Output[Markdown],
             metrics: Output[Metrics]) -> bool:
    """Candidate vs popularity vs the current @champion on the same test data; returns the gate.

    The gate is the single return value because kfp.local (2.17) resolves a dsl.If condition on a
    task output only when it is the task's ``Output``; the reason is in the report and metadata.
    """
    import shutil
    from pathlib import Path

    from shoprec.evaluate import evaluate as run_evaluate
    from shoprec.registry.versions import download_model_dir

    champion = download_model_dir(model_name, "champion")
    result = run_evaluate(model.path, features.path, evaluation.path, champion=champion[0] if champion else None,
                          margin=margin, champion_version=champion[1] if champion else None)
    shutil.copy(Path(evaluation.path) / "report.html", report.path)
    shutil.copy(Path(evaluation.path) / "report.md", summary.path)
    for who, res in result["results"].items():
        for key in ("ndcg@10", "hr@10", "mrr@10"):
            metrics.log_metric(f"{who}_{key}", res[key])
    evaluation.metadata.update({"gate": result["gate"], "reason": result["reason"]})
    return result["gate"]
