"""What the pipeline's steps do beyond calling one library function: where a step's checkpoints live, which
champion a run warm-starts from, and whether training runs in this pod or on a multi-node TrainJob."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import yaml

from shoprec.pipeline.trainjob import NCCL_DEBUG_ENV, nccl_debug_requested, train_on_trainjob
from shoprec.registry.versions import download_model_dir
from shoprec.seqrec.launch import launch
from shoprec.trainer.checkpoints import checkpoint_uri, root_for

log = logging.getLogger(__name__)


def train_step(features: str | Path, features_uri: str, model_dir: str | Path, model_uri: str, recipe: str | dict,
               epochs: int = 0, workers: int = 2, nodes: int = 1, kfp_run_id: str = "", checkpoint_root: str = "",
               warm_start_from: str = "") -> dict:
    """The pipeline's train step: ``torchrun`` with ``workers`` processes here, or a TrainJob over ``nodes`` nodes;
    returns the summary. ``recipe`` is the recipe: its YAML (or JSON) text, as the pipeline passes it, or a mapping.

    Checkpoints go to ``<store>/<kfp_run_id>/train/`` (:mod:`shoprec.trainer.checkpoints`; the store is
    ``checkpoint_root``, ``$SHOPREC_CHECKPOINT_ROOT`` or the artifact bucket), so a retry of the step resumes
    after the last finished epoch; ``model_dir`` gets what serving needs, without them. ``warm_start_from``: a
    model folder to start from (one node only).
    """


    ckpt = checkpoint_uri(root_for(model_uri, checkpoint_root), kfp_run_id, "train") if kfp_run_id else ""
    if nodes > 1:
        if warm_start_from:
            log.warning("warm start is not available for multi-node training (TrainJob): training from scratch")
        return train_on_trainjob(features_uri, model_uri, model_dir, recipe, epochs, nodes, workers,
                                 checkpoint_uri=ckpt)
    overrides = {"epochs": epochs} if epochs > 0 else {}
    if warm_start_from:
        overrides["warm_start"] = warm_start_from
    recipe_data = yaml.safe_load(recipe) if isinstance(recipe, str) else recipe
    with tempfile.TemporaryDirectory(prefix="shoprec-train-") as tmp:
        work = Path(tmp) / "model"
        summary = launch(features, work, nproc=workers, recipe=recipe_data or None, overrides=overrides,
                         checkpoint_uri=ckpt or None, env=NCCL_DEBUG_ENV if nccl_debug_requested() else None)
        # the Model artifact is what serving needs: no checkpoints (optimizer state) in it
        shutil.copytree(work, model_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints", "*.pt"))
    return summary


def champion_model_dir(model_name: str) -> str:
    """The local folder of ``model_name``'s @champion to warm-start from, or "" (logged) when there is none."""
    champion = download_model_dir(model_name, "champion")
    if champion is None:
        log.warning("warm start asked for, but %s has no champion yet: training from scratch",
                                            model_name)
        return ""
    log.info("warm start from %s v%s", model_name, champion[1])
    return str(champion[0])
