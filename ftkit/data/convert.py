"""Conversions between formats: classification to chat, and the preamble every backend shares.

Training and prediction must build the very same prompt, so every backend calls
:func:`classification_messages` for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ftkit.data.formats import label_str

DEFAULT_PREAMBLE = "Classify the text. Answer with exactly one of these labels: {labels}."


def render_preamble(labels: Sequence[str], preamble: str | None = None) -> str:
    """The system prompt for a classifier; ``{labels}`` in a custom preamble is filled in."""
    template = preamble if preamble is not None else DEFAULT_PREAMBLE
    return template.replace("{labels}", ", ".join(labels))


def classification_messages(text: str, labels: Sequence[str], preamble: str | None = None) -> list[dict[str, Any]]:
    """The chat prompt (system + user, no answer) that asks a model to classify ``text``."""
    return [
        {"role": "system", "content": render_preamble(labels, preamble)},
        {"role": "user", "content": text},
    ]


def classification_to_chat(
    example: dict[str, Any], labels: Sequence[str], preamble: str | None = None
) -> dict[str, Any]:
    """One classification example (``text``, ``label``) as an OpenAI chat training example."""
    messages = classification_messages(str(example["text"]), labels, preamble)
    messages.append({"role": "assistant", "content": str(example["label"])})
    return {"messages": messages}


def convert_file(
    path: str | Path,
    out: str | Path,
    *,
    labels: Sequence[str] | None = None,
    preamble: str | None = None,
    force: bool = False,
    text_col: str = "text",
    label_col: str = "label",
    to: Literal["chat", "classification"] = "chat",
) -> int:
    """Write classification data as chat JSONL (or as ``text``/``label`` JSONL), atomically; returns the count.

    The input is a classification JSONL file, or a CSV/TSV file with a header (by its suffix);
    ``text_col``/``label_col`` name the columns (or JSONL keys) to read. The labels default to the
    data's own distinct labels. The input file is only read. Nothing is written unless every row is a
    valid example.

    Args:
        path: a classification JSONL file, or a ``.csv``/``.tsv`` file.
        out: where to write the JSONL.
        labels: the label vocabulary named in the prompt; a row with another label is an error.
        preamble: the system prompt; ``{labels}`` is filled in.
        force: replace ``out`` when it exists.
        text_col: the column (or key) holding the text.
        label_col: the column (or key) holding the label.
        to: ``chat`` (a system prompt naming the labels, the text, the label as the answer) or
            ``classification`` (``{"text", "label"}`` per line, for ``task = "classification"``).

    Raises:
        DatasetError: the input has errors (each named by file and line).
        ConfigError: ``out`` exists (without ``force``) or is the input file.
    """
    import orjson

    from ftkit.atomic import atomic_write_bytes
    from ftkit.data.dataset import Dataset
    from ftkit.data.tables import csv_rows, is_table, jsonl_rows
    from ftkit.errors import DatasetError
    from ftkit.outputs import check_outputs

    vocab_given = list(labels) if labels else None
    if is_table(path) or (text_col, label_col) != ("text", "label"):
        read = csv_rows if is_table(path) else jsonl_rows
        (target,) = check_outputs([out], inputs=[path], force=force)
        rows: list[dict[str, Any]] = list(read(path, text_col=text_col, label_col=label_col, labels=vocab_given))
    else:
        ds = Dataset.load(path)
        (target,) = check_outputs([out], inputs=[ds.path], force=force)
        report = ds.validate(labels=vocab_given, task="classification")
        if not report.ok:
            raise DatasetError(report.summary(), report=report)
        rows = list(ds)
    vocab = vocab_given or sorted({label_str(r["label"]) for r in rows})
    if to == "classification":
        body = [orjson.dumps({"text": r["text"], "label": r["label"]}) + b"\n" for r in rows]
    else:
        body = [orjson.dumps(classification_to_chat(r, vocab, preamble)) + b"\n" for r in rows]
    atomic_write_bytes(target, b"".join(body))
    return len(body)
