"""The logged model, as code: raw feature rows in, class labels and probabilities out.

MLflow runs this file when the model is loaded ("models from code"), so nothing in the logged
model is a pickle: the booster is XGBoost's own UBJSON file and the encoding is plain JSON.
trilho never imports this module; it only hands its path to ``mlflow.pyfunc.log_model``.
"""

import json

import pandas as pd
import xgboost

try:  # a loaded model finds encoding.py in its code/ folder (code_paths)
    from encoding import booster_outputs
except ImportError:  # while trilho logs the model, the package's own copy
    from trilho.encoding import booster_outputs
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class LabelledBooster(PythonModel):
    """Encode raw rows like training did, run the booster, return label names."""

    def load_context(self, context):
        with open(context.artifacts["spec"], encoding="utf-8") as fh:
            self.spec_ = json.load(fh)
        self.booster_ = xgboost.Booster()
        self.booster_.load_model(context.artifacts["booster"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """By default the label (in the data's own terms) and one probability column per class.

        ``params={"output": "labels"}`` returns only the labels, ``"proba"`` only the probabilities.
        """
        return booster_outputs(self.booster_, model_input, self.spec_, (params or {}).get("output", "both"))


set_model(LabelledBooster())
