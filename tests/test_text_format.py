"""The ``text`` format (unlabelled documents for domain adaptation): detection, checks, token counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson

from ftkit.data import Dataset
from ftkit.data.formats import detect_format
from ftkit.data.tokens import get_encoding
from tests.helpers import chat

DOCS = ["The central bank kept rates unchanged.", "Inflation eased in the second quarter.", "Wages rose 3%."]


def _write(path: Path, rows: list[object]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def test_text_lines_are_their_own_format() -> None:
    assert detect_format({"text": "a document"}) == "text"
    assert detect_format({"text": "a document", "id": "7", "metadata": {"source": "x"}}) == "text"
    assert detect_format({"text": "a review", "label": "pos"}) == "classification"


def test_clean_text_file_counts_the_documents_own_tokens(tmp_path: Path) -> None:
    p = _write(tmp_path / "docs.jsonl", [{"text": d} for d in DOCS])
    report = Dataset.load(p).validate(task="text")
    assert report.ok and report.format == "text" and report.examples == 3
    # The bare text's o200k tokens: no chat overhead is added to documents.
    enc = get_encoding("o200k_base")
    stats = Dataset.load(p).stats()
    assert stats.format == "text" and stats.tokens is not None
    assert stats.tokens.total == stats.billed_tokens_per_epoch == sum(len(enc.encode_ordinary(d)) for d in DOCS)


def test_bad_text_lines_are_reported_with_their_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "docs.jsonl", [{"text": DOCS[0]}, {"text": ""}, {"text": 42}, {"text": "ok", "author": "x"}])
    report = Dataset.load(p).validate(task="text")
    assert not report.ok
    assert [(e.line, e.code) for e in report.errors] == [(2, "invalid_text"), (3, "invalid_text")]
    assert "empty" in report.errors[0].message and "int" in report.errors[1].message
    assert [(w.line, w.code) for w in report.warnings] == [(4, "unknown_example_key")]
    assert f"{p}:2: invalid_text" in report.summary()


def test_text_job_refuses_other_data_and_mixed_lines(tmp_path: Path) -> None:
    chats = _write(tmp_path / "chat.jsonl", [chat("a"), chat("b")])
    assert "format_mismatch" in Dataset.load(chats).validate(task="text").error_counts
    mixed = _write(tmp_path / "mixed.jsonl", [{"text": "a"}, chat("b")])
    report = Dataset.load(mixed).validate(task="text")
    assert [(e.line, e.code) for e in report.errors] == [(2, "mixed_formats")]


def test_unlabelled_line_in_a_classification_file_is_a_missing_label(tmp_path: Path) -> None:
    rows = [{"text": "meh"}, {"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}, {"text": "so-so"}]
    report = Dataset.load(_write(tmp_path / "cls.jsonl", rows)).validate()
    assert report.format == "classification"
    assert [(e.line, e.code) for e in report.errors] == [(1, "missing_label"), (4, "missing_label")]


def test_openai_cannot_train_on_text(tmp_path: Path) -> None:
    p = _write(tmp_path / "docs.jsonl", [{"text": f"document {i}"} for i in range(12)])
    report = Dataset.load(p).validate(target="openai:gpt-4.1-mini-2025-04-14", task="text")
    assert report.error_counts == {"format_not_supported": 1}
    assert "unlabelled text" in report.errors[0].message


def test_cli_validate_text_file(tmp_path: Path) -> None:
    p = _write(tmp_path / "docs.jsonl", [{"text": DOCS[0]}, {"text": "  "}])
    r = subprocess.run(
        [sys.executable, "-m", "ftkit.cli", "validate", str(p), "--json"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    data = json.loads(r.stdout)
    assert data["format"] == "text" and [(e["line"], e["code"]) for e in data["errors"]] == [(2, "invalid_text")]
