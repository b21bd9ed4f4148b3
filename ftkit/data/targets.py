"""Validation targets: the rules and the tokenizer of the model the data is meant for.

``openai:<model>`` knows OpenAI's rules and counts tokens exactly with tiktoken;
``hf:<path>`` uses the model's own tokenizer and chat template and its context length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from ftkit.data.convert import classification_messages
from ftkit.data.formats import Format, label_str
from ftkit.data.issues import Issue
from ftkit.data.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_REPLY_PRIMING,
    encoding_for_model,
    get_encoding,
)
from ftkit.errors import ConfigError

# Training-example token limits (facts sheet §7.5; the gpt-4.1 family's numbers are Azure's).
OPENAI_EXAMPLE_LIMITS: dict[str, int] = {
    "gpt-4.1-2025-04-14": 65_536,
    "gpt-4.1-mini-2025-04-14": 65_536,
    "gpt-4.1-nano-2025-04-14": 32_768,
    "gpt-4o-2024-08-06": 65_536,
    "gpt-4o-mini-2024-07-18": 65_536,
    "gpt-3.5-turbo-0125": 16_385,
    "gpt-3.5-turbo-1106": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
    "o4-mini-2025-04-16": 65_536,
    "davinci-002": 16_384,
    "babbage-002": 16_384,
}
OPENAI_COMPLETION_MODELS = frozenset({"davinci-002", "babbage-002"})
OPENAI_DPO_PREFIXES = ("gpt-4.1", "gpt-4o")
OPENAI_MIN_EXAMPLES = 10
OPENAI_ALIASES = {
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-3.5-turbo": "gpt-3.5-turbo-0125",
    "o4-mini": "o4-mini-2025-04-16",
}


class Target:
    """Token counting and target-specific checks. The base class counts like OpenAI's o200k models."""

    name = "o200k_base"
    max_tokens: int | None = None
    truncates = False  # True: over-long examples are cut (a warning), False: they are an error

    def __init__(self, labels: Sequence[str] | None = None, preamble: str | None = None) -> None:
        self.labels = list(labels) if labels else None
        self.preamble = preamble
        self._enc = get_encoding("o200k_base")

    def as_chat(self, fmt: Format, obj: dict[str, Any]) -> list[dict[str, Any]]:
        """The example as the chat a model is trained on (classification and completion converted)."""
        if fmt == "chat":
            return list(obj.get("messages") or [])
        if fmt == "preference":
            return [*obj["input"]["messages"], *obj["preferred_output"]]
        if fmt == "text":  # counted as the bare text by count(); a chat view only for callers that want one
            return [{"role": "user", "content": obj.get("text", "")}]
        if fmt == "completion":
            return [
                {"role": "user", "content": obj.get("prompt", "")},
                {"role": "assistant", "content": obj.get("completion", "")},
            ]
        labels = self.labels or [label_str(obj.get("label", ""))]
        return [
            *classification_messages(str(obj.get("text", "")), labels, self.preamble),
            {"role": "assistant", "content": label_str(obj.get("label", ""))},
        ]

    def count(self, examples: Sequence[tuple[Format, dict[str, Any]]]) -> list[int]:
        """Tokens per example with OpenAI's accounting, encoding all strings in one batch."""
        texts: list[str] = []
        overhead: list[int] = []
        spans: list[int] = []
        for fmt, obj in examples:
            if fmt == "text":  # unlabelled text is trained on as it is: its own tokens, no chat overhead
                texts.append(str(obj.get("text", "")))
                spans.append(1)
                overhead.append(0)
                continue
            strings, extra = _openai_strings(self.as_chat(fmt, obj), obj.get("tools") if fmt == "chat" else None)
            texts.extend(strings)
            spans.append(len(strings))
            overhead.append(extra)
        # A plain loop: tiktoken's batch API pays a thread-pool task per string, which costs more than
        # encoding the short strings of chat data (measured 11x slower in benchmarks/validate.py).
        encode = self._enc.encode_ordinary
        lengths = [len(encode(t)) for t in texts]
        out, i = [], 0
        for n, extra in zip(spans, overhead, strict=True):
            out.append(sum(lengths[i : i + n]) + extra)
            i += n
        return out

    def check_example(self, fmt: Format, obj: dict[str, Any], line: int, tokens: int) -> list[Issue]:
        """Target rules for one example that has passed the format checks."""
        if self.max_tokens is not None and tokens > self.max_tokens:
            code = "example_truncated" if self.truncates else "example_too_long"
            return [Issue(line=line, code=code, message=f"{tokens} tokens > {self.max_tokens} for {self.name}")]
        return []

    def check_file(self, fmt: Format | None, examples: int) -> list[Issue]:
        """Target rules for the file as a whole."""
        return []


def _openai_strings(messages: list[dict[str, Any]], tools: Any) -> tuple[list[str], int]:
    strings: list[str] = []
    extra = TOKENS_REPLY_PRIMING
    for m in messages:
        if not isinstance(m, dict):
            continue
        extra += TOKENS_PER_MESSAGE + 1  # the role is one token
        content = m.get("content")
        if isinstance(content, str):
            strings.append(content)
        elif isinstance(content, list):
            strings.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        if isinstance(m.get("name"), str):
            strings.append(m["name"])
            extra += TOKENS_PER_NAME
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {}) if isinstance(call, dict) else {}
            strings.extend(v for v in (fn.get("name"), fn.get("arguments")) if isinstance(v, str))
    if tools:
        strings.append(orjson.dumps(tools).decode())
    return strings, extra


class OpenAITarget(Target):
    """OpenAI fine-tuning rules for one model (facts sheet §7)."""

    truncates = True

    def __init__(self, model: str, labels: Sequence[str] | None = None, preamble: str | None = None) -> None:
        self.labels = list(labels) if labels else None
        self.preamble = preamble
        self.model = OPENAI_ALIASES.get(model, model)
        self.name = f"openai:{self.model}"
        base = self.model.removeprefix("ft:").split(":")[0]
        self.base = OPENAI_ALIASES.get(base, base)
        self.max_tokens = OPENAI_EXAMPLE_LIMITS.get(self.base)
        self._enc = get_encoding(encoding_for_model(self.base))

    def check_example(self, fmt: Format, obj: dict[str, Any], line: int, tokens: int) -> list[Issue]:
        issues = super().check_example(fmt, obj, line, tokens)
        messages = obj.get("messages") if fmt == "chat" else (obj.get("input") or {}).get("messages")
        for m in messages or []:
            if not isinstance(m, dict):
                continue
            if m.get("role") in ("developer", "function"):
                issues.append(
                    Issue(
                        line=line,
                        code="role_not_supported",
                        message=f"role {m['role']!r} may be rejected by {self.name}",
                    )
                )
            if (
                m.get("role") == "assistant"
                and isinstance(m.get("content"), list)
                and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])
            ):
                issues.append(Issue(line=line, code="image_in_assistant", message="image in an assistant message"))
        return issues

    def check_file(self, fmt: Format | None, examples: int) -> list[Issue]:
        issues: list[Issue] = []
        if self.max_tokens is None and not self.model.startswith("ft:"):
            issues.append(
                Issue(
                    line=None,
                    code="unknown_model",
                    message=f"{self.model!r} is not a model ftkit knows to be fine-tunable",
                )
            )
        if examples < OPENAI_MIN_EXAMPLES:
            issues.append(
                Issue(
                    line=None,
                    code="too_few_examples",
                    message=f"{examples} example(s); OpenAI needs at least {OPENAI_MIN_EXAMPLES}",
                )
            )
        if fmt == "completion" and self.base not in OPENAI_COMPLETION_MODELS:
            issues.append(
                Issue(
                    line=None,
                    code="format_not_supported",
                    message=f"{self.base} trains on chat data, not prompt/completion",
                )
            )
        elif fmt in ("chat", "classification") and self.base in OPENAI_COMPLETION_MODELS:
            issues.append(
                Issue(
                    line=None, code="format_not_supported", message=f"{self.base} trains on prompt/completion data only"
                )
            )
        elif fmt == "text":
            issues.append(
                Issue(
                    line=None,
                    code="format_not_supported",
                    message="OpenAI has no training on unlabelled text; use the hf or remote backend",
                )
            )
        elif fmt == "preference" and not self.base.startswith(OPENAI_DPO_PREFIXES):
            issues.append(Issue(line=None, code="format_not_supported", message=f"{self.base} does not support DPO"))
        return issues


def config_context(path: Path) -> int | None:
    """``max_position_embeddings`` of a model folder's ``config.json`` (None when it has none)."""
    cfg = path / "config.json"
    if cfg.is_file():
        n = orjson.loads(cfg.read_bytes()).get("max_position_embeddings")
        return int(n) if isinstance(n, int) else None
    return None


def make_target(
    target: str | Target | None, labels: Sequence[str] | None = None, preamble: str | None = None
) -> Target:
    """Build a target from ``openai:<model>``, ``<backend>:<model>`` (e.g. ``hf:smollm2-135m``, ``hf:<path>``),
    a :class:`Target` a backend returned, or None (o200k counting, no rules).

    A model name is resolved by its backend (:func:`ftkit.models.resolve_target`), so ``hf:smollm2-135m`` means
    here what it means to ``eval --base`` and to a job. A ``<backend>:`` target other than ``openai:`` is built by
    that backend (:meth:`ftkit.Backend.make_target`): the core knows neither its tokenizer nor its library.
    """
    if target is None:
        return Target(labels, preamble)
    if isinstance(target, Target):
        return target
    from ftkit.models import resolve_target

    try:
        target = resolve_target(target)
    except ConfigError as e:
        if not target.startswith("hf:"):
            raise
        # An unknown model is a data finding (`validate` lists it with the others), not a usage error.
        missing = _backend_target("hf", target.removeprefix("hf:"), labels, preamble)
        if missing is None:
            raise
        missing.load_issue = Issue(line=None, code="model_not_found", message=str(e))  # type: ignore[attr-defined]
        return missing
    kind, _, rest = target.partition(":")
    if kind == "openai" and rest:
        return OpenAITarget(rest, labels, preamble)
    if rest:
        built = _backend_target(kind, rest, labels, preamble)
        if built is not None:
            return built
    raise ConfigError(f"unknown target {target!r}: expected openai:<model> or hf:<path>")


def _backend_target(kind: str, rest: str, labels: Sequence[str] | None, preamble: str | None) -> Target | None:
    """The target backend ``kind`` builds for ``rest``, or None when it builds none."""
    from ftkit.backend import get_backend, installed_backends

    if kind in installed_backends():
        return get_backend(kind).make_target(rest, labels, preamble)
    if kind == "hf":
        raise ConfigError("the hf target needs the hf backend: pip install ftkit-hf")
    return None
