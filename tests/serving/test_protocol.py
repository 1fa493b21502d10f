"""MLflow's scoring protocol as trilho serve reads it, and the fast encoding of a request's values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trilho.errors import RequestError
from trilho.model.encoding import encode_matrix, feature_spec
from trilho.serving.protocol import encode_request, model_frame, params_of, parse_body

JSON = "application/json"


def _spec(policy: str, markers: list[str] | None = None) -> dict:
    maps = {"flags": {"YES": 1, "NO": 0}, "kind": {"A": 0, "B": 1, "C": 2, "1": 3}}
    spec = feature_spec(["ints", "floats", "flags", "kind"], maps, ["x", "y"], ["id"], policy, markers)
    spec["fill"] = {"ints": 1.0, "floats": 0.5, "flags": 0.0, "kind": 2.0}
    return spec


def _both(body: dict, spec: dict):
    """encode_request's matrix of a JSON body and encode_matrix's of the frame MLflow would build, or each error."""
    out = []
    parsed = parse_body(json.dumps(body).encode(), JSON)
    for encode in (lambda: encode_request(parsed, spec)[0], lambda: encode_matrix(parsed.as_frame(), spec)):
        try:
            out.append(encode())
        except ValueError as exc:
            out.append(str(exc))
    return out


def test_the_fast_request_encoding_is_the_frames_encoding():
    """Value for value and error for error, on JSON rows of every kind a client sends: numbers,
    nulls, text in any case, unseen text, whole numbers as categories, text in a numeric column,
    true/false, markers."""
    rng = np.random.default_rng(3)
    specs = {p: _spec(p) for p in ("impute", "native", "drop", "reject")} | {"marked": _spec("impute", ["?"])}
    kinds = ["a", "B", " c ", "never-seen", None, 1, "1", "?"]
    for trial in range(400):
        n = int(rng.integers(1, 30))
        rows = []
        for _ in range(n):
            row = {"ints": int(rng.integers(-5, 50)), "floats": float(rng.normal()),
                   "flags": [" Yes", "no", None, "YES"][int(rng.integers(0, 4))], "kind": kinds[int(rng.integers(0, 8))],
                   "id": int(rng.integers(0, 1000))}
            if rng.random() < 0.1:
                row["floats"] = None
            if rng.random() < 0.03:
                row["ints"] = "12"  # text that is a number: the frame's way reads it
            if rng.random() < 0.01:
                row["flags"] = True
            rows.append(row)
        if rng.random() < 0.05:
            rows[0]["ints"] = "not a number"
        policy = str(rng.choice(list(specs)))
        fast, slow = _both({"dataframe_records": rows}, specs[policy])
        if isinstance(fast, str) or isinstance(slow, str):
            assert fast == slow, (trial, policy)
        else:
            np.testing.assert_array_equal(fast, slow, err_msg=f"trial {trial}, policy {policy}")
    assert specs["impute"]["__memo__"]["kind"]  # values were remembered, and the answers held


def test_every_format_of_the_protocol_reads_the_same_rows():
    frame = pd.DataFrame({"ints": [1, 2, 3], "floats": [0.5, None, 2.0], "flags": ["yes", "NO", None],
                          "kind": ["a", "b", "c"], "id": [7, 8, 9]})
    records = json.loads(frame.to_json(orient="records"))
    bodies = {
        "dataframe_split": {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs (columns)": {"inputs": {c: [r[c] for r in records] for c in frame.columns}},
        "inputs (records)": {"inputs": records},
    }
    spec = _spec("impute")
    expected = encode_matrix(frame, spec)
    for name, body in bodies.items():
        parsed = parse_body(json.dumps(body).encode(), JSON)
        assert parsed.rows == 3, name
        np.testing.assert_array_equal(encode_request(parsed, spec)[0], expected, err_msg=name)
    csv = parse_body(frame.to_csv(index=False).encode(), "text/csv; charset=utf-8")
    np.testing.assert_array_equal(encode_request(csv, spec)[0], expected)
    one = parse_body(b'{"inputs": {"ints": 1, "floats": 0.5, "flags": "yes", "kind": "a"}}', JSON)
    assert one.rows == 1 and encode_request(one, spec)[0].shape == (1, 4)


def test_gaps_are_told_apart_from_the_values_that_filled_them():
    spec = _spec("impute")
    parsed = parse_body(b'{"dataframe_records": [{"ints": 3, "floats": null, "flags": "maybe", "kind": "a"}]}', JSON)
    X, gaps = encode_request(parsed, spec)
    assert X.tolist() == [[3.0, 0.5, 0.0, 0.0]]  # filled as the model's policy says
    assert gaps.tolist() == [[False, True, True, False]]  # a missing number, an unseen category


def test_nan_and_infinity_literals_and_zero_rows_are_read():
    spec = _spec("impute")
    parsed = parse_body(b'{"dataframe_split": {"columns": ["ints", "floats", "flags", "kind"], '
                        b'"data": [[1, NaN, "yes", "a"], [2, Infinity, "no", "b"], [3, -Infinity, "no", "b"]]}}', JSON)
    X, gaps = encode_request(parsed, spec)
    assert X[:, 1].tolist() == [0.5, 0.5, 0.5] and gaps[:, 1].all()  # infinite is as unknown as missing
    empty = parse_body(b'{"dataframe_split": {"columns": ["ints", "floats", "flags", "kind"], "data": []}}', JSON)
    assert empty.rows == 0
    assert parse_body(b'{"dataframe_records": []}', JSON).rows == 0


@pytest.mark.parametrize(("body", "content_type", "status", "says"), [
    (b"{not json", JSON, 400, "not valid JSON"),
    (b"[1, 2]", JSON, 400, "must be a JSON object"),
    (b'{"data": []}', JSON, 400, "exactly one of"),
    (b'{"dataframe_split": {"columns": ["a"], "data": []}, "inputs": {}}', JSON, 400, "exactly one of"),
    (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}', JSON, 400, "row 0 has 1 values; the columns are 2"),
    (b'{"dataframe_split": {"data": [[1]]}}', JSON, 400, "needs 'columns'"),
    (b'{"instances": [[1, 2]]}', JSON, 400, "without column names"),
    (b'{"inputs": {"a": [1, 2], "b": [1]}}', JSON, 400, "all of one length"),
    (b'{"dataframe_records": [{"a": 1}], "params": [1]}', JSON, 400, "'params' must be an object"),
    (b"a,b\n1,2", "application/xml", 415, "send application/json or text/csv"),
    (b"a,b\n1,2", "text/csv; charset=latin-1", 415, "UTF-8 only"),
])
def test_a_bad_body_is_refused_with_what_it_should_be(body, content_type, status, says):
    with pytest.raises(RequestError, match=says) as found:
        parse_body(body, content_type)
    assert found.value.status == status


def test_params_and_missing_columns_are_named():
    assert params_of({}) == ("both", False)
    assert params_of({"output": "labels", "explain": "true"}) == ("labels", True)
    with pytest.raises(RequestError, match=r"params \['threshold'\]"):
        params_of({"threshold": 0.3})
    with pytest.raises(RequestError, match="explain='maybe'"):
        params_of({"explain": "maybe"})
    parsed = parse_body(b'{"dataframe_records": [{"ints": 1}]}', JSON)
    with pytest.raises(ValueError, match=r"missing feature columns \['floats', 'flags', 'kind'\]"):
        encode_request(parsed, _spec("impute"))
    typed = parse_body(b'{"dataframe_records": [{"ints": "old", "floats": 1, "flags": "yes", "kind": "a"}]}', JSON)
    with pytest.raises(ValueError, match=r"column 'ints' has non-numeric values \['old'\]"):
        encode_request(typed, _spec("impute"))
    gap = parse_body(b'{"dataframe_records": [{"ints": 1, "floats": null, "flags": "yes", "kind": "a"}]}', JSON)
    with pytest.raises(ValueError, match=r"column 'floats' has 1 missing.*'reject'"):
        encode_request(gap, _spec("reject"))


def test_a_frame_fitted_model_gets_integer_codes_where_a_category_is_complete():
    spec = _spec("native")
    frame = model_frame(np.array([[1.0, 0.5, 1.0, 2.0], [2.0, np.nan, np.nan, 0.0]]), spec)
    assert frame.dtypes.astype(str).tolist() == ["float64", "float64", "float64", "int64"]
    assert list(frame.columns) == spec["features"]


def test_numbers_sent_as_text_and_missing_words_take_the_fast_path_with_the_frames_answers():
    """A CSV-to-JSON client or a web form sends "50" for 50, and R's NA or SQL's NULL for a gap: the
    fast path reads them (it stepped aside for them before, at a thirtieth of the speed) and gives
    encode_matrix's matrix of the same frame, value for value, under every policy."""
    rng = np.random.default_rng(7)
    texts = ["12", " 7 ", "-3", "+4", "1e2", "0.25", ".5", "NA", "NULL", "null", "N/A", "#N/A", "NaN", "<NA>", "?"]
    for trial in range(300):
        policy = str(rng.choice(["impute", "native", "reject", "marked"]))
        spec = _spec("impute", ["?"]) if policy == "marked" else _spec(policy)
        rows = [{"ints": str(rng.choice(texts)) if rng.random() < 0.5 else int(rng.integers(0, 9)),
                 "floats": str(rng.choice(texts)) if rng.random() < 0.5 else float(rng.normal()),
                 "flags": str(rng.choice(["yes", "NO", "NA", "NULL"])), "kind": str(rng.choice(["a", "b", "NA"]))}
                for _ in range(int(rng.integers(1, 20)))]
        fast, slow = _both({"dataframe_records": rows}, spec)
        if isinstance(fast, str) or isinstance(slow, str):
            assert fast == slow, (trial, policy)
        else:
            np.testing.assert_array_equal(fast, slow, err_msg=f"trial {trial}, policy {policy}")
    spec = _spec("impute")
    parsed = parse_body(b'{"dataframe_records": [{"ints": "50", "floats": "NA", "flags": "yes", "kind": "NA"}]}', JSON)
    X, gaps = encode_request(parsed, spec)
    assert X.tolist() == [[50.0, 0.5, 1.0, 2.0]] and gaps.tolist() == [[False, True, False, True]]
    assert spec["__texts__"] == {"50": 50.0, "NA": pytest.approx(np.nan, nan_ok=True)}  # the fast path read them


@pytest.mark.parametrize("row, says", [
    ({"ints": True, "floats": 1.0, "flags": "yes", "kind": "a"}, "column 'ints' row 0 holds true"),
    ({"ints": 1, "floats": [1, 2], "flags": "yes", "kind": "a"}, "column 'floats' row 0 holds a JSON list"),
    ({"ints": 1, "floats": 1.0, "flags": {"a": 1}, "kind": "a"}, "column 'flags' row 0 holds a JSON object"),
])
def test_a_cell_no_table_holds_is_refused_naming_its_column(row, says):
    parsed = parse_body(json.dumps({"dataframe_records": [row]}).encode(), JSON)
    with pytest.raises(RequestError, match=says) as found:
        encode_request(parsed, _spec("impute"))
    assert found.value.status == 400


def test_json_nested_past_any_table_is_a_request_error():
    with pytest.raises(RequestError, match="nests JSON too deeply") as found:
        parse_body(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", JSON)
    assert found.value.status == 400
