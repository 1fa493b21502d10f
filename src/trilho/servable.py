"""The logged model, as code: raw feature rows in, class labels and probabilities out.

MLflow runs this file when the model is loaded ("models from code"), so nothing in the logged
model is a pickle: the encoding is plain JSON, an XGBoost model is XGBoost's own UBJSON file, and
any other model is a skops file, loaded with an explicit list of trusted types (scikit-learn's own,
and the classifier's package when the experiment named one by import path); a file that holds any
other type is refused, never executed. trilho never imports this module; it only hands its path
to ``mlflow.pyfunc.log_model``.
"""

import json
import os

import pandas as pd

try:  # a loaded model finds encoding.py in its code/ folder (code_paths)
    from encoding import model_outputs
except ImportError:  # while trilho logs the model, the package's own copy
    from trilho.encoding import model_outputs
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy", "builtins", "collections")


def load_classifier(spec: dict, path: str):
    """The fitted classifier, and a function of encoded rows to its class probabilities: of
    ``encode_matrix``'s float matrix for an XGBoost booster (``proba.matrix`` is True), of
    ``encode_features``'s frame for the others."""
    if spec.get("format", "xgboost") == "xgboost":
        import numpy as np
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(path)

        def proba(X):
            return booster.inplace_predict(np.asarray(X, dtype=np.float32))

        proba.matrix = True  # type: ignore[attr-defined]
        return booster, proba
    import skops.io

    allowed = (*TRUSTED_PACKAGES, *spec.get("trusted_packages", []))
    found = skops.io.get_untrusted_types(file=path)
    refused = [t for t in found if t.split(".")[0] not in allowed]
    if refused:
        raise ValueError(f"model file {path} holds types outside the trusted packages {list(allowed)}: {refused}")
    estimator = skops.io.load(path, trusted=found)
    return estimator, estimator.predict_proba


class LabelledModel(PythonModel):
    """Encode raw rows like training did, run the classifier, return label names."""

    def load_context(self, context):
        with open(context.artifacts["spec"], encoding="utf-8") as fh:
            self.spec_ = json.load(fh)
        self.classifier_, self.proba_ = load_classifier(self.spec_, context.artifacts["classifier"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """By default the label (in the data's own terms) and one probability column per class.

        ``params={"output": "labels"}`` returns only the labels, ``"proba"`` only the probabilities.
        Inside ``mlflow models serve`` (MLflow marks its scoring server's process) the same rows
        come back as the records MLflow would make of the frame for its JSON answer, so each
        request skips building a frame only to take it apart again.
        """
        serving = os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"
        return model_outputs(self.proba_, model_input, self.spec_, (params or {}).get("output", "both"),
                             matrix=getattr(self.proba_, "matrix", False), records=serving)


set_model(LabelledModel())
