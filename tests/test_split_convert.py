"""Deterministic stratified splits and classification-to-chat conversion."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ftkit import DatasetError
from ftkit.data import Dataset, classification_to_chat, convert_file, split_examples, split_file
from tests.helpers import write_jsonl


def rows(n: int = 200) -> list[dict[str, object]]:
    return [{"text": f"example {i}", "label": "rare" if i % 10 == 0 else "common", "id": i} for i in range(n)]


def test_split_is_deterministic_and_stratified() -> None:
    a = split_examples(rows(), validation=0.1, test=0.2, seed=1)
    b = split_examples(rows(), validation=0.1, test=0.2, seed=1)
    c = split_examples(rows(), validation=0.1, test=0.2, seed=2)
    assert a == b and a != c
    assert [len(a[k]) for k in ("train", "validation", "test")] == [140, 20, 40]
    for part in a.values():
        share = Counter(r["label"] for r in part)["rare"] / len(part)
        assert share == pytest.approx(0.1, abs=0.01)
    ids = [r["id"] for part in a.values() for r in part]
    assert sorted(ids) == list(range(200))


def test_split_file_writes_three_files(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "all.jsonl", rows())
    before = src.read_bytes()
    out = split_file(src, tmp_path / "out", seed=0)
    assert sorted(out) == ["test", "train", "validation"]
    assert sum(Dataset.load(p).validate().examples for p in out.values()) == 200
    assert src.read_bytes() == before


def test_split_too_small_is_a_clear_error() -> None:
    with pytest.raises(DatasetError, match="cannot split"):
        split_examples(rows(4), validation=0.25, test=0.25)


def test_classification_to_chat_shape() -> None:
    ex = classification_to_chat({"text": "free money", "label": "spam"}, ["ham", "spam"])
    assert ex["messages"][1] == {"role": "user", "content": "free money"}
    assert ex["messages"][2] == {"role": "assistant", "content": "spam"}
    custom = classification_to_chat({"text": "t", "label": "a"}, ["a", "b"], preamble="Pick {labels}!")
    assert custom["messages"][0]["content"] == "Pick a, b!"


def test_convert_refuses_invalid_input(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "x"}, {"text": "", "label": "y"}])
    with pytest.raises(DatasetError, match="invalid_text"):
        convert_file(src, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


def test_split_prints_examples_and_labels_per_part(tmp_path: Path) -> None:
    """Before: ``train: DIR/train.jsonl`` and nothing about what went where."""
    import json

    from typer.testing import CliRunner

    from ftkit.cli import app

    src = write_jsonl(tmp_path / "all.jsonl", rows())
    res = CliRunner().invoke(app, ["split", str(src), "--out", str(tmp_path / "p"), "--test", "0.2", "--json"])
    assert res.exit_code == 0, res.output
    parts = json.loads(res.stdout)
    assert {k: (v["examples"], v["labels"]) for k, v in parts.items()} == {
        "train": (140, {"common": 126, "rare": 14}),
        "validation": (20, {"common": 18, "rare": 2}),
        "test": (40, {"common": 36, "rare": 4}),
    }
    res = CliRunner().invoke(app, ["split", str(src), "--out", str(tmp_path / "p"), "--force"])
    assert res.exit_code == 0, res.output
    train = next(line for line in res.stdout.splitlines() if "train" in line)
    assert "160" in train and "144 (90%)" in train and "16 (10%)" in train
