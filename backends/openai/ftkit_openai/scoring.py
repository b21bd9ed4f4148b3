"""Turning a chat completion into a classification: label probabilities from logprobs, or parsing.

The cookbook's recipe (facts sheet §10.1): ask for one answer with ``logprobs`` and
``top_logprobs``; at the first position, each alternative token that is the first token of a
label (in any of its usual spellings: leading space, lower case, capitalised) adds its
probability to that label. The labels' total is renormalised to one; what is left (tokens that
start no label, or fell outside the top alternatives) is reported as ``unparseable_mass``.
Where two labels share a first token, the generated answer decides between them if it is one of
them, else the mass is split evenly. An alternative that is a whole label counts for that label
alone (a server that scores labels exactly reports them so). Without logprobs the answer text is parsed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ftkit.predictor import UNPARSEABLE, Classification

_STRIP = " \t\r\n.!?,;:'\"`*"


def normalize(text: str) -> str:
    """Case- and punctuation-insensitive form of an answer or token."""
    return text.strip(_STRIP).casefold()


def parse_label(answer: str | None, labels: Sequence[str]) -> str | None:
    """The label an answer names: exactly (ignoring case and punctuation), else on its first line; or None."""
    if not answer:
        return None
    by_norm = {normalize(label): label for label in labels}
    n = normalize(answer)
    if n in by_norm:
        return by_norm[n]
    first = normalize(answer.strip().splitlines()[0]) if answer.strip() else ""
    if first in by_norm:
        return by_norm[first]
    for prefix in ("label:", "answer:", "class:"):
        if n.startswith(prefix) and normalize(n[len(prefix):]) in by_norm:
            return by_norm[normalize(n[len(prefix):])]
    return None


def first_tokens(labels: Sequence[str], encoding: Any) -> dict[str, set[str]]:
    """For each normalised first-token string, the labels it can start."""
    starts: dict[str, set[str]] = {}
    for label in labels:
        for variant in {label, " " + label, label.lower(), " " + label.lower(), label.capitalize(),
                        " " + label.capitalize()}:
            ids = encoding.encode_ordinary(variant)
            if ids:
                tok = normalize(encoding.decode_single_token_bytes(ids[0]).decode("utf-8", errors="replace"))
                if tok:
                    starts.setdefault(tok, set()).add(label)
    return starts


def classify_choice(choice: dict[str, Any], labels: Sequence[str], starts: dict[str, set[str]]) -> Classification:
    """A Classification from one ``choices[i]`` of a chat completion (as a dict)."""
    content = (choice.get("message") or {}).get("content") or ""
    positions = ((choice.get("logprobs") or {}).get("content")) or []
    if positions:
        first = positions[0]
        alternatives = first.get("top_logprobs") or [first]
        mass = dict.fromkeys(labels, 0.0)
        parsed = parse_label(content, labels)
        whole = {normalize(label): label for label in labels}
        for alt in alternatives:
            p = math.exp(float(alt["logprob"]))
            tok = normalize(str(alt["token"]))
            # A whole label counts for that label: servers that score labels exactly (ftkit serve) report
            # each label as one alternative, whatever its first token under this tokenizer would be.
            matches = [whole[tok]] if tok in whole else sorted(starts.get(tok, set()))
            if len(matches) == 1:
                mass[matches[0]] += p
            elif matches:
                if parsed in matches:
                    mass[parsed] += p
                else:
                    for m in matches:
                        mass[m] += p / len(matches)
        total = sum(mass.values())
        if total > 0:
            probs = {label: mass[label] / total for label in labels}
            best = max(labels, key=lambda label: probs[label])
            return Classification(label=best, probabilities=probs, unparseable_mass=max(0.0, 1.0 - total),
                                  raw=content)
    return classify_text(content, labels)


def classify_text(content: str | None, labels: Sequence[str]) -> Classification:
    """A Classification from the answer text alone (no logprobs): one-hot, or UNPARSEABLE."""
    parsed = parse_label(content, labels)
    if parsed is None:
        uniform = 1.0 / len(labels)
        return Classification(label=UNPARSEABLE, probabilities=dict.fromkeys(labels, uniform), unparseable_mass=1.0,
                              raw=content)
    return Classification(label=parsed, probabilities={label: float(label == parsed) for label in labels},
                          unparseable_mass=0.0, raw=content)
