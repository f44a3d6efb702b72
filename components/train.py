from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import BASE_IMAGE, TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train(features: Input[Dataset], recipe: str, epochs: int, workers: int, nodes: int, model: Output[Model],
          metrics: Output[Metrics], kfp_run_id: str = "", checkpoint_root: str = "", warm_start: bool = False,
          model_name: str = ""):
    """DDP training of the sequential recommender: torchrun in this pod (gloo on CPU, NCCL on GPUs), or a
    Kubeflow Trainer TrainJob when ``nodes`` > 1, ``workers`` processes per node.

    Checkpoints go to ``<store>/<kfp_run_id>/train/`` (:mod:`shoprec.checkpoint_store`; the store is
    ``checkpoint_root``, ``$SHOPREC_CHECKPOINT_ROOT`` or the artifact bucket), so a retry of this step resumes
    after the last finished epoch; they are not part of ``model``. With ``warm_start`` the model starts from
    ``model_name``'s @champion where the architecture allows (:mod:`shoprec.warm_start`; one node only)."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from shoprec.checkpoint_store import checkpoint_uri, root_for
    from shoprec.train import launch
    from shoprec.trainjob import NCCL_DEBUG_ENV, nccl_debug_requested, train_on_trainjob

    ckpt = checkpoint_uri(root_for(model.uri, checkpoint_root), kfp_run_id, "train") if kfp_run_id else ""
    if nodes > 1:
        if warm_start:
            print("warm start is not available for multi-node training (TrainJob): training from scratch")
        summary = train_on_trainjob(features.uri, model.uri, model.path, recipe, epochs, nodes, workers,
                                    checkpoint_uri=ckpt)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(recipe)
        overrides = {"epochs": epochs} if epochs > 0 else {}
        if warm_start:
            from shoprec.registry import download_model_dir

            champion = download_model_dir(model_name, "champion")
            if champion is not None:
                overrides["warm_start"] = str(champion[0])
                print(f"warm start from {model_name} v{champion[1]}")
            else:
                print(f"warm start asked for, but {model_name} has no champion yet: training from scratch")
        work = Path(tempfile.mkdtemp(prefix="shoprec-train-")) / "model"
        summary = launch(features.path, work, nproc=workers, recipe=f.name, overrides=overrides,
                         checkpoint_uri=ckpt or None, env=NCCL_DEBUG_ENV if nccl_debug_requested() else None)
        # the Model artifact is what serving needs: no checkpoints (optimizer state) in it
        shutil.copytree(work, model.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints", "*.pt"))
        shutil.rmtree(work.parent, ignore_errors=True)
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
    return 0 if nodes > 1 else gpus
