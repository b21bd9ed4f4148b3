"""A model name means the same thing to every command: ``validate``/``stats --target`` resolve aliases as jobs do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftkit.cli import app
from ftkit.data import Dataset
from ftkit.models import parse_model_ref, resolve_target


def _chat_file(tmp_path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}]}
            for i in range(12)]  # fmt: skip
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.mark.parametrize("ref", ["hf:smollm2-135m", "hf:SmolLM2-135M-Instruct", "remote:smollm2-135m"])
def test_validate_accepts_model_names_and_aliases(tmp_path: Path, smollm2_dir: Path, ref: str) -> None:
    """Before: ``--target hf:smollm2-135m`` was read as a folder and failed with model_not_found."""
    data = _chat_file(tmp_path)
    res = CliRunner().invoke(app, ["validate", str(data), "--target", ref])
    assert res.exit_code == 0, res.output
    assert "model_not_found" not in res.output
    assert resolve_target(ref) == f"hf:{smollm2_dir}"
    by_name = Dataset.load(data).stats(target=ref)
    by_folder = Dataset.load(data).stats(target=f"hf:{smollm2_dir}")
    assert by_name.tokens == by_folder.tokens  # the same tokenizer and chat template
    assert by_name.limit == by_folder.limit == 8192


def test_openai_alias_resolves_to_its_snapshot() -> None:
    assert resolve_target("openai:gpt-4o-mini") == "openai:gpt-4o-mini-2024-07-18"


def test_unknown_names_are_clear(tmp_path: Path) -> None:
    data = _chat_file(tmp_path)
    report = Dataset.load(data).validate(target="hf:nosuch-model")
    (issue,) = report.errors
    assert issue.code == "model_not_found" and "smollm2-135m" in issue.message  # the names it does know
    res = CliRunner().invoke(app, ["validate", str(data), "--target", "nosuch:model"])
    assert res.exit_code == 2 and "unknown target 'nosuch:model'" in res.output
    assert str(parse_model_ref("hf")) == "hf:default"
