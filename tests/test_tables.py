"""CSV/TSV files and pandas DataFrames as classification data: convert, Dataset.from_pandas/from_csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ftkit import DatasetError
from ftkit.cli import app
from ftkit.data import Dataset, convert_file

# Line 3-4 is one record (a quoted text over two lines); line 8 is blank.
BAD_CSV = (
    'id;review;sentiment\n1;"Great film, loved it";pos\n2;"Awful.\nTruly awful";neg\n'
    '3;;pos\n4;"fine";\n5;"ok";pos;x\n\n6;"meh";neg\n'
)


def test_convert_csv_with_named_columns(tmp_path: Path) -> None:
    """Before: a CSV was read as JSONL (``invalid_json`` on line 1) and there was no way to name columns."""
    src = tmp_path / "reviews.csv"
    src.write_bytes(b'\xef\xbb\xbfreview,sentiment,id\n"Great film, loved it",pos,1\n"Awful.\nTruly awful",neg,2\n')
    res = CliRunner().invoke(app, ["convert", str(src), "--out", str(tmp_path / "chat.jsonl"),
                                   "--text-col", "review", "--label-col", "sentiment"])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert [r["messages"][1:] for r in rows] == [
        [{"role": "user", "content": "Great film, loved it"}, {"role": "assistant", "content": "pos"}],
        [{"role": "user", "content": "Awful.\nTruly awful"}, {"role": "assistant", "content": "neg"}],
    ]
    assert "neg, pos" in rows[0]["messages"][0]["content"]
    n = convert_file(src, tmp_path / "cls.jsonl", text_col="review", label_col="sentiment", to="classification")
    assert n == 2 and Dataset.load(tmp_path / "cls.jsonl").validate(task="classification").ok


def test_bad_rows_are_named_by_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.csv"
    src.write_text(BAD_CSV)  # semicolons, as a European spreadsheet exports
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["convert", str(src), "--out", str(out), "--text-col", "review",
                                   "--label-col", "sentiment"])  # fmt: skip
    assert res.exit_code == 1 and not out.exists()
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"{src}:5: empty text in column 'review'" in line
    assert f"{src}:6: empty label in column 'sentiment'" in line
    assert f"{src}:7: 4 fields where the header has 3" in line
    assert line.index(":5:") < line.index(":6:") < line.index(":7:")
    res = CliRunner().invoke(app, ["convert", str(src), "--out", str(out), "--text-col", "body"])
    assert res.exit_code == 1 and f"{src}:1: no column 'body' (columns: id, review, sentiment)" in res.output
    with pytest.raises(DatasetError, match=r"bad\.csv:2: label 'pos' is not one of neg"):
        Dataset.from_csv(src, out, text_col="review", label_col="sentiment", labels=["neg"])


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    src = tmp_path / "latin1.csv"
    src.write_bytes("text,label\nok,a\ncaf\u00e9,b\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.csv:3: not UTF-8"):
        convert_file(src, tmp_path / "o.jsonl")


def test_tsv_and_renamed_jsonl_keys(tmp_path: Path) -> None:
    tsv = tmp_path / "d.tsv"
    tsv.write_text("label\ttext\nspam\twin, now; call\nham\tlunch\n")
    ds = Dataset.from_csv(tsv, tmp_path / "d.jsonl")
    assert list(ds) == [{"text": "win, now; call", "label": "spam"}, {"text": "lunch", "label": "ham"}]
    src = tmp_path / "k.jsonl"
    src.write_text('{"body": "a", "y": 1}\n{"body": 2, "y": 0}\n')
    with pytest.raises(DatasetError, match=r"k\.jsonl:2: 'body' is int, not text"):
        convert_file(src, tmp_path / "o.jsonl", text_col="body", label_col="y")


def test_dataset_from_pandas(tmp_path: Path) -> None:
    df = pd.DataFrame({"review": ["good", "bad", None], "stars": [5, 1, 3]}, index=["a", "b", "c"])
    with pytest.raises(DatasetError, match=r"DataFrame row 'c': 'review' is missing, not text"):
        Dataset.from_pandas(df, tmp_path / "t.jsonl", text_col="review", label_col="stars")
    assert not (tmp_path / "t.jsonl").exists()
    ds = Dataset.from_pandas(df.iloc[:2], tmp_path / "t.jsonl", text_col="review", label_col="stars")
    assert list(ds) == [{"text": "good", "label": "5"}, {"text": "bad", "label": "1"}]
    assert ds.validate(task="classification").ok
    with pytest.raises(Exception, match="exists"):
        Dataset.from_pandas(df.iloc[:2], tmp_path / "t.jsonl", text_col="review", label_col="stars")
