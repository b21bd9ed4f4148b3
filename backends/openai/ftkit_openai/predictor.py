"""OpenAIPredictor: a fine-tuned (or base) OpenAI model behind ftkit's Predictor protocol.

Requests run concurrently (``max_concurrency`` threads sharing one client); each goes through
the retry policy of :class:`~ftkit_openai.client.OpenAIAPI`, so 429s wait for Retry-After. With
``use_batch`` the same requests go through the Batch API instead.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ftkit.data.convert import classification_messages
from ftkit.errors import APIError, ConfigError
from ftkit.predictor import Classification, Messages
from ftkit_openai.client import OpenAIAPI
from ftkit_openai.config import OpenAIConfig
from ftkit_openai.pricing import base_model_of, inference_cost
from ftkit_openai.scoring import classify_choice, classify_text, first_tokens

MAX_LABEL_TOKENS = 16


class OpenAIPredictor:
    """Chat completions on one model.

    Args:
        model: the model name, e.g. ``ft:gpt-4.1-mini-2025-04-14:org:suffix:abc123``.
        config: the backend options (credentials, concurrency, classify mode, batch).
        labels: the classifier's labels (None for a generator).
        preamble: the classification system prompt the model was trained with.
        api: an existing client wrapper to share.
    """

    def __init__(self, model: str, config: OpenAIConfig | None = None, labels: Sequence[str] | None = None,
                 preamble: str | None = None, api: OpenAIAPI | None = None) -> None:
        self.model = model
        self.config = config or OpenAIConfig()
        self.labels: list[str] | None = list(labels) if labels else None
        self.preamble = preamble
        self.api = api or OpenAIAPI(self.config)
        self._logprobs_refused = self.config.classify_mode == "parse"
        self._lock = threading.Lock()
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "usd": 0.0}

    def __repr__(self) -> str:
        return f"OpenAIPredictor(model={self.model!r}, labels={self.labels!r})"

    # ------------------------------------------------------------------ Predictor protocol

    def generate(self, inputs: Sequence[str | Messages], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 use_batch: bool | None = None, **kwargs: Any) -> list[str]:
        """Answer each prompt or conversation (temperature 0 by default, so answers are repeatable)."""
        bodies = [self._body(_as_messages(x), max_completion_tokens=max_new_tokens, temperature=temperature, **kwargs)
                  for x in inputs]
        return [(_choice(r).get("message") or {}).get("content") or "" for r in self._run(bodies, use_batch)]

    def classify(self, texts: Sequence[str], *, labels: Sequence[str] | None = None,
                 use_batch: bool | None = None) -> list[Classification]:
        """A label and a probability for every label, for each text.

        Uses logprobs (``top_logprobs``) where the model allows them; where the API refuses them
        (o-series models) the answer is parsed instead and unparseable answers get ``UNPARSEABLE``.
        """
        vocab = list(labels or self.labels or [])
        if len(vocab) < 2:
            raise ConfigError("classify needs at least two labels: pass labels= or train a classification job")
        from ftkit.data.tokens import encoding_for_model, get_encoding

        enc = get_encoding(encoding_for_model(base_model_of(self.model)))
        starts = first_tokens(vocab, enc)
        max_tokens = min(MAX_LABEL_TOKENS, max(len(enc.encode_ordinary(x)) for x in vocab))
        messages = [classification_messages(t, vocab, self.preamble) for t in texts]
        if not messages:
            return []
        results: list[Classification | None] = [None] * len(messages)
        rest = list(range(len(messages)))
        if not self._logprobs_refused and self.config.classify_mode != "parse":
            # The first request tells whether this model accepts logprobs, before fanning out. It is
            # always synchronous: a one-line batch could take hours to say the same.
            try:
                first = self._run([self._classify_body(messages[0], max_tokens, True)], False)[0]
                results[0] = classify_choice(_choice(first), vocab, starts)
                rest = rest[1:]
            except APIError as e:
                if not _logprobs_refused(e) or self.config.classify_mode == "logprobs":
                    raise
                self._logprobs_refused = True
        with_logprobs = not self._logprobs_refused
        bodies = [self._classify_body(messages[i], max_tokens, with_logprobs) for i in rest]
        for i, response in zip(rest, self._run(bodies, use_batch), strict=True):
            choice = _choice(response)
            results[i] = (classify_choice(choice, vocab, starts) if with_logprobs
                          else classify_text((choice.get("message") or {}).get("content"), vocab))
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ requests

    def _body(self, messages: Messages, **opts: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, **{k: v for k, v in opts.items() if v is not None}}

    def _classify_body(self, messages: Messages, max_tokens: int, logprobs: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": self.config.top_logprobs} if logprobs else {}
        return self._body(messages, max_completion_tokens=max_tokens, temperature=0.0, **extra)

    def _run(self, bodies: list[dict[str, Any]], use_batch: bool | None) -> list[dict[str, Any]]:
        batch = self.config.use_batch if use_batch is None else use_batch
        if batch:
            from ftkit_openai.batch import run_batch

            answers = run_batch(self.api, bodies)
            for a in answers:
                if isinstance(a, APIError):
                    raise a
            out = [a for a in answers if isinstance(a, dict)]
        elif len(bodies) <= 1:
            out = [self._one(b) for b in bodies]
        else:
            with ThreadPoolExecutor(max_workers=min(self.config.max_concurrency, len(bodies))) as pool:
                out = list(pool.map(self._one, bodies))
        for r in out:
            self._account(r, batch)
        return out

    def _one(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.api.call(self.api.client.chat.completions.create, **body)
        return response.model_dump()

    def _account(self, response: dict[str, Any], batch: bool) -> None:
        usage = response.get("usage") or {}
        p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        usd = inference_cost(self.model, p, c, batch=batch) or 0.0
        with self._lock:
            self.usage["requests"] += 1
            self.usage["prompt_tokens"] += p
            self.usage["completion_tokens"] += c
            self.usage["usd"] += usd


def _as_messages(x: str | Messages) -> Messages:
    return [{"role": "user", "content": x}] if isinstance(x, str) else list(x)


def _choice(response: dict[str, Any]) -> dict[str, Any]:
    choices = response.get("choices") or []
    if not choices:
        raise APIError("the chat completion has no choices")
    return dict(choices[0])


def _logprobs_refused(e: APIError) -> bool:
    return e.status_code in (400, 403) and "logprob" in str(e).lower()
