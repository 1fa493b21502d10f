"""The logged model, as code: raw feature rows in, class labels and probabilities out.

MLflow runs this file when the model is loaded ("models from code"), so nothing in the logged
model is a pickle: the booster is XGBoost's own UBJSON file and the encoding is plain JSON.
trilho never imports this module; it only hands its path to ``mlflow.pyfunc.log_model``.
"""

import json

import numpy as np
import pandas as pd
import xgboost

try:  # a loaded model finds encoding.py in its code/ folder (code_paths)
    from encoding import encode_features
except ImportError:  # while trilho logs the model, the package's own copy
    from trilho.encoding import encode_features
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class LabelledBooster(PythonModel):
    """Encode raw rows like training did, run the booster, return label names."""

    def load_context(self, context):
        with open(context.artifacts["spec"], encoding="utf-8") as fh:
            self.spec_ = json.load(fh)
        self.booster_ = xgboost.Booster()
        self.booster_.load_model(context.artifacts["booster"])

    def predict_proba(self, model_input: pd.DataFrame) -> np.ndarray:
        X = encode_features(pd.DataFrame(model_input), self.spec_)
        proba = np.asarray(self.booster_.inplace_predict(X.to_numpy(dtype=np.float32)))
        if proba.ndim == 1:  # binary objectives give P(class 1)
            proba = np.column_stack([1.0 - proba, proba])
        return proba

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """By default the label (in the data's own terms) and one probability column per class.

        ``params={"output": "labels"}`` returns only the labels, ``"proba"`` only the probabilities.
        """
        proba = self.predict_proba(model_input).astype("float64")
        classes = np.asarray(self.spec_["classes"], dtype=object)
        output = (params or {}).get("output", "both")
        if output not in ("both", "labels", "proba"):
            raise ValueError(f"params output={output!r}: use 'both', 'labels' or 'proba'")
        labels = pd.Series(classes[proba.argmax(axis=1)], name="prediction", index=model_input.index)
        if output == "labels":
            return labels
        table = pd.DataFrame(proba, columns=[f"proba_{c}" for c in classes], index=model_input.index)
        return table if output == "proba" else pd.concat([labels, table], axis=1)


set_model(LabelledBooster())
