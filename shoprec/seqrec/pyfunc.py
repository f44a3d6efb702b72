"""The MLflow pyfunc of the sequential recommender, logged as "models from code".

MLflow stores this file, not a pickled object, and the weights are loaded from the model's
safetensors artifact, so loading a registered model never unpickles anything.

Input: a DataFrame with a ``user_id`` column, or a ``history`` column (lists of item ids), and
optionally ``k``. Output: one row per input row with ``items`` (ids, best first) and ``scores``.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SeqRecPyfunc(PythonModel):
    def load_context(self, context):
        from shoprec.seqrec.recommend import Recommender

        self.rec = Recommender(context.artifacts["model_dir"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        histories = []
        for row in model_input.to_dict("records"):
            if row.get("user_id") is not None and not (isinstance(row["user_id"], float)):
                histories.append(self.rec.history_of(str(row["user_id"])))
            else:
                histories.append(self.rec.encode(list(row.get("history") or []))[0])
        recs = self.rec.recommend(histories, k=int(model_input["k"].iloc[0]) if "k" in model_input else k)
        return pd.DataFrame({"items": [[r["item_id"] for r in rs] for rs in recs],
                             "scores": [[r["score"] for r in rs] for rs in recs]})


mlflow.models.set_model(SeqRecPyfunc())
