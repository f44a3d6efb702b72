"""What a registered version carries besides its weights, so that someone who finds it in MLflow can use it.

- a **signature** and an **input example** for its pyfunc (what ``mlflow models serve`` and the UI show);
- **requirements that install**: shoprec's own pinned dependencies from its package metadata (all on PyPI),
  with shoprec's code logged beside the model (``code_paths``), instead of an unpublished ``shoprec==X``;
- the **git commit and image** it was built by, as tags on the run and the version;
- a short **model card** (data window, metrics against the champion, recipe) as an artifact and as the
  version's description.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pandas as pd


def signature(kind: str):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    if kind == "ranker":
        return ModelSignature(inputs=Schema([ColSpec("string", "text_a"), ColSpec("string", "text_b")]),
                              outputs=Schema([ColSpec("double", "score")]))
    return ModelSignature(
        inputs=Schema([ColSpec(Array("string"), "history", required=False), ColSpec("string", "user_id", required=False)]),
        outputs=Schema([ColSpec(Array("string"), "items"), ColSpec(Array("double"), "scores")]),
        params=ParamSchema([ParamSpec("k", "long", 10)]))


def input_example(kind: str, model_dir: Path) -> pd.DataFrame:
    """A one-row request the model answers: three catalogue items as a history, or a query and a title."""
    items = pd.read_parquet(model_dir / "items.parquet") if (model_dir / "items.parquet").exists() else None
    if kind == "ranker":
        title = str(items["title"].iloc[0]) if items is not None and "title" in items else "product title"
        return pd.DataFrame({"text_a": [title.split()[-1]], "text_b": [title]})
    return pd.DataFrame({"history": [[str(i) for i in items["item_id"].iloc[:3]]]})


def requirements() -> list[str]:
    """shoprec's own runtime pins (no extras), as its installed metadata lists them."""
    return sorted(r for r in metadata.requires("shoprec") or [] if "extra ==" not in r)


def code_paths() -> list[str]:
    return [str(Path(__file__).resolve().parent.parent)]  # the whole shoprec package


def build_tags() -> dict[str, str]:
    """The image this step runs in (set by the image build or the cluster pipeline); "none" outside one."""
    from shoprec import images

    in_image = bool(os.environ.get("SHOPREC_IMAGE_TAG") or os.environ.get("SHOPREC_IMAGE"))
    return {"shoprec.image": images.base_image() if in_image else "none (not run in an image)"}


def model_card(name: str, version: str, kind: str, evaluation: dict, summary: dict, data_snapshot: dict,
               git_commit: str, image: str) -> str:
    """Markdown: what the version is, what it was trained on, how it compares with the champion."""
    results = evaluation.get("results", {})
    keys = evaluation.get("key_metrics") or ["ndcg@10", "hr@10", "mrr@10"]
    rows = [f"| {who} | " + " | ".join(_fmt(res.get(k)) for k in keys) + " |" for who, res in results.items()]
    config = summary.get("config", {})
    recipe = {k: v for k, v in config.items() if k != "model" and not isinstance(v, dict)}
    parts = data_snapshot.get("partitions")  # {day: rows} from merge-ingest
    if isinstance(parts, dict):
        parts = sorted(parts)
    if isinstance(parts, list) and parts:
        window = f"{parts[0]} .. {parts[-1]} ({len(parts)} days)"
    else:
        window = f"{parts} days" if parts else "n/a"
    return "\n".join([
        f"# {name} v{version} ({kind})", "",
        f"- gate: **{'passed' if evaluation.get('gate') else 'failed'}**: {evaluation.get('reason', '')}",
        f"- data window: {window}; rows in: {data_snapshot.get('rows_in', 'n/a')}, "
        f"quarantined: {data_snapshot.get('quarantined', 'n/a')}",
        f"- built from commit `{git_commit}` in image `{image}`",
        f"- best epoch {summary.get('best_epoch', 'n/a')} of {summary.get('epochs_run', 'n/a')}, "
        f"train seconds {_fmt(summary.get('train_seconds'))}", "",
        "| model | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys), *rows, "",
        "Recipe: " + ", ".join(f"{k}={v}" for k, v in sorted(recipe.items())) if recipe else "Recipe: n/a",
        "Model: " + ", ".join(f"{k}={v}" for k, v in sorted(config.get("model", {}).items()))
        if isinstance(config.get("model"), dict) else "", ""])


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v if v is not None else "n/a")
