"""A model behind the endpoint: chat completions, and exact label probabilities for classifiers.

A classification job's model answers a request whose messages are exactly ftkit's classification
prompt (``classification_messages(text, labels, preamble)``: the preamble with the job's labels as
system message, the text as user message) by scoring every label exactly, as ``job.model().classify``
does, instead of sampling tokens:

- the answer is the most probable label (at temperature 0; at T > 0 a label drawn from the
  probabilities sharpened by 1/T);
- with ``logprobs``, the answer is one position whose alternatives (``top_logprobs``) are the labels
  with their exact log-probabilities, best first. A label counts as one "token" here: a client that
  reads the first position's alternatives and maps each to the label it names (the OpenAI cookbook's
  recipe, and ``OpenAIPredictor``) gets ftkit's probabilities, as long as ``top_logprobs`` is at least
  the number of labels;
- every such answer also carries the full distribution as ``label_probabilities`` on the choice (an
  extension field; the ``openai`` client keeps it in ``choice.model_extra``).

Any other conversation is generated token by token like on any chat model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ftkit.data.convert import classification_messages
from ftkit.predictor import Classification
from ftkit_hf.serve.generation import TextAssembler, decode_steps, token_entry
from ftkit_hf.serve.schemas import ChatCompletionRequest

DEFAULT_MAX_TOKENS = 512


@dataclass
class Piece:
    """Part of an answer as it is produced: new text, the logprobs entries of its tokens, and the end."""

    text: str
    logprobs: list[dict[str, Any]]
    finish_reason: str | None = None
    tokens: int = 0  # tokens generated since the previous piece


@dataclass
class Answer:
    """A complete answer."""

    text: str
    logprobs: list[dict[str, Any]] | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    label_probabilities: dict[str, float] | None = None


class ServedModel:
    """One model the server offers.

    Args:
        name: the model name clients send (a job id, an alias, a base model name).
        predictor: an ``HFPredictor`` (``job.model()`` of an hf or remote job, or a base model).
        owned_by: shown in ``/v1/models``.
    """

    def __init__(self, name: str, predictor: Any, owned_by: str = "ftkit") -> None:
        self.name = name
        self.predictor = predictor
        self.owned_by = owned_by
        self.tokenizer = predictor.tokenizer
        self.labels: list[str] | None = list(predictor.labels) if getattr(predictor, "labels", None) else None
        self.preamble: str | None = getattr(predictor, "preamble", None)
        eos = {self.tokenizer.eos_token_id}
        gen_config = getattr(predictor.model, "generation_config", None)
        eos |= {int(i) for i in _as_list(getattr(gen_config, "eos_token_id", None))}
        self.eos_ids = {int(i) for i in eos if i is not None}

    @property
    def is_classifier(self) -> bool:
        """True for a classification job's model."""
        return self.labels is not None

    @property
    def can_generate(self) -> bool:
        """False for an encoder with a classification head."""
        return getattr(self.predictor, "kind", "causal") != "encoder"

    # ------------------------------------------------------------------ classification
    def classification_text(self, req: ChatCompletionRequest) -> str | None:
        """The text to classify when the request is this classifier's training prompt, else None."""
        if self.labels is None or len(req.messages) != 2:
            return None
        text = req.messages[1].text()
        expected = classification_messages(text, self.labels, self.preamble)
        return text if _messages(req) == expected else None

    def label_answer(self, req: ChatCompletionRequest, text: str, result: Classification) -> Answer:
        """The chat answer for one exact classification."""
        labels = self.labels or []
        probs = {lab: float(result.probabilities[lab]) for lab in labels}
        label = result.label if req.temperature == 0 else _sample(probs, req.temperature, req.seed)
        logprobs = None
        if req.logprobs:
            ranked = sorted(labels, key=lambda lab: -probs[lab])[: req.top_logprobs or 0]
            entry = _label_entry(label, probs[label])
            entry["top_logprobs"] = [_label_entry(lab, probs[lab]) for lab in ranked]
            logprobs = [entry]
        return Answer(text=label, logprobs=logprobs, finish_reason="stop", prompt_tokens=self._prompt_len(text),
                      completion_tokens=self._label_len(label), label_probabilities=probs)

    def _prompt_len(self, text: str) -> int:
        return len(self.predictor._prompter(self.labels).prompt_ids(text))

    def _label_len(self, label: str) -> int:
        return len(self.predictor._prompter(self.labels).label_ids[label])

    # ------------------------------------------------------------------ generation
    @property
    def context_length(self) -> int | None:
        """The most tokens (prompt + answer) the model takes, where its config says."""
        value = getattr(getattr(self.predictor.model, "config", None), "max_position_embeddings", None)
        return int(value) if isinstance(value, int) else None

    def token_limit(self, req: ChatCompletionRequest, prompt_len: int) -> int:
        """The answer's token limit: the request's, else up to 512 within what the context leaves."""
        room = (self.context_length or prompt_len + DEFAULT_MAX_TOKENS) - prompt_len
        return req.limit(max(1, min(DEFAULT_MAX_TOKENS, room)))

    def prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        """The conversation rendered with the model's chat template, as token ids."""
        msgs = _messages(req)
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def pieces(self, req: ChatCompletionRequest, prompt: list[int]) -> Iterator[Piece]:
        """Generate the answer piece by piece (runs on the engine thread, holding the model)."""
        tok = self.tokenizer
        assembler = TextAssembler(tok, req.stops(), self.eos_ids)
        limit = self.token_limit(req, len(prompt))
        n = pending = 0
        with self.predictor._inference():
            for step in decode_steps(self.predictor.model, prompt, max_tokens=limit, eos_ids=self.eos_ids,
                                     temperature=req.temperature, top_p=req.top_p,
                                     top_logprobs=(req.top_logprobs or 0) if req.logprobs else 0, seed=req.seed,
                                     device=self.predictor.device):
                n += 1
                pending += 1
                entries: list[dict[str, Any]] = []
                if req.logprobs and step.token_id not in self.eos_ids:
                    entry = token_entry(tok, step.token_id, step.logprob)
                    entry["top_logprobs"] = [token_entry(tok, i, lp) for i, lp in step.top]
                    entries.append(entry)
                if step.token_id in self.eos_ids:
                    yield Piece(assembler.finish(), entries, "stop", pending)
                    return
                text = assembler.add(step.token_id)
                if assembler.stopped:
                    yield Piece(text, entries, "stop", pending)
                    return
                if text or entries:
                    yield Piece(text, entries, None, pending)
                    pending = 0
        yield Piece(assembler.finish(), [], "length" if n >= limit else "stop", pending)

    def answer(self, req: ChatCompletionRequest, prompt: list[int]) -> Answer:
        """The whole generated answer (runs on the engine thread)."""
        text, finish, n = "", "stop", 0
        entries: list[dict[str, Any]] = []
        for piece in self.pieces(req, prompt):
            text += piece.text
            entries += piece.logprobs
            finish = piece.finish_reason or finish
            n += piece.tokens
        return Answer(text=text, logprobs=entries if req.logprobs else None, finish_reason=finish,
                      prompt_tokens=len(prompt), completion_tokens=n)


def _messages(req: ChatCompletionRequest) -> list[dict[str, str]]:
    # OpenAI's newer "developer" role is the system message of chat templates that predate it.
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]


def _label_entry(label: str, p: float) -> dict[str, Any]:
    return {"token": label, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(label.encode("utf-8"))}


def _sample(probs: dict[str, float], temperature: float, seed: int | None) -> str:
    weights = [p ** (1.0 / temperature) for p in probs.values()]
    return random.Random(seed).choices(list(probs), weights=weights)[0]


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, list | tuple) else [x]
