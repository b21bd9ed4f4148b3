"""Recovering a classifier's labels and exact system prompt from OpenAI chat training data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftkit.data.convert import classification_to_chat
from ftkit.errors import DatasetError
from ftkit.migrate.recover import chat_to_classification, recover_task

PROMPT = "Route the ticket.\nAnswer billing or outage."


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _chat(text: str, label: str, system: str | None = PROMPT) -> dict:
    msgs = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": text},
        {"role": "assistant", "content": label},
    ]
    return {"messages": msgs}


def test_classification_shaped_chat_round_trips_exactly(tmp_path: Path) -> None:
    rows = [_chat(f"text {i}", "billing" if i % 3 else "outage") for i in range(12)]
    path = _write(tmp_path / "train.jsonl", rows)
    got = recover_task(path)
    assert (got.task, got.labels, got.system_prompt) == ("classification", ["billing", "outage"], PROMPT)
    assert got.label_counts == {"billing": 8, "outage": 4} and got.preamble == PROMPT
    out = tmp_path / "train.classification.jsonl"
    assert chat_to_classification(path, out) == 12
    back = [classification_to_chat(json.loads(x), got.labels, got.preamble) for x in out.read_text().splitlines()]
    assert back == rows  # ftkit's prompt builder gives the very same chat lines back


def test_no_system_prompt_becomes_an_empty_preamble(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", [_chat(f"t {i}", ["a", "b"][i % 2], system=None) for i in range(10)])
    got = recover_task(path)
    assert got.task == "classification" and got.system_prompt is None and got.preamble == ""


@pytest.mark.parametrize(
    ("rows", "reason"),
    [
        ([_chat(f"q {i}", f"a long free answer number {i}") for i in range(10)], "free generation"),
        ([_chat(f"q {i}", "a", system=f"prompt {i % 2}") for i in range(10)], "different system prompts"),
        ([_chat(f"q {i}", ["a", "b"][i % 2], system="Use {labels}") for i in range(10)], "{labels}"),
        ([{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"},
                        {"role": "user", "content": "y"}, {"role": "assistant", "content": "b"}]}] * 10, "multi-turn"),
    ],
)
def test_other_chat_stays_chat(tmp_path: Path, rows: list[dict], reason: str) -> None:
    got = recover_task(_write(tmp_path / "t.jsonl", rows))
    assert got.task == "chat" and reason in got.reason and got.preamble is None


def test_preference_and_bad_files(tmp_path: Path) -> None:
    pref = {"input": {"messages": [{"role": "user", "content": "x"}]},
            "preferred_output": [{"role": "assistant", "content": "a"}],
            "non_preferred_output": [{"role": "assistant", "content": "b"}]}
    assert recover_task(_write(tmp_path / "p.jsonl", [pref] * 3)).task == "preference"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_chat("x", "a")) + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: invalid JSON"):
        recover_task(bad)
    with pytest.raises(DatasetError, match="no such file"):
        recover_task(tmp_path / "missing.jsonl")
    multi = _write(tmp_path / "m.jsonl", [_chat("x", "a"), {"messages": [{"role": "user", "content": "y"}]}])
    with pytest.raises(DatasetError, match=r"m.jsonl:2: .*cannot read it as a classification example"):
        chat_to_classification(multi, tmp_path / "out.jsonl")
