"""Conversions between formats: classification to chat, and the preamble every backend shares.

Training and prediction must build the very same prompt, so every backend calls
:func:`classification_messages` for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
) -> int:
    """Write a classification JSONL file as chat JSONL (atomically); returns the number of examples.

    The labels default to the file's own distinct labels. The input file is only read. Nothing is
    written unless every line is a valid classification example.

    Args:
        path: the classification JSONL file (``text`` and ``label`` per line).
        out: where to write the chat JSONL.
        labels: the label vocabulary named in the prompt.
        preamble: the system prompt; ``{labels}`` is filled in.
        force: replace ``out`` when it exists.

    Raises:
        DatasetError: the input has errors (``err.report`` lists them, with lines).
        ConfigError: ``out`` exists (without ``force``) or is the input file.
    """
    import orjson

    from ftkit.atomic import atomic_write_bytes
    from ftkit.data.dataset import Dataset
    from ftkit.errors import DatasetError
    from ftkit.outputs import check_outputs

    ds = Dataset.load(path)
    (target,) = check_outputs([out], inputs=[ds.path], force=force)
    report = ds.validate(labels=list(labels) if labels else None, task="classification")
    if not report.ok:
        raise DatasetError(report.summary(), report=report)
    vocab = list(labels) if labels else ds.labels()
    rows = [orjson.dumps(classification_to_chat(o, vocab, preamble)) + b"\n" for o in ds]
    atomic_write_bytes(target, b"".join(rows))
    return len(rows)
