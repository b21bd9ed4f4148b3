"""Reading the reference data and saved predictions, and lining them up example by example.

Reference data is a classification JSONL file (``{"text", "label", "id"?}``) or a chat file whose
last assistant message is the reference answer (generation tasks). Predictions are JSONL lines
``{"prediction": label, "probabilities": {label: p, ...}, "id"?: ...}``, aligned with the data by
``id`` when every line of both files has one, otherwise line by line. Every problem names the file
and line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from ftkit.errors import EvaluationError
from ftkit.predictor import UNPARSEABLE, Classification

Task = Literal["classification", "generation", "preference", "text"]


@dataclass
class Reference:
    """The held-out examples a model is judged on.

    Attributes:
        task: ``classification`` (text + label), ``generation`` (chat, last assistant message), ``preference``
            or ``text`` (unlabelled documents: perplexity or masked-token accuracy).
        texts: the input text of each example (the last user message for chat).
        targets: the true label (classification) or reference answer (generation).
        ids: each example's ``id`` (None where a line has none).
        prompts: for generation, the conversation without its final assistant message; for preference, the
            input conversation.
        conversations: for generation, the whole conversation (for token-level loss).
        rejected: for preference, the non-preferred answer (``targets`` holds the preferred one).
        source: where the examples came from, for messages.
    """

    task: Task
    texts: list[str]
    targets: list[str]
    ids: list[str | None]
    prompts: list[list[dict[str, Any]]] = field(default_factory=list)
    conversations: list[list[dict[str, Any]]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    source: str = "<data>"

    def __len__(self) -> int:
        return len(self.targets)

    def label_set(self) -> list[str]:
        """The distinct true labels, sorted."""
        return sorted(set(self.targets))


@dataclass
class Prediction:
    """One model answer: a label (or generated text) and, optionally, class probabilities."""

    label: str
    probabilities: dict[str, float] | None = None
    raw: str | None = None


def label_str(value: Any) -> str:
    """Labels compare as strings, the way the data module reads them (``True`` → ``"true"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_jsonl(path: Path) -> Iterable[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; bad JSON is an error naming the line."""
    from ftkit.data.reader import require_file

    require_file(path, EvaluationError)  # its cause tells the command line the path is wrong, not the data
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            body = raw.strip()
            if number == 1 and body.startswith(b"\xef\xbb\xbf"):
                body = body[3:]
            if not body:
                continue
            try:
                yield number, orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise EvaluationError(f"{path}:{number}: invalid JSON: {e}") from None


def load_reference(data: str | Path | Sequence[dict[str, Any]]) -> Reference:
    """Read held-out examples from a JSONL file or a list of dicts.

    Raises:
        EvaluationError: a line is not an example, or the file mixes classification and chat lines.
    """
    if isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        rows: Iterable[tuple[int, Any]] = _read_jsonl(path)
        source = str(path)
    else:
        rows = enumerate(data, start=1)
        source = "<data>"
    task: Task | None = None
    ref = Reference(task="classification", texts=[], targets=[], ids=[], source=source)
    for number, obj in rows:
        where = f"{source}:{number}"
        if not isinstance(obj, dict):
            raise EvaluationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        kind: Task = (
            "preference" if "preferred_output" in obj else "generation" if "messages" in obj else "classification"
        )
        if kind == "classification" and "label" not in obj and "text" in obj and task in (None, "text"):
            kind = "text"  # an unlabelled document (a classification line missing its label stays an error)
        if task is None:
            task = kind
        elif kind != task:
            raise EvaluationError(f"{where}: a {kind} example in a {task} file; use one format per file")
        ident = obj.get("id")
        ref.ids.append(None if ident is None else str(ident))
        if kind == "preference":
            _add_preference(ref, obj, where)
            continue
        if kind == "text":
            if not isinstance(obj["text"], str) or not obj["text"].strip():
                raise EvaluationError(f"{where}: 'text' must be a non-empty string")
            ref.texts.append(obj["text"])
            ref.targets.append("")  # nothing to predict but the text itself
            continue
        if kind == "classification":
            if "text" not in obj or "label" not in obj:
                raise EvaluationError(f"{where}: a classification example needs 'text' and 'label'")
            ref.texts.append(str(obj["text"]))
            ref.targets.append(label_str(obj["label"]))
        else:
            messages = obj["messages"]
            if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
                raise EvaluationError(f"{where}: 'messages' must be a non-empty list of messages")
            if messages[-1].get("role") != "assistant":
                raise EvaluationError(f"{where}: the last message must be the assistant's reference answer")
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            ref.texts.append(str(users[-1].get("content", "")) if users else "")
            ref.targets.append(str(messages[-1].get("content") or ""))
            ref.prompts.append(messages[:-1])
            ref.conversations.append(messages)
    if task is None:
        raise EvaluationError(f"{source}: no examples")
    ref.task = task
    return ref


def _parse_prediction(obj: Any, where: str, task: Task) -> Prediction:
    if not isinstance(obj, dict):
        raise EvaluationError(f"{where}: expected a JSON object with 'prediction', got {type(obj).__name__}")
    if "prediction" not in obj:
        raise EvaluationError(f"{where}: missing 'prediction'")
    value = obj["prediction"]
    label = UNPARSEABLE if value is None else label_str(value)
    probs = obj.get("probabilities")
    if probs is None:
        return Prediction(label=label, raw=obj.get("raw"))
    if task == "generation":
        raise EvaluationError(f"{where}: 'probabilities' make sense only for classification data")
    if not isinstance(probs, dict) or not probs:
        raise EvaluationError(f"{where}: 'probabilities' must be an object {{label: probability}}")
    clean: dict[str, float] = {}
    for k, v in probs.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 1:
            raise EvaluationError(f"{where}: probability of {k!r} must be a number in [0, 1], got {v!r}")
        clean[str(k)] = float(v)
    return Prediction(label=label, probabilities=clean, raw=obj.get("raw"))


def load_predictions(path: str | Path, reference: Reference) -> list[Prediction]:
    """Read a predictions JSONL file and align it with ``reference``.

    Lines are matched by ``id`` when every prediction and every example has one, otherwise by
    position (then the counts must agree).

    Raises:
        EvaluationError: naming the file and line of a bad prediction, a missing or unknown id,
            or a count mismatch.
    """
    p = Path(path).expanduser()
    rows = list(_read_jsonl(p))
    preds: list[tuple[int, Any, Prediction]] = [
        (n, obj.get("id") if isinstance(obj, dict) else None, _parse_prediction(obj, f"{p}:{n}", reference.task))
        for n, obj in rows
    ]
    by_id = all(i is not None for _, i, _ in preds) and all(i is not None for i in reference.ids) and preds
    if by_id:
        index: dict[str, Prediction] = {}
        for n, ident, pred in preds:
            key = str(ident)
            if key in index:
                raise EvaluationError(f"{p}:{n}: duplicate id {key!r}")
            index[key] = pred
        missing = [i for i in reference.ids if i not in index]
        if missing:
            raise EvaluationError(
                f"{p}: no prediction for {len(missing)} example id(s) of {reference.source}, e.g. {missing[0]!r}"
            )
        known = set(reference.ids)
        extra = [(n, str(i)) for n, i, _ in preds if str(i) not in known]
        if extra:
            raise EvaluationError(f"{p}:{extra[0][0]}: id {extra[0][1]!r} is not in {reference.source}")
        return [index[str(i)] for i in reference.ids]
    if len(preds) != len(reference):
        raise EvaluationError(
            f"{p}: {len(preds)} prediction(s) for {len(reference)} example(s) in {reference.source}; "
            "align by line (same count) or give every line an 'id'"
        )
    return [pred for _, _, pred in preds]


def from_classifications(items: Sequence[Classification | Prediction | dict[str, Any]]) -> list[Prediction]:
    """Predictions from a Predictor's answers (or dicts shaped like a predictions line)."""
    out: list[Prediction] = []
    for i, c in enumerate(items):
        if isinstance(c, Prediction):
            out.append(c)
        elif isinstance(c, Classification):
            out.append(Prediction(label=c.label, probabilities=dict(c.probabilities) or None, raw=c.raw))
        else:
            out.append(_parse_prediction(c, f"<predictions>[{i}]", "classification"))
    return out


def write_predictions(path: str | Path, predictions: Sequence[Prediction], ids: Sequence[str | None]) -> None:
    """Save predictions as JSONL (atomically), in the format :func:`load_predictions` reads."""
    from ftkit.atomic import atomic_write_bytes

    lines = []
    for pred, ident in zip(predictions, ids, strict=True):
        row: dict[str, Any] = {"prediction": pred.label}
        if ident is not None:
            row["id"] = ident
        if pred.probabilities is not None:
            row["probabilities"] = pred.probabilities
        lines.append(orjson.dumps(row) + b"\n")
    atomic_write_bytes(path, b"".join(lines))


def _answer(obj: dict[str, Any], key: str, where: str) -> str:
    out = obj.get(key)
    if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], dict) and out[0].get("role") == "assistant"):
        raise EvaluationError(f"{where}: '{key}' must be a list with one assistant message")
    return str(out[0].get("content") or "")


def _add_preference(ref: Reference, obj: dict[str, Any], where: str) -> None:
    """One preference line: the input conversation, the preferred and the non-preferred answer."""
    inp = obj.get("input")
    messages = inp.get("messages") if isinstance(inp, dict) else None
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise EvaluationError(f"{where}: a preference example needs 'input' with a non-empty 'messages' list")
    users = [m for m in messages if m.get("role") == "user"]
    ref.texts.append(str(users[-1].get("content", "")) if users else "")
    ref.prompts.append(messages)
    ref.targets.append(_answer(obj, "preferred_output", where))
    ref.rejected.append(_answer(obj, "non_preferred_output", where))
