from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate(model: Input[Model], parts: Input[list[Artifact]], margin: float, evaluation: Output[Artifact],
             report: Output[HTML], summary: Output[Markdown], metrics: Output[Metrics]) -> bool:
    """Candidate vs popularity vs the current @champion, summed over the evaluation shards; returns the gate.

    The gate is the single return value because kfp.local (2.17) resolves a dsl.If condition on a
    task output only when it is the task's ``Output``; the reason is in the report and metadata.
    """
    import shutil
    from pathlib import Path

    from shoprec.evaluate import reduce_evaluation

    result = reduce_evaluation([p.path for p in parts], evaluation.path, margin=margin, model_dir=model.path)
    shutil.copy(Path(evaluation.path) / "report.html", report.path)
    shutil.copy(Path(evaluation.path) / "report.md", summary.path)
    for who, res in result["results"].items():
        for key in ("ndcg@10", "hr@10", "mrr@10"):
            metrics.log_metric(f"{who}_{key}", res[key])
    evaluation.metadata.update({"gate": result["gate"], "reason": result["reason"]})
    return result["gate"]
