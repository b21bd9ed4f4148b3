"""Reading predictions files: alignment by id or line, and clear file:line errors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from ftkit.errors import EvaluationError
from ftkit.evaluate import evaluate, load_predictions, load_reference, write_predictions
from ftkit.evaluate.predictions import Prediction


def write(path: Path, rows: list) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write(tmp_path / "test.jsonl", [{"id": f"e{i}", "text": f"t{i}", "label": "ab"[i % 2]} for i in range(4)])


def test_aligned_by_id_in_any_order(tmp_path: Path, data: Path) -> None:
    preds = write(tmp_path / "p.jsonl", [{"id": f"e{i}", "prediction": "ab"[i % 2]} for i in (3, 1, 0, 2)])
    ref = load_reference(data)
    got = load_predictions(preds, ref)
    assert [p.label for p in got] == ["a", "b", "a", "b"]
    assert evaluate(preds, data, bootstrap=0).metrics["accuracy"] == 1.0


def test_aligned_by_line_without_ids(tmp_path: Path) -> None:
    data = write(tmp_path / "d.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": True}])
    preds = write(tmp_path / "p.jsonl", [{"prediction": 1}, {"prediction": "false", "probabilities": {"true": 0.4,
                                                                                                      "false": 0.6}}])
    got = load_predictions(preds, load_reference(data))
    assert [p.label for p in got] == ["1", "false"]
    assert got[1].probabilities == {"true": 0.4, "false": 0.6}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"prediction": "a"}, b"{not json", {"prediction": "a"}, {"prediction": "a"}], r"p\.jsonl:2: invalid JSON"),
        ([{"prediction": "a"}, {"label": "a"}, {"prediction": "a"}, {"prediction": "a"}], r"p\.jsonl:2: missing"),
        ([{"prediction": "a"}] * 3 + [{"prediction": "a", "probabilities": {"a": 1.5}}],
         r"p\.jsonl:4: probability of 'a' must be a number in \[0, 1\]"),
        ([{"prediction": "a"}] * 3, r"3 prediction\(s\) for 4 example\(s\)"),
        ([{"id": "e0", "prediction": "a"}, {"id": "e1", "prediction": "a"}, {"id": "e2", "prediction": "a"},
          {"id": "zz", "prediction": "a"}], r"no prediction for 1 example id"),
        ([{"id": f"e{i}", "prediction": "a"} for i in range(4)] + [{"id": "e1", "prediction": "b"}],
         r"p\.jsonl:5: duplicate id 'e1'"),
        ([{"id": f"e{i}", "prediction": "a"} for i in range(4)] + [{"id": "e9", "prediction": "b"}],
         r"p\.jsonl:5: id 'e9' is not in"),
        (["just a string"] * 4, r"p\.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_predictions_name_file_and_line(tmp_path: Path, data: Path, rows: list, expected: str) -> None:
    preds = write(tmp_path / "p.jsonl", rows)
    with pytest.raises(EvaluationError, match=expected):
        load_predictions(preds, load_reference(data))


def test_bad_reference_lines(tmp_path: Path) -> None:
    mixed = write(tmp_path / "mixed.jsonl", [{"text": "a", "label": "x"}, {"messages": [{"role": "user",
                                                                                         "content": "hi"}]}])
    with pytest.raises(EvaluationError, match=r"mixed\.jsonl:2: a generation example in a classification file"):
        load_reference(mixed)
    # A file of unlabelled lines is a text file (perplexity); a missing label in a classification file is an error.
    assert load_reference(write(tmp_path / "text.jsonl", [{"text": "a"}])).task == "text"
    nolabel = write(tmp_path / "nolabel.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(EvaluationError, match=r"nolabel\.jsonl:2: .* needs 'text' and 'label'"):
        load_reference(nolabel)
    with pytest.raises(EvaluationError, match="no such file"):
        load_reference(tmp_path / "missing.jsonl")


def test_labels_outside_vocabulary_are_an_error(data: Path) -> None:
    with pytest.raises(EvaluationError, match=r"label\(s\) \['b'\] outside labels"):
        evaluate([{"prediction": "a"}] * 4, data, labels=["a", "c"], bootstrap=0)


def test_write_then_read_round_trip(tmp_path: Path, data: Path) -> None:
    ref = load_reference(data)
    preds = [Prediction(label="a", probabilities={"a": 0.9, "b": 0.1}) for _ in range(4)]
    write_predictions(tmp_path / "out.jsonl", preds, ref.ids)
    again = load_predictions(tmp_path / "out.jsonl", ref)
    assert again == preds
