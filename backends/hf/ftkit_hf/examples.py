"""Read a job's JSONL files and turn every line into a training example, with file:line errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftkit.errors import DatasetError
from ftkit_hf.engine.settings import TokenizedExample
from ftkit_hf.tokenize import LabelPrompter, encode_chat, encode_completion, encode_text


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a bad line is a DatasetError naming it."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: file not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    with p.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DatasetError(f"{p}:{n}: expected a JSON object")
            rows.append((n, obj))
    if not rows:
        raise DatasetError(f"{p}: no examples")
    return rows


def infer_labels(path: str | Path) -> list[str]:
    """The sorted set of labels of a classification file."""
    return sorted({str(obj.get("label")) for _, obj in read_jsonl(path)})


@dataclass
class Prepared:
    """Tokenized examples of one file, and what was set aside."""

    examples: list[TokenizedExample]
    tokens: int
    dropped: list[int]  # line numbers dropped for being too long
    # task="text": tokens of each kept line (a long document gives several examples); None: one example a line.
    line_tokens: list[int] | None = None


def _field(p: Path, n: int, obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise DatasetError(f"{p}:{n}: missing field {key!r}")
    return obj[key]


def prepare_file(
    path: str | Path,
    *,
    task: str,
    tokenizer: Any,
    labels: list[str] | None,
    preamble: str | None,
    max_length: int,
    overlength: str = "error",
    context: int | None = None,
) -> Prepared:
    """Tokenize a chat, completion, (generative) classification or text file.

    A text document longer than ``max_length`` is cut into pieces (see :func:`encode_text`), never dropped.

    Raises:
        DatasetError: a line lacks a field, has a label outside ``labels``, or is longer than
            ``max_length`` while ``overlength="error"``.
    """
    p = Path(path)
    prompter = LabelPrompter(tokenizer, labels, preamble) if task == "classification" and labels else None
    out: list[TokenizedExample] = []
    dropped: list[int] = []
    if task == "text":
        line_tokens = []
        for n, obj in read_jsonl(p):
            text = _field(p, n, obj, "text")
            if not isinstance(text, str) or not text.strip():
                raise DatasetError(f"{p}:{n}: 'text' must be a non-empty string")
            pieces = encode_text(tokenizer, text, max_length)
            if not pieces:
                raise DatasetError(f"{p}:{n}: the text has fewer than two tokens: nothing to predict")
            out.extend(pieces)
            line_tokens.append(sum(len(e.input_ids) for e in pieces))
        return Prepared(out, sum(line_tokens), dropped, line_tokens)
    for n, obj in read_jsonl(p):
        if task == "classification":
            text, label = str(_field(p, n, obj, "text")), str(_field(p, n, obj, "label"))
            if prompter is None or label not in prompter.label_ids:
                raise DatasetError(f"{p}:{n}: label {label!r} is not one of the job's labels {labels}")
            ex = prompter.example(text, label)
        elif task == "chat":
            msgs = _field(p, n, obj, "messages")
            if not isinstance(msgs, list) or not any(isinstance(m, dict) and m.get("role") == "assistant"
                                                     for m in msgs):
                raise DatasetError(f"{p}:{n}: 'messages' must be a list with at least one assistant message")
            ex = encode_chat(tokenizer, msgs)
        elif task == "completion":
            ex = encode_completion(tokenizer, str(_field(p, n, obj, "prompt")), str(_field(p, n, obj, "completion")))
        else:
            raise DatasetError(f"the hf backend cannot train task {task!r}")
        if len(ex.input_ids) > max_length:
            if overlength == "drop":
                dropped.append(n)
                continue
            where = f" (the model's context is {context})" if context else ""
            raise DatasetError(
                f"{p}:{n}: example is {len(ex.input_ids)} tokens, longer than max_length {max_length}{where}; "
                "shorten it, raise max_length, or set overlength='drop'"
            )
        if not any(t != -100 for t in ex.labels):
            raise DatasetError(f"{p}:{n}: no token carries a loss (no assistant answer to learn)")
        out.append(ex)
    if not out:
        raise DatasetError(f"{p}: every example was dropped as longer than max_length {max_length}")
    return Prepared(out, sum(len(e.input_ids) for e in out), dropped)


def prepare_head_file(
    path: str | Path, *, tokenizer: Any, labels: list[str], max_length: int
) -> tuple[list[dict[str, Any]], int]:
    """Encoder classification: tokenized texts (truncated to ``max_length``) with a label index."""
    p = Path(path)
    index = {lab: i for i, lab in enumerate(labels)}
    rows: list[dict[str, Any]] = []
    tokens = 0
    for n, obj in read_jsonl(p):
        text, label = str(_field(p, n, obj, "text")), str(_field(p, n, obj, "label"))
        if label not in index:
            raise DatasetError(f"{p}:{n}: label {label!r} is not one of the job's labels {labels}")
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        tokens += len(ids)
        rows.append({"input_ids": ids, "label": index[label]})
    return rows, tokens
