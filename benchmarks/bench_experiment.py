"""trilho against a faithful seed-style run, side by side in one process, on one tracking store.

Seed style (as the reference notebook did it): a sequential loop over the repeats, XGBoost at its
default threading, eight scikit-learn metric calls per fold, one ``log_metric`` call per number in
nested runs, the holdout pipeline logged with inferred requirements (pickle, since MLflow 3's
default skops format refuses the imblearn pipeline).

Also measured: the CV floor, the sum of single-threaded pipeline fit times divided by the cores.

    python benchmarks/bench_experiment.py [--data PATH] [--rounds 3] [--tracking server|sqlite]

``--tracking server`` (the default, as the reference ran) starts a local ``mlflow server`` on
127.0.0.1 with a SQLite backend; ``sqlite`` writes to the SQLite file directly.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "diabetes.csv"


def seed_style(data_path: Path, tracking_uri: str) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pandas as pd
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from mlflow.models import infer_signature  # noqa: F401  (imported by the notebook too)
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, precision_score, recall_score
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from xgboost import XGBClassifier

    start = time.perf_counter()
    df = pd.read_csv(data_path).drop(columns=["ID", "No_Pation"])
    df["Gender"] = df["Gender"].map({"F": 0, "M": 1, "f": 0})
    y = df["CLASS"].str.strip().map({"N": 0, "Y": 1, "P": 2})
    X = df.drop(columns="CLASS")

    def make():
        return Pipeline([("smote", SMOTE(random_state=42)),
                         ("xgb", XGBClassifier(random_state=42, objective="multi:softprob", num_class=3,
                                               eval_metric="mlogloss"))])

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench_seed_style")
    names = ["accuracy", "precision", "recall", "f1"]
    all_scores = {m: [] for m in names}
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_name="xgboost_experimento_global"):
        for seed in range(10):
            with mlflow.start_run(run_name=f"seed_{seed}", nested=True):
                mlflow.set_tag("seed", seed)
                scores = {m: [] for m in names}
                for i, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y)):
                    model = make().fit(X.iloc[tr], y.iloc[tr])
                    pred = model.predict(X.iloc[te])
                    fold = {"accuracy": accuracy_score(y.iloc[te], pred)}
                    for m, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
                        fold[m] = fn(y.iloc[te], pred, average="weighted", zero_division=0)
                        fn(y.iloc[te], pred, average="macro", zero_division=0)
                    for m in names:
                        scores[m].append(fold[m])
                        mlflow.log_metric(f"{m}_fold_{i}", fold[m])
                for m in names:
                    mlflow.log_metric(f"{m}_mean_seed", float(np.mean(scores[m])))
                    all_scores[m] += scores[m]
        for m in names:
            v = np.array(all_scores[m])
            mlflow.log_metric(f"{m}_global_mean", v.mean())
            mlflow.log_metric(f"{m}_global_std", v.std(ddof=1))
            mlflow.log_metric(f"{m}_global_ci_low", np.percentile(v, 2.5))
            mlflow.log_metric(f"{m}_global_ci_high", np.percentile(v, 97.5))
        fig = plt.figure()
        plt.boxplot([all_scores[m] for m in names], tick_labels=names)
        fig.savefig(f"{tmp}/boxplot_metricas_xgb.png")
        plt.close(fig)
        pd.DataFrame(all_scores).to_csv(f"{tmp}/resultados_xgb.csv", index=False)
        mlflow.log_artifact(f"{tmp}/boxplot_metricas_xgb.png")
        mlflow.log_artifact(f"{tmp}/resultados_xgb.csv")
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=42, stratify=y)
        model = make().fit(X_tr, y_tr)
        pred = model.predict(X_te)
        Path(f"{tmp}/classification_report_xgb.txt").write_text(classification_report(y_te, pred))
        mlflow.log_artifact(f"{tmp}/classification_report_xgb.txt")
        fig = plt.figure()
        plt.imshow(confusion_matrix(y_te, pred, labels=[0, 1, 2]))
        fig.savefig(f"{tmp}/confusion_matrix_xgb.png")
        plt.close(fig)
        mlflow.log_artifact(f"{tmp}/confusion_matrix_xgb.png")
        mlflow.sklearn.log_model(model, name="modelo_xgb", serialization_format="cloudpickle")
    return time.perf_counter() - start


def cv_floor(data_path: Path, cores: int) -> float:
    """Sum of single-threaded fit times of every pipeline fit trilho's CV phase makes, divided by the cores."""
    from threadpoolctl import threadpool_limits

    from trilho.data.clean import clean
    from trilho.data.curate import fold_data
    from trilho.data.tables import read_table
    from trilho.evaluation.splits import holdout_split, split_plan
    from trilho.model.catalog import build_pipeline

    exp = trilho_experiment(data_path)
    data = clean(read_table(data_path), exp)
    X, y, groups, _ = fold_data(data, exp)
    holdout_train, _ = holdout_split(y, exp.evaluation.holdout_fraction, exp.random_state, groups)
    # every fit trilho's CV phase makes: the 50 folds, the holdout fit and the final fit
    fits = [train for _seed, _i, train, _test in split_plan(y, exp.cv.n_splits, exp.cv.seeds, groups)]
    fits += [holdout_train, np.arange(len(y))]
    total = 0.0
    with threadpool_limits(1):
        for train in fits:
            pipe = build_pipeline(exp.model.model_dump(), exp.resampler.model_dump(), exp.random_state, 1,
                                  encoding=data.spec)
            start = time.perf_counter()
            pipe.fit(X.iloc[train], y[train])
            total += time.perf_counter() - start
    return total / cores


def trilho_experiment(data_path: Path):
    """The shipped diabetes experiment in its seed-exact mode: the same folds and numbers as the seed style."""
    from trilho import load_experiment

    return load_experiment("diabetes", [f'source.uri="file:{data_path}"', 'source.sha256=""', 'cv.duplicates="keep"'])


def trilho_run(data_path: Path, settings) -> dict:
    from trilho.workflows.run import run_experiment

    exp = trilho_experiment(data_path)
    start = time.perf_counter()
    result = run_experiment(exp, settings)
    wall = time.perf_counter() - start
    print("  trilho timings: " + "  ".join(f"{k}={v:.3f}" for k, v in result.timings.items()), flush=True)
    return {"wall_s": wall, **result.timings,
            "accuracy_mean": result.summary["cv"]["metrics"]["accuracy"]["mean"]}


def start_server(folder: str) -> tuple[subprocess.Popen, str]:
    import requests

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder}/server.db", "--artifacts-destination", f"{folder}/artifacts"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                return proc, uri
        except requests.RequestException:
            time.sleep(0.5)
    proc.kill()
    sys.exit("mlflow server did not start within 90 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tracking", choices=["server", "server-s3", "sqlite"], default="server")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} not found: pass --data PATH (the diabetes CSV)")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import mlflow  # both sides share the library import, paid here once
    from mlflow.tracking import MlflowClient

    from trilho import load_settings

    rows = []
    server = store = None
    with tempfile.TemporaryDirectory(prefix="trilho-bench-") as tmp:
        if args.tracking == "server":
            server, uri = start_server(tmp)
        elif args.tracking == "server-s3":  # SeaweedFS holds the artifacts; the server proxies them
            sys.path.insert(0, str(ROOT))
            from tests.support.services import MlflowServer, SeaweedFS

            store = SeaweedFS(Path(tmp) / "store").start()
            store.client().create_bucket(Bucket="mlflow")
            server = MlflowServer(Path(tmp) / "server", "s3://mlflow/", env=store.env()).start()
            uri = server.url
        else:
            uri = f"sqlite:///{tmp}/mlflow.db"
        MlflowClient(uri).search_experiments()  # create the store's tables before anything is timed
        mlflow.set_tracking_uri(uri)
        settings = load_settings(env_file=None, lake=f"{tmp}/lake", tracking_uri=uri)
        cores = settings.free_cores()
        for r in range(args.rounds):
            seed_s = seed_style(args.data, uri)
            t = trilho_run(args.data, settings)
            floor = cv_floor(args.data, cores)
            row = {"seed_s": seed_s, "trilho_s": t["wall_s"], "speedup": seed_s / t["wall_s"],
                   "cv_s": t["cv_s"], "floor_s": floor, "cv_over_floor": t["cv_s"] / floor,
                   "tracking_s": t["tracking_s"], "tracking_share": t["tracking_s"] / t["wall_s"],
                   # the part of it that the run waits for: the rest overlaps the fits
                   "tracking_waited_s": t["tracking_s"] - t.get("tracking_during_cv_s", 0.0),
                   "waited_share": (t["tracking_s"] - t.get("tracking_during_cv_s", 0.0)) / t["wall_s"]}
            rows.append(row)
            print(f"round {r + 1}: " + "  ".join(f"{k}={v:.3f}" for k, v in row.items()), flush=True)
        if isinstance(server, subprocess.Popen):
            server.terminate()
            server.wait(30)
        elif server:
            server.stop()
        if store:
            store.stop()
    print(f"\ncores={cores}  rounds={args.rounds}  data={args.data.name}  tracking={args.tracking}  (medians)")
    for key in rows[0]:
        print(f"  {key:15s} {statistics.median(r[key] for r in rows):8.3f}")


if __name__ == "__main__":
    main()
