"""LoRA fine-tuned MiniLM ranker for product search and click prediction.

Public API (what the pipeline and the server call):

- :func:`train_ranker` ``(features_dir, out_dir, config) -> summary dict``
- :func:`evaluate_ranker` ``(model_dir, features_dir) -> {"auc", "logloss", "search_ndcg@10", ...}``
- :func:`load_ranker` ``(model_dir, int8=None) -> Ranker`` with ``score(text_a, text_b) -> np.ndarray``
- :class:`SearchIndex` ``.load(model_dir / "search", ranker).search(query, k, rerank_depth)``
"""

from importlib import import_module

# Loaded on first use, so the server importing shoprec.ranker.models or .search does not load training.
_WHERE = {"LoraSettings": "config", "RankerConfig": "config", "load_config": "config", "minilm_dir": "config",
          "Ranker": "models", "load_ranker": "models", "quantize_int8": "models", "SearchIndex": "search",
          "evaluate_ranker": "train", "train_ranker": "train"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
