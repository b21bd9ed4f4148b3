"""Preference JSONL (OpenAI's DPO format) → tokenized pairs for the engine's DPO loop.

A line is ``{"input": {"messages": [...]}, "preferred_output": [{"role": "assistant", "content": ...}],
"non_preferred_output": [...]}`` (validated by ``ftkit.data``). Each answer is rendered after the input with
the model's chat template; the loss is taken on that answer's tokens only (assistant turns inside the
input are context), exactly as a chat example's last assistant turn (:func:`ftkit_hf.tokenize.encode_chat`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import DatasetError
from ftkit_hf.engine.dpo import PreferencePair
from ftkit_hf.engine.settings import IGNORE_INDEX
from ftkit_hf.examples import read_jsonl
from ftkit_hf.tokenize import encode_chat


@dataclass
class PreparedPairs:
    """Tokenized pairs of one file, and what was set aside.

    Attributes:
        pairs: the pairs, in file order.
        lines: the file line of each pair.
        tokens: real tokens of all chosen and rejected sequences.
        dropped: line numbers dropped for being too long.
    """

    pairs: list[PreferencePair]
    lines: list[int]
    tokens: int
    dropped: list[int]


def _answer(p: Path, n: int, obj: dict[str, Any], key: str) -> dict[str, Any]:
    out = obj.get(key)
    if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], dict)
            and out[0].get("role") == "assistant" and isinstance(out[0].get("content"), str)):
        raise DatasetError(f"{p}:{n}: `{key}` must be a list with one assistant message")
    return {"role": "assistant", "content": out[0]["content"]}


def encode_pair(tokenizer: Any, messages: list[dict[str, Any]], chosen: dict[str, Any],
                rejected: dict[str, Any]) -> PreferencePair:
    """The input conversation followed by each answer; loss on the answer only."""
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in messages]
    return PreferencePair(encode_chat(tokenizer, [*context, chosen]), encode_chat(tokenizer, [*context, rejected]))


def prepare_preference_file(path: str | Path, *, tokenizer: Any, max_length: int, overlength: str = "error",
                            context: int | None = None) -> PreparedPairs:
    """Tokenize a preference file.

    Raises:
        DatasetError: a line lacks a field, an answer has no token, or a sequence is longer than ``max_length``
            while ``overlength="error"``.
    """
    p = Path(path)
    pairs: list[PreferencePair] = []
    lines: list[int] = []
    dropped: list[int] = []
    for n, obj in read_jsonl(p):
        inp = obj.get("input")
        messages = inp.get("messages") if isinstance(inp, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise DatasetError(f"{p}:{n}: `input` must be an object with a `messages` list")
        pair = encode_pair(tokenizer, messages, _answer(p, n, obj, "preferred_output"),
                           _answer(p, n, obj, "non_preferred_output"))
        longest = max(len(pair.chosen.input_ids), len(pair.rejected.input_ids))
        if longest > max_length:
            if overlength == "drop":
                dropped.append(n)
                continue
            where = f" (the model's context is {context})" if context else ""
            raise DatasetError(f"{p}:{n}: an answer makes the example {longest} tokens, longer than max_length "
                               f"{max_length}{where}; shorten it, raise max_length, or set overlength='drop'")
        for side, ex in (("preferred_output", pair.chosen), ("non_preferred_output", pair.rejected)):
            if not any(t != IGNORE_INDEX for t in ex.labels[1:]):
                raise DatasetError(f"{p}:{n}: `{side}` has no token to score")
        pairs.append(pair)
        lines.append(n)
    if not pairs:
        raise DatasetError(f"{p}: every example was dropped as longer than max_length {max_length}")
    return PreparedPairs(pairs, lines, sum(pair.tokens for pair in pairs), dropped)
