"""The MLflow pyfunc of the ranker (cross-encoder), logged as "models from code": no pickle, safetensors weights.

Input: a DataFrame with ``text_a`` (query, or recent history titles) and ``text_b`` (product text).
Output: a DataFrame with ``score`` (click probability).
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class RankerPyfunc(PythonModel):
    def load_context(self, context):
        from shoprec.ranker import load_ranker

        self.ranker = load_ranker(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        scores = self.ranker.score(model_input["text_a"].astype(str).tolist(), model_input["text_b"].astype(str).tolist())
        return pd.DataFrame({"score": np.asarray(scores, dtype=float).reshape(-1)})


mlflow.models.set_model(RankerPyfunc())
