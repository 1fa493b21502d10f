"""A corpus of small tabular data sets made here, differing in the ways users' data differ.

Each maker returns (frame, target, file suffix, one unseen category column or None). Every set has
some signal, so the models learn something, and its own kind of dirt.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _mixed_case(rng: np.random.Generator, values: np.ndarray) -> np.ndarray:
    styles = [str.lower, str.upper, str.title, lambda s: f" {s} "]
    return np.array([styles[i](v) for i, v in zip(rng.integers(0, 4, len(values)), values, strict=True)], dtype=object)


def churn(rows: int = 600, seed: int = 1):
    """Binary, text labels in mixed case, an identifier, missing numerics and categoricals in mixed case."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one year", "two year"], rows, p=[0.5, 0.3, 0.2])
    tenure = rng.integers(0, 72, rows).astype(float)
    charges = rng.normal(70, 20, rows).round(2)
    risk = (contract == "month-to-month") * 1.5 - tenure / 30 + (charges - 70) / 25 + rng.normal(0, 0.8, rows)
    churned = np.where(risk > 0.6, "Yes", "No")
    frame = pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(rows)],
        "contract": _mixed_case(rng, contract),
        "internet": _mixed_case(rng, rng.choice(["fiber", "dsl", "no_service"], rows)),
        "tenure": tenure, "monthly_charges": charges,
        "Churn": _mixed_case(rng, churned),
    })
    frame.loc[rng.choice(rows, 30, replace=False), "tenure"] = np.nan
    frame.loc[rng.choice(rows, 20, replace=False), "internet"] = np.nan
    return frame, "Churn", ".csv", "contract"


def species(rows: int = 300, seed: int = 2):
    """Multiclass with integer labels 0..2, numeric features only, missing numerics; written with
    ";" and a decimal comma (CSV_STYLE)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, rows)
    centres = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    X = centres[y] + rng.normal(0, 0.4, (rows, 4))
    frame = pd.DataFrame(X.round(2), columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    frame["species"] = y
    frame.loc[rng.choice(rows, 15, replace=False), "petal_width"] = np.nan
    return frame, "species", ".csv", None


def wide(rows: int = 400, seed: int = 3, features: int = 120):
    """Wide: 120 numeric features, binary integer labels."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (rows, features))
    y = (X[:, :5].sum(axis=1) + rng.normal(0, 1, rows) > 0).astype(int)
    frame = pd.DataFrame(X.round(4), columns=[f"f{i:03d}" for i in range(features)])
    frame["target"] = y
    return frame, "target", ".csv", None


def rare(rows: int = 500, seed: int = 4):
    """Multiclass with a rare class of 7 rows (near the fold limit), text labels, a categorical, a
    numeric column with "?" for missing values."""
    rng = np.random.default_rng(seed)
    labels = np.array(["common"] * 300 + ["medium"] * 193 + ["rare"] * 7, dtype=object)
    rng.shuffle(labels)
    shift = pd.Series(labels).map({"common": 0.0, "medium": 1.5, "rare": 3.0}).to_numpy()
    frame = pd.DataFrame({
        "x1": (rng.normal(0, 1, rows) + shift).round(3),
        "x2": (rng.normal(0, 1, rows) - shift).round(3),
        "x3": rng.normal(0, 1, rows).round(3),
        "site": _mixed_case(rng, rng.choice(["north", "south", "east"], rows)),
        "outcome": _mixed_case(rng, labels),
    })
    # a public data set's way of writing a missing number: "?" (one in the rows predicted)
    frame["x3"] = frame["x3"].astype(object)
    frame.loc[[3, *rng.choice(np.arange(10, rows), 9, replace=False)], "x3"] = "?"
    return frame, "outcome", ".csv", "site"


def flags(rows: int = 400, seed: int = 5):
    """Parquet; booleans as text, integer codes, text categoricals with missing ones, text labels."""
    rng = np.random.default_rng(seed)
    smoker = rng.random(rows) < 0.3
    level = rng.integers(1, 5, rows)
    age = rng.integers(18, 90, rows)
    score = smoker * 1.2 + (level - 2.5) * 0.5 + (age - 50) / 30 + rng.normal(0, 0.7, rows)
    frame = pd.DataFrame({
        "record_no": np.arange(1000, 1000 + rows),
        "smoker": np.where(smoker, "True", "false"),
        "level": level, "age": age,
        "region": _mixed_case(rng, rng.choice(["urban", "rural"], rows)),
        "result": np.where(score > 0.5, "positive", "Negative"),
    })
    frame["region"] = frame["region"].astype(object)
    frame.loc[rng.choice(rows, 25, replace=False), "region"] = None
    return frame, "result", ".parquet", "region"


def repeats(rows: int = 450, seed: int = 6):
    """Multiclass with integer labels 1..3, many duplicated rows, missing categoricals."""
    rng = np.random.default_rng(seed)
    base = rows * 3 // 4
    y = rng.integers(1, 4, base)
    frame = pd.DataFrame({
        "a": (rng.normal(0, 1, base) + y).round(1),
        "b": rng.integers(0, 50, base),
        "colour": _mixed_case(rng, rng.choice(["red", "green", "blue"], base)),
        "grade": y,
    })
    frame = pd.concat([frame, frame.sample(rows - base, random_state=seed)], ignore_index=True)
    frame["colour"] = frame["colour"].astype(object)
    frame.loc[rng.choice(rows, 20, replace=False), "colour"] = None
    return frame, "grade", ".csv", "colour"


def survey(rows: int = 500, seed: int = 7):
    """Binary, its label spelled eight ways (Yes, y, TRUE, ... No, n, false), a text category,
    column names with characters MLflow refuses in a param's name."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(4, rows)
    spend = rng.gamma(2.0, 30.0, rows).round(2)
    channel = rng.choice(["email", "phone", "web"], rows)
    score = (visits - 4) / 2 + (spend - 60) / 40 + (channel == "web") * 0.8 + rng.normal(0, 0.8, rows)
    said_yes = score > 0.3
    yes = rng.choice(["Yes", "yes", "Y", "TRUE"], rows, p=[0.4, 0.3, 0.2, 0.1])
    no = rng.choice(["No", "no", "n", "false"], rows, p=[0.4, 0.3, 0.2, 0.1])
    frame = pd.DataFrame({"visits/month": visits, "spend (€)": spend, "canal de venda": _mixed_case(rng, channel),
                          "subscribed": np.where(said_yes, yes, no)})
    return frame, "subscribed", ".csv", "canal de venda"


def voyage(rows: int = 2_200, seed: int = 8):
    """All-categorical, binary: three features of 4, 2 and 2 values, so nearly every row is an
    exact copy of another (different people who happen to look alike), and a clear signal."""
    rng = np.random.default_rng(seed)
    cabin = rng.choice(["first", "second", "third", "crew"], rows, p=[0.15, 0.13, 0.32, 0.40])
    sex = rng.choice(["male", "female"], rows, p=[0.78, 0.22])
    age = rng.choice(["adult", "child"], rows, p=[0.95, 0.05])
    logit = (-1.3 + 2.4 * (sex == "female") + 1.0 * (age == "child")
             + pd.Series(cabin).map({"first": 1.6, "second": 0.7, "third": -0.3, "crew": 0.0}).to_numpy())
    survived = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({"cabin": cabin, "sex": sex, "age": age, "survived": np.where(survived, "yes", "no")})
    return frame, "survived", ".csv", None


def credit(rows: int = 6_000, seed: int = 9, positive: float = 0.033):
    """Imbalanced binary (3.3% positive): numeric features with a weak signal, one categorical."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (rows, 6))
    purpose = rng.choice(["car", "home", "education", "business"], rows)
    logit = X[:, 0] * 0.9 - X[:, 1] * 0.7 + X[:, 2] * X[:, 3] * 0.5 + (purpose == "business") * 0.6
    cut = np.quantile(logit + rng.logistic(0, 1, rows), 1 - positive)
    default = logit + rng.logistic(0, 1, rows) > cut
    frame = pd.DataFrame(X.round(3), columns=["income", "tenure", "debt_ratio", "utilisation", "inquiries", "age"])
    frame["purpose"] = purpose
    frame["defaulted"] = default.astype(int)
    return frame, "defaulted", ".csv", "purpose"


def leaky(rows: int = 800, seed: int = 10):
    """Binary, with a column known only after the outcome: the label's own code, re-spelled."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (rows, 3))
    y = (x[:, 0] + rng.normal(0, 1.2, rows) > 0.4)
    frame = pd.DataFrame(x.round(3), columns=["a", "b", "c"])
    frame["closed_reason"] = np.where(y, "charged off", "paid")
    frame["label"] = np.where(y, "bad", "good")
    return frame, "label", ".csv", None


def flights(rows: int = 300_000, seed: int = 11):
    """A 300,000-row set: numeric and categorical features, missing values, 19% positive."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice([f"C{i}" for i in range(14)], rows)
    origin = rng.choice([f"A{i:02d}" for i in range(40)], rows)
    hour = rng.integers(5, 23, rows)
    distance = rng.gamma(2.0, 400.0, rows).round(0)
    weather = rng.gamma(1.5, 1.0, rows).round(2)
    logit = (-2.0 + (hour - 14) * 0.08 + weather * 0.4 + (carrier == "C3") * 0.7
             + pd.Series(origin).str[1:].astype(int).to_numpy() / 80 + rng.normal(0, 0.5, rows))
    late = rng.random(rows) < 1 / (1 + np.exp(-logit))
    frame = pd.DataFrame({"carrier": carrier, "origin": origin, "hour": hour, "distance": distance,
                          "weather": weather, "delayed": np.where(late, "Y", "N")})
    frame.loc[rng.choice(rows, rows // 50, replace=False), "weather"] = np.nan
    return frame, "delayed", ".csv", "carrier"


CORPUS = {"churn": churn, "species": species, "wide": wide, "rare": rare, "flags": flags, "repeats": repeats,
          "survey": survey}
# a European spreadsheet's export: ";" between values, a decimal comma
CSV_STYLE = {"species": {"sep": ";", "decimal": ","}}
MARKERS = {"rare": ["?"]}  # what init finds written for a missing value
CLASSES = {"churn": 2, "species": 3, "wide": 2, "rare": 3, "flags": 2, "repeats": 3, "survey": 2}


def write(name: str, folder) -> tuple:
    """Write one data set; returns (path, target, unseen category column)."""
    frame, target, suffix, unseen = CORPUS[name]()
    path = folder / f"{name}{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False, **CSV_STYLE.get(name, {}))
    return path, target, unseen
