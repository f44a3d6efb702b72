"""LoRA fine-tuned MiniLM ranker for product search and click prediction.

Public API (what the pipeline and the server call):

- :func:`train_ranker` ``(features_dir, out_dir, config) -> summary dict``
- :func:`evaluate_ranker` ``(model_dir, features_dir) -> {"auc", "logloss", "search_ndcg@10", ...}``
- :func:`load_ranker` ``(model_dir, int8=None) -> Ranker`` with ``score(text_a, text_b) -> np.ndarray``
- :class:`SearchIndex` ``.load(model_dir / "search", ranker).search(query, k, rerank_depth)``
"""

from shoprec.ranker.config import LoraSettings, RankerConfig, load_config, minilm_dir
from shoprec.ranker.models import Ranker, load_ranker, quantize_int8
from shoprec.ranker.search import SearchIndex
from shoprec.ranker.train import evaluate_ranker, train_ranker

__all__ = ["LoraSettings", "RankerConfig", "Ranker", "SearchIndex", "evaluate_ranker", "load_config", "load_ranker",
           "minilm_dir", "quantize_int8", "train_ranker"]
