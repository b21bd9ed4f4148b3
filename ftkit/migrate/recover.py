"""Recovering what a chat training file was for: a classifier (labels and its exact system prompt) or free text.

OpenAI fine-tuning takes chat files only, so a classifier trained there leaves no task, label list
or prompt behind: only lines like ``{"messages": [system, user, assistant]}``. Scoring or
retraining it under any other prompt measures another model (an open model scored under ftkit's
default prompt answered at the majority rate). A file is *classification-shaped* when every line
is one optional system message (the same text on every line), one user message and one final
assistant answer, all plain strings, and the answers form a small vocabulary: at most
:data:`MAX_LABELS` distinct answers, each at most :data:`MAX_LABEL_CHARS` characters, each used
on average at least twice. Anything else is free generation (``chat``), ``preference`` (DPO) or
``completion``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field

from ftkit.atomic import atomic_write_bytes
from ftkit.errors import DatasetError

MAX_LABELS = 50
MAX_LABEL_CHARS = 64


class RecoveredTask(BaseModel):
    """What a training file's lines say about the task the model was trained for.

    Attributes:
        task: ``classification`` (classification-shaped chat), ``chat``, ``preference`` or ``completion``.
        labels: the distinct answers, sorted (classification only).
        system_prompt: the system message every line shares, verbatim; None when the lines have none.
        examples: lines read.
        label_counts: examples per label (classification only).
        reason: why the file is or is not classification-shaped, in words.
    """

    task: Literal["classification", "chat", "preference", "completion"]
    labels: list[str] | None = None
    system_prompt: str | None = None
    examples: int = 0
    label_counts: dict[str, int] = Field(default_factory=dict)
    reason: str = ""

    @property
    def preamble(self) -> str | None:
        """The system prompt as a JobSpec ``preamble`` (rendered as-is; "" stands for "no system message")."""
        if self.task != "classification":
            return None
        return self.system_prompt if self.system_prompt is not None else ""


def _lines(path: Path) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    out = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            body = raw.strip().removeprefix(b"\xef\xbb\xbf")
            if not body:
                continue
            try:
                out.append((number, orjson.loads(body)))
            except orjson.JSONDecodeError as e:
                raise DatasetError(f"{path}:{number}: invalid JSON: {e}") from None
    return out


def _shape(obj: Any) -> tuple[str | None, str, str] | str:
    """(system, user, answer) of a classification-shaped line, or why it is not one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return "a line is not chat"
    if obj.get("tools") or obj.get("functions"):
        return "a line uses tools"
    msgs = obj["messages"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in msgs]
    system: str | None = None
    if roles[:1] in (["system"], ["developer"]):
        system, msgs, roles = msgs[0].get("content"), msgs[1:], roles[1:]
        if not isinstance(system, str):
            return "a system message is not plain text"
    if roles != ["user", "assistant"]:
        return "a line is not one user message and one answer (multi-turn chat)"
    user, answer = msgs[0].get("content"), msgs[1].get("content")
    if not isinstance(user, str) or not isinstance(answer, str):
        return "a message is not plain text"
    if msgs[1].get("weight") == 0:
        return "an answer has weight 0"
    return system, user, answer


def recover_task(path: str | Path) -> RecoveredTask:
    """Read a training file and say what task it trains: classification (with labels and prompt) or not.

    Raises:
        DatasetError: the file is missing or a line is not JSON (file and line named).
    """
    p = Path(path)
    rows = _lines(p)
    if not rows:
        raise DatasetError(f"{p}: no examples")
    first = rows[0][1]
    if (
        isinstance(first, dict)
        and "input" in first
        and ("preferred_output" in first or "preferred_completion" in first)
    ):
        return RecoveredTask(task="preference", examples=len(rows), reason="preference pairs (DPO)")
    if isinstance(first, dict) and "prompt" in first and "completion" in first:
        return RecoveredTask(task="completion", examples=len(rows), reason="prompt/completion pairs")
    systems: set[str | None] = set()
    answers: Counter[str] = Counter()
    for number, obj in rows:
        shape = _shape(obj)
        if isinstance(shape, str):
            return RecoveredTask(task="chat", examples=len(rows), reason=f"{shape} (line {number})")
        systems.add(shape[0])
        answers[shape[2]] += 1
    if len(systems) > 1:
        return RecoveredTask(task="chat", examples=len(rows), reason="the lines have different system prompts")
    long = [a for a in answers if len(a) > MAX_LABEL_CHARS or "\n" in a]
    if len(answers) < 2 or len(answers) > MAX_LABELS or long or len(answers) * 2 > len(rows):
        return RecoveredTask(
            task="chat",
            examples=len(rows),
            reason=f"{len(answers)} distinct answers in {len(rows)} lines: free generation, not a label set",
        )
    (system,) = systems
    if system is not None and "{labels}" in system:
        # ftkit fills "{labels}" in a preamble; a prompt that has it literally cannot be reproduced verbatim.
        return RecoveredTask(task="chat", examples=len(rows), reason="the system prompt contains '{labels}'")
    return RecoveredTask(
        task="classification",
        labels=sorted(answers),
        system_prompt=system,
        examples=len(rows),
        label_counts=dict(sorted(answers.items())),
        reason=f"every line is system + user + one of {len(answers)} short answers",
    )


def chat_to_classification(path: str | Path, out: str | Path) -> int:
    """Write a classification-shaped chat file as classification JSONL (``text``, ``label``, ``id`` kept).

    The input is only read; the output is written atomically. Returns the number of examples.

    Raises:
        DatasetError: a line is not classification-shaped (file and line named).
    """
    p = Path(path)
    lines = []
    for number, obj in _lines(p):
        shape = _shape(obj)
        if isinstance(shape, str):
            raise DatasetError(f"{p}:{number}: {shape}; cannot read it as a classification example")
        row: dict[str, Any] = {"text": shape[1], "label": shape[2]}
        if isinstance(obj, dict) and obj.get("id") is not None:
            row["id"] = obj["id"]
        lines.append(orjson.dumps(row) + b"\n")
    atomic_write_bytes(out, b"".join(lines))
    return len(lines)
