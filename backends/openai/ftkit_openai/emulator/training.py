"""What the emulated trainer does with a training file: validate it, resolve "auto", draw a loss curve.

The validation follows OpenAI's observed failures (facts sheet §7.7): fewer than 10 examples is
``invalid_n_examples``; a line that is not the expected format is ``invalid_training_file``
(``invalid_validation_file`` for the validation file). Token counts use OpenAI's accounting
(the same function ftkit's validator uses), so ``trained_tokens`` is ``billing tokens × n_epochs``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

MIN_EXAMPLES = 10


@dataclass
class FileCheck:
    """The outcome of validating one uploaded file."""

    examples: list[dict[str, Any]]
    error_code: str | None = None
    error_message: str | None = None


def check_training_data(content: bytes, method: str, param: str = "training_file") -> FileCheck:
    """Parse and validate a JSONL file the way the fine-tuning service does before queueing."""
    code = "invalid_training_file" if param == "training_file" else "invalid_validation_file"
    what = "training file" if param == "training_file" else "validation file"
    examples: list[dict[str, Any]] = []
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return FileCheck([], code, f"The job failed due to an invalid {what}. The file is not valid UTF-8.")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            return FileCheck([], code, f"The job failed due to an invalid {what}. Invalid file format. "
                                       f"Line {n} is not valid JSON.")
        problem = _example_problem(obj, method)
        if problem:
            return FileCheck([], code, f"The job failed due to an invalid {what}. {problem} (example {n}).")
        examples.append(obj)
    if param == "training_file" and len(examples) < MIN_EXAMPLES:
        return FileCheck(
            examples,
            "invalid_n_examples",
            f"Training file has {len(examples)} example(s), but must have at least {MIN_EXAMPLES} examples",
        )
    return FileCheck(examples)


def _example_problem(obj: Any, method: str) -> str | None:
    if not isinstance(obj, dict):
        return "Unexpected file format, expected either prompt/completion pairs or chat messages."
    if method == "dpo":
        inp = obj.get("input")
        pref = obj.get("preferred_output") or obj.get("preferred_completion")
        non = obj.get("non_preferred_output") or obj.get("non_preferred_completion")
        if not isinstance(inp, dict) or not isinstance(inp.get("messages"), list) or not pref or not non:
            return "Unexpected file format, expected input, preferred_output and non_preferred_output."
        return None
    if "prompt" in obj and "completion" in obj:
        return None
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return "Unexpected file format, expected either prompt/completion pairs or chat messages."
    roles = set()
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool",
                                                            "function"):
            return "Invalid file format. A message has a missing or unrecognized role."
        roles.add(m["role"])
        if isinstance(m.get("content"), str) and "<|" in m["content"] and "|>" in m["content"]:
            return "Invalid file format. Example message contains an invalid token."
        if m["role"] == "assistant" and m.get("weight") not in (None, 0, 1):
            return "Invalid file format. Unsupported weight value; weight must be 0 or 1."
    if "assistant" not in roles:
        return "Invalid file format. Example has no assistant message."
    return None


def count_tokens(model: str, examples: list[dict[str, Any]]) -> list[int]:
    """Billing tokens per example, with OpenAI's accounting and the model's encoding."""
    from ftkit.data.formats import detect_format
    from ftkit.data.targets import OpenAITarget

    target = OpenAITarget(model)
    pairs = [(detect_format(o) or "chat", o) for o in examples]
    counts = target.count(pairs)
    limit = target.max_tokens
    return [min(c, limit) if limit else c for c in counts]


def auto_epochs(n_examples: int) -> int:
    """The cookbook's default-epoch heuristic: 3 epochs, clamped so examples × epochs is in 100..25000."""
    n_epochs = 3
    if n_examples * n_epochs < 100:
        n_epochs = min(25, 100 // max(n_examples, 1))
    elif n_examples * n_epochs > 25_000:
        n_epochs = max(1, 25_000 // n_examples)
    return n_epochs


def resolve_hyperparameters(hp: dict[str, Any], n_examples: int, method: str) -> dict[str, Any]:
    """Concrete values for every "auto" (observed real values: batch 1 and LR multiplier 1.8 for small files)."""
    out = dict(hp)
    if out.get("n_epochs", "auto") == "auto":
        out["n_epochs"] = auto_epochs(n_examples)
    if out.get("batch_size", "auto") == "auto":
        out["batch_size"] = max(1, min(256, round(n_examples * 0.002)))
    if out.get("learning_rate_multiplier", "auto") == "auto":
        out["learning_rate_multiplier"] = 1.8 if out["batch_size"] == 1 else 2.0
    if method == "dpo" and out.get("beta", "auto") == "auto":
        out["beta"] = 0.1
    return out


class LossCurve:
    """A deterministic, plausible training curve: exponential decay to a floor, with a little noise."""

    def __init__(self, seed: str, total_steps: int, n_examples: int) -> None:
        self.total = max(total_steps, 1)
        rng = random.Random(seed)
        self.start = 1.6 + rng.random()
        self.floor = 0.05 + 0.15 * rng.random() + 1.0 / (n_examples + 5)
        self.rate = 3.0 + 2.0 * rng.random()
        self._rng = rng
        self._noise = [rng.uniform(-0.06, 0.06) for _ in range(self.total + 1)]

    def train_loss(self, step: int) -> float:
        """Training loss at ``step`` (1-based)."""
        x = step / self.total
        value = self.floor + (self.start - self.floor) * math.exp(-self.rate * x) + self._noise[step % len(self._noise)]
        return round(max(value, 0.001), 5)

    def valid_loss(self, step: int) -> float:
        """Validation loss: above the training loss, with a slight rise late in training (overfitting)."""
        x = step / self.total
        return round(self.train_loss(step) * 1.15 + 0.05 + 0.08 * max(0.0, x - 0.7), 5)

    @staticmethod
    def accuracy(loss: float) -> float:
        """Mean token accuracy that moves with the loss."""
        return round(min(1.0, max(0.0, math.exp(-loss))), 5)
