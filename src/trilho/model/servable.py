"""The logged model, as code: raw feature rows in, class labels and probabilities out.

MLflow runs this file when the model is loaded ("models from code"), so nothing in the logged
model is a pickle: the encoding is plain JSON, an XGBoost model is XGBoost's own UBJSON file, and
any other model is a skops file, loaded with the explicit list of types it held when it was
logged (classes only, of scikit-learn, NumPy, SciPy or the classifier's own package); a file that
names any other type, or a callable such as ``builtins.exec``, is refused, never executed. Every
file of the logged model has its sha256 in ``trilho-files.json``: a model whose files differ from
it is refused before it reads them. trilho never imports this module; it only hands its path to
``mlflow.pyfunc.log_model``.
"""

import contextlib
import hashlib
import importlib
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

# The model's own code sits in code/ beside this file, imported by bare name. Another model loaded
# earlier in this process (another version, another trilho) may have left its own ``encoding`` or
# ``answers`` in sys.modules, and Python would hand that copy out: this model's copy it must be.
_CODE = Path(__file__).resolve().parent / "code"
for _name in ("encoding", "answers"):
    _loaded = sys.modules.get(_name)
    if _loaded is not None and _CODE not in Path(getattr(_loaded, "__file__", None) or "/").resolve().parents:
        del sys.modules[_name]

try:  # a loaded model finds answers.py and encoding.py in its code/ folder (code_paths)
    from answers import explained_class, explanations, model_outputs
except ImportError:  # while trilho logs the model, the package's own copy
    from trilho.model.answers import explained_class, explanations, model_outputs

# the packages whose classes a skops file may name (a classifier's own package is added by its spec);
# only classes: a function of any of them (builtins.exec, builtins.getattr, ...) is never trusted
TRUSTED_PACKAGES = ("sklearn", "numpy", "scipy", "builtins", "collections")
FILES = "trilho-files.json"  # every other file of the logged model with its sha256
# what MLflow itself writes into a model's folder (even in a local store) when it loads one by a
# models:/ URI: a note of the name and version, never run
MLFLOW_ADDS = ("registered_model_meta",)
SMALL_BATCH = 1_000  # up to this many rows, one XGBoost thread predicts (BoosterProba), one request at a time


def load_classifier(spec: dict, path: str):
    """The fitted classifier, and a function of encoded rows to its class probabilities: of
    ``encode_matrix``'s float matrix for an XGBoost booster (a ``BoosterProba``, whose ``matrix`` is
    True), of ``encode_features``'s frame for the others."""
    if spec.get("format", "xgboost") == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        try:
            booster.load_model(path)
        except (xgboost.core.XGBoostError, UnicodeDecodeError) as exc:  # XGBoost's message may quote the bytes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelFilesError(f"model file {os.path.basename(path)} is not an XGBoost model file ({first})") from None
        return booster, BoosterProba(booster)
    import skops.io

    packages = (*TRUSTED_PACKAGES, *spec.get("trusted_packages", []))
    found = skops.io.get_untrusted_types(file=path)
    listed = spec.get("skops_types")  # what the file held when it was logged (older models: none)
    refused = [t for t in found if (listed is not None and t not in listed) or not is_trusted_class(t, packages)]
    if refused:
        raise ModelFilesError(f"model file {os.path.basename(path)} names types it did not hold when it was logged, "
                              f"or that are not classes of {list(packages)}: {refused}; it is not loaded")
    estimator = skops.io.load(path, trusted=found)
    return estimator, (estimator.predict if spec.get("task") == "regression" else estimator.predict_proba)


def load_explainer(spec: dict, classifier):
    """A function of (encoded rows, their probability function, their class codes) to each
    feature's contribution to each row's answer, or None where the model cannot say (a model
    logged before trilho explained rows: a skops model with no reference row).

    An XGBoost booster answers with its own TreeSHAP: contributions to the margin (the log-odds
    of the explained class, before any calibration map) that add up, with ``base_value``, to that
    margin exactly. Any other model: how much the explained class's probability drops when the
    feature alone is set to its typical training value (``spec["reference"]``: the median, or the
    most frequent category), one prediction of the rows per feature; these need not add up."""
    n_classes = len(spec["classes"])
    features = spec["features"]
    if spec.get("format", "xgboost") == "xgboost":
        import xgboost

        names = classifier.feature_names

        def tree_shap(X, probabilities, codes):
            which = explained_class(codes, n_classes) if n_classes else np.zeros(len(codes), dtype=np.int64)
            found = classifier.predict(xgboost.DMatrix(np.asarray(X, dtype=np.float32), feature_names=names),
                                       pred_contribs=True)
            if found.ndim == 3:  # one set per class: the explained class's
                found = found[np.arange(len(which)), which]
            return explanations(found[:, :-1], spec, which, found[:, -1])

        return tree_shap
    reference = spec.get("reference")
    if not reference:
        return None

    def occlusion(X, probabilities, codes):
        which = explained_class(codes, n_classes) if n_classes else np.zeros(len(codes), dtype=np.int64)
        rows = np.arange(len(which))
        pick = lambda found: found if found.ndim == 1 else found[rows, which]  # a regression: the value
        answer = pick(probabilities(X))
        out = np.empty((len(which), len(features)))
        for j, col in enumerate(features):
            typical = X.copy()
            typical[col] = reference[col]
            out[:, j] = answer - pick(probabilities(typical))
        return explanations(out, spec, which)

    return occlusion


def is_trusted_class(name: str, packages) -> bool:
    """Whether a skops type name is a class of one of ``packages``: a function (``builtins.exec``,
    ``builtins.getattr``, ``os.system``) is never one; no module outside ``packages`` is imported."""
    module, _, attr = name.rpartition(".")
    if not module or module.split(".")[0] not in packages or attr.startswith("__"):
        return False
    try:
        found = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return False
    return isinstance(found, type)


class ModelFilesError(ValueError):
    """The logged model's files are not the ones it was logged with, or hold what it never holds."""


def file_digests(root: str, skip_caches: bool = False) -> dict:
    """Every file under ``root`` but the manifest, by its path relative to ``root``, with its sha256;
    ``skip_caches`` leaves out Python's ``__pycache__`` folders; what MLflow adds is always left out."""
    found = {}
    for folder, dirs, names in os.walk(root):
        if skip_caches:
            dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel == FILES or rel in MLFLOW_ADDS:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            found[rel] = digest.hexdigest()
    return found


def check_files(root: str, logged: str | None = None, skip_caches: bool = False) -> bool:
    """Refuse (``ModelFilesError``, naming the file) a model folder whose files differ from its
    manifest, or whose manifest differs from ``logged`` (its sha256 as the tracking store recorded
    it). False for a model logged without a manifest (nothing to check) when nothing was recorded.
    ``skip_caches``: as the model checks itself while it loads, Python's own ``__pycache__`` folders
    (written as its code loads) and MLflow's notes of a download are not the model's files."""
    manifest = os.path.join(root, FILES)
    if not os.path.isfile(manifest):
        if logged:
            raise ModelFilesError(f"model file {FILES} is missing, but the model was logged with it: "
                                  "its files were changed after logging; it is not loaded")
        return False
    with open(manifest, "rb") as fh:
        data = fh.read()
    held_digest = hashlib.sha256(data).hexdigest()
    if logged and held_digest != logged:
        raise ModelFilesError(f"model file {FILES} differs from the one logged (sha256 {held_digest[:12]}, "
                              f"logged {logged[:12]}): its files were changed after logging; it is not loaded")
    expected = json.loads(data)["files"]
    held = file_digests(root, skip_caches)
    for rel in sorted(set(expected) | set(held)):
        if rel not in held:
            raise ModelFilesError(f"model file {rel} is missing: the model's files were changed after logging; "
                                  "it is not loaded")
        if rel not in expected:
            raise ModelFilesError(f"model file {rel} was not part of the model when it was logged; it is not loaded")
        if held[rel] != expected[rel]:
            raise ModelFilesError(f"model file {rel} differs from the one logged (sha256 {held[rel][:12]}, logged "
                                  f"{expected[rel][:12]}): it was changed after logging; the model is not loaded")
    return True


class BoosterProba:
    """Class probabilities of ``encode_matrix``'s float matrix from an XGBoost booster.

    XGBoost's OpenMP threads keep spinning for a while after every call: on a request's few rows a
    second thread saves nothing and burns a core meanwhile (in one process, 1-row requests through
    MLflow's scoring function took 10.4 ms of CPU for 5.2 ms of wall time each with two threads,
    3.8 for 3.8 with one). So up to ``SMALL_BATCH`` rows a one-thread copy of the booster predicts,
    through ``direct_predict`` where it is available; bigger batches use every thread, where they
    halve the wall time (1,000 rows: 2.3 ms against 4.4).
    """

    matrix = True  # model_outputs hands it encode_matrix's matrix, not a frame

    def __init__(self, booster) -> None:
        self.booster = booster
        self.single = booster.copy()
        self.single.set_param({"nthread": 1})
        self.direct = direct_predict(self.single)

    def __call__(self, X):
        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(X) > SMALL_BATCH:
            return self.booster.inplace_predict(X)
        if self.direct is not None:
            try:
                return self.direct(X)
            except RuntimeError:  # XGBoost refused the rows: its own wrapper says why
                pass
        return self.single.inplace_predict(X)


def direct_predict(booster):
    """``booster.inplace_predict`` of a dense float32 matrix, or None where it cannot be had.

    It calls XGBoost's C function for dense rows (``XGBoosterPredictFromDense``, the one
    ``inplace_predict`` calls) with its settings written once: on one row the Python wrapper
    around that call cost more than the call itself (about 90 of 165 microseconds). Before it is
    used it must give exactly what ``inplace_predict`` gives on random rows with gaps; otherwise,
    or where XGBoost's library is not reachable, the answer is None and the wrapper is used."""
    import ctypes

    try:
        from xgboost import core

        function = core._LIB.XGBoosterPredictFromDense
    except (ImportError, AttributeError):
        return None
    config = json.dumps({"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0,
                         "strict_shape": False, "missing": float("nan"), "cache_id": 0}).encode()
    handle = booster.handle

    def predict(X):
        shape, dims = ctypes.POINTER(ctypes.c_uint64)(), ctypes.c_uint64()
        out = ctypes.POINTER(ctypes.c_float)()
        rows = f'{{"data": [{X.ctypes.data}, true], "shape": [{X.shape[0]}, {X.shape[1]}], "typestr": "<f4", "version": 3}}'
        if function(handle, rows.encode(), config, None, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out)):
            raise RuntimeError("XGBoosterPredictFromDense failed")
        dims_ = tuple(int(shape[i]) for i in range(dims.value))
        # XGBoost keeps the answer in a buffer of its own that the next call reuses: copied out
        return np.ctypeslib.as_array(out, shape=(int(np.prod(dims_)),)).reshape(dims_).copy()

    rng = np.random.default_rng(0)
    check = rng.normal(0, 100, size=(64, booster.num_features())).astype(np.float32)
    check[rng.random(check.shape) < 0.2] = np.nan
    try:
        same = all(np.array_equal(predict(rows), booster.inplace_predict(rows), equal_nan=True)
                   for rows in (check, check[:1]))
    except (RuntimeError, ValueError, TypeError, OSError):
        return None
    return predict if same else None


class LabelledModel(PythonModel):
    """Encode raw rows like training did, run the classifier, return label names.

    The names are the spec's ``classes``, written when the model was logged: each class as most of
    its training rows spell it ("Benign"). A model logged before trilho kept that spelling holds
    the upper-cased names ("BENIGN") there, and answers with them still."""

    def load_context(self, context):
        # the model's own folder (artifacts/spec.json is in it): nothing it reads may differ from what was logged
        check_files(os.path.dirname(os.path.dirname(os.path.abspath(context.artifacts["spec"]))), skip_caches=True)
        with open(context.artifacts["spec"], encoding="utf-8") as fh:
            self.spec_ = json.load(fh)
        self.classifier_, self.proba_ = load_classifier(self.spec_, context.artifacts["classifier"])
        self.explainer_ = load_explainer(self.spec_, self.classifier_)
        # MLflow's scoring server runs requests on a pool of threads that share one GIL. A request's
        # model work is short Python with calls into Arrow and XGBoost that let the GIL go; run side
        # by side, each such call sends the request to the back of the queue for the GIL behind the
        # other requests' work. One request's few rows at a time, the work runs through (server
        # CPU per 1-row request above MLflow's floor, at 32 clients: 1.05-1.09 ms with this, 2.07 ms
        # without; BENCHMARKS.md).
        self.small_ = threading.Lock()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        """By default the label (in the data's own terms) and one probability column per class.

        ``params={"output": "labels"}`` returns only the labels, ``"proba"`` only the probabilities;
        ``params={"explain": True}`` adds each feature's contribution to each row's answer
        (``load_explainer``: ``contrib_<feature>``, ``base_value`` for TreeSHAP, ``explained_class``).
        Inside ``mlflow models serve`` (MLflow marks its scoring server's process) the same rows
        come back as the records MLflow would make of the frame for its JSON answer, so each
        request skips building a frame only to take it apart again.
        """
        serving = os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"
        small = len(model_input) <= SMALL_BATCH if hasattr(model_input, "__len__") else False
        params = params or {}
        explainer = None
        if params.get("explain") in (True, "true", "True", 1, "1"):
            explainer = getattr(self, "explainer_", None)
            if explainer is None:
                raise ValueError("params explain=true: this model was logged before trilho could explain its "
                                 "answers; log it again (trilho run) to explain them")
        with self.small_ if small else contextlib.nullcontext():
            return model_outputs(self.proba_, model_input, self.spec_, params.get("output", "both"),
                                 matrix=getattr(self.proba_, "matrix", False), records=serving, explainer=explainer)


set_model(LabelledModel())
