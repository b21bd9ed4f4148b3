"""How an emulated fine-tuned model answers: the nearest training example, with honest logprobs.

A fine-tuned model "remembers" its training file. For a conversation it finds the training
examples whose user text shares the most words with the question (Jaccard overlap of lower-cased
word sets), scores every distinct assistant answer by its best overlap, and turns the scores into
probabilities with a softmax. It answers with the most probable answer; ``logprobs`` reports the
first token of every candidate answer at position 0, so a classifier built on it gets a
probability for every label that reflects how close the question is to each class. A fixed
share goes to a non-answer token ("I"), so the unparseable mass is never exactly zero.

This makes evaluation meaningful: held-out texts that resemble a class's training texts get
that class; a file of random labels gives chance accuracy. It is deterministic.

A fine-tuned model also depends on the system prompt it was trained with, as a real one does.
Asked under another system prompt (or with one where training had none), it keeps only a faint
memory of its training: each candidate's score is a quarter its word overlap and three quarters a
fixed pseudo-random number drawn from the question and the candidate, so accuracy falls towards
chance. An empty system message counts as none; a request without any system message is answered
from memory (a bare question, as in quick ``generate`` calls). Tests thereby catch a prompt mismatch.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"[\w']+")
SHARPNESS = 12.0  # softmax temperature: higher means more confident answers
OTHER_TOKEN = "I"  # the start of a chatty non-answer ("I think ...")
OTHER_SCORE = 0.02
MISMATCH_MEMORY = 0.25  # share of the word overlap left when the system prompt is not the trained one


def words(text: str) -> frozenset[str]:
    """Lower-cased word set of a text."""
    return frozenset(w.lower() for w in _WORD.findall(text))


def message_text(content: Any) -> str:
    """The text of a message's content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def system_of(messages: Sequence[dict[str, Any]]) -> str | None:
    """The system (or developer) prompt of a conversation; None when it has none or an empty one."""
    for m in messages:
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            return message_text(m.get("content")) or None
    return None


def _noise(question: frozenset[str], answer: str) -> float:
    digest = hashlib.sha256((" ".join(sorted(question)) + "\x00" + answer).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def question_of(messages: Sequence[dict[str, Any]]) -> str:
    """The text a model answers: the user messages of a conversation."""
    return " ".join(message_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user")


@dataclass
class Answer:
    """A model's answer with the probabilities of the candidate answers."""

    text: str
    candidates: list[tuple[str, float]]  # (answer text, probability), most probable first


class Memory:
    """The examples a fine-tuned model was trained on, as (question words, answer) pairs."""

    def __init__(self, examples: Sequence[dict[str, Any]]) -> None:
        self.pairs: list[tuple[frozenset[str], str]] = []
        self.systems: set[str | None] = set()
        for ex in examples:
            pair = _pair(ex)
            if pair is not None:
                self.pairs.append((words(pair[0]), pair[1]))
                self.systems.add(_system_of_example(ex))

    def answer(self, messages: Sequence[dict[str, Any]]) -> Answer:
        """The answer to a conversation, with a probability for every distinct training answer."""
        if not self.pairs:
            return Answer("OK", [("OK", 1.0)])
        q = words(question_of(messages))
        best: dict[str, float] = {}
        for ws, ans in self.pairs:
            union = len(q | ws)
            sim = len(q & ws) / union if union else 0.0
            if sim > best.get(ans, -1.0):
                best[ans] = sim
        asked = system_of(messages)
        if asked is not None and asked not in self.systems:
            best = {a: MISMATCH_MEMORY * s + (1 - MISMATCH_MEMORY) * _noise(q, a) for a, s in best.items()}
        scores = [(a, s) for a, s in best.items()]
        scores.append((OTHER_TOKEN, OTHER_SCORE))
        top = max(s for _, s in scores)
        exps = [(a, math.exp(SHARPNESS * (s - top))) for a, s in scores]
        z = sum(e for _, e in exps)
        probs = sorted(((a, e / z) for a, e in exps), key=lambda x: (-x[1], x[0]))
        text = next(a for a, _ in probs if a != OTHER_TOKEN)
        return Answer(text, probs)


def _system_of_example(ex: dict[str, Any]) -> str | None:
    if "input" in ex:
        return system_of((ex.get("input") or {}).get("messages") or [])
    return system_of(ex.get("messages") or [])


def _pair(ex: dict[str, Any]) -> tuple[str, str] | None:
    if "prompt" in ex and "completion" in ex:
        return str(ex["prompt"]), str(ex["completion"]).strip()
    if "input" in ex:
        pref = ex.get("preferred_output") or ex.get("preferred_completion") or []
        answer = message_text(pref[-1].get("content")) if pref and isinstance(pref[-1], dict) else ""
        return question_of((ex.get("input") or {}).get("messages") or []), answer
    messages = ex.get("messages") or []
    answers = [message_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    if not answers:
        return None
    return question_of(messages), answers[-1]


def logprobs_content(answer: Answer, encoding: Any, top_logprobs: int, max_tokens: int | None) -> list[dict[str, Any]]:
    """The ``logprobs.content`` list of a chat completion for ``answer``.

    Position 0 lists the first tokens of the candidate answers (probabilities of candidates that
    share a first token are added); later positions are near-certain continuations.
    """
    tokens = encoding.encode_ordinary(answer.text)
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    first: dict[int, float] = {}
    for text, p in answer.candidates:
        ids = encoding.encode_ordinary(text)
        if ids:
            first[ids[0]] = first.get(ids[0], 0.0) + p
    ranked = sorted(first.items(), key=lambda x: -x[1])[:top_logprobs]
    out = []
    for i, tok in enumerate(tokens):
        if i == 0:
            p = first.get(tok, 1e-6)
            alts = [_entry(encoding, t, math.log(q)) for t, q in ranked]
        else:
            p = 0.9995
            alts = [_entry(encoding, tok, math.log(p))][:top_logprobs]
        out.append({**_entry(encoding, tok, math.log(p)), "top_logprobs": alts})
    return out


def _entry(encoding: Any, token: int, logprob: float) -> dict[str, Any]:
    raw = encoding.decode_single_token_bytes(token)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": round(logprob, 6), "bytes": list(raw)}
