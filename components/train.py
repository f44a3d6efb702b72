from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train(features: Input[Dataset], recipe: str, epochs: int, workers: int, nodes: int, model: Output[Model],
          metrics: Output[Metrics], kfp_run_id: str = "", checkpoint_root: str = "", warm_start: bool = False,
          model_name: str = ""):
    """DDP training of the sequential recommender (:func:`shoprec.pipeline.steps.train_step`): torchrun in this pod (gloo on
    CPU, NCCL on GPUs), or a Kubeflow Trainer TrainJob when ``nodes`` > 1, ``workers`` processes per node; a retry
    resumes from the checkpoints stored under ``kfp_run_id``. With ``warm_start`` the model starts from
    ``model_name``'s @champion where the architecture allows (:mod:`shoprec.seqrec.warm_start`)."""
    import json

    from shoprec.pipeline.steps import champion_model_dir, train_step

    summary = train_step(features.path, features.uri, model.path, model.uri, recipe, epochs=epochs, workers=workers,
                         nodes=nodes, kfp_run_id=kfp_run_id, checkpoint_root=checkpoint_root,
                         warm_start_from=champion_model_dir(model_name) if warm_start and nodes <= 1 else "")
    for key in ("ndcg@10", "hr@10", "mrr@10"):
        metrics.log_metric(f"valid_{key}", summary["valid"][key])
    metrics.log_metric("best_epoch", summary["best_epoch"])
    metrics.log_metric("sequences_per_s", summary["sequences_per_s"])
    model.metadata.update({"objective": summary["objective"], "best_epoch": summary["best_epoch"],
                           "config": json.dumps(summary["config"])})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def launcher_gpus(gpus: int, nodes: int) -> int:
    """GPUs the train step's own pod asks for: ``gpus`` when it trains in the pod (one node), none when it only
    launches and watches a multi-node TrainJob (whose pods ask for the GPUs)."""
    from shoprec.pipeline.trainjob import launcher_gpus as gpus_of_launcher

    return gpus_of_launcher(gpus, nodes)
