"""Token-by-token decoding with a KV cache: what one chat completion runs.

One loop serves the plain, streamed and logprobs answers alike, so they cannot disagree: each step
runs the model on the new token, takes the log-softmax of the raw logits (the logprobs reported are
the model's, before temperature, as vLLM reports them), picks the next token (greedy at temperature
0, else sampled from ``softmax(logits / T)`` within ``top_p``) and yields it. The caller turns tokens
into text and watches for stop sequences.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch


@dataclass
class Step:
    """One generated token.

    Attributes:
        token_id: the token chosen.
        logprob: its log-probability under the model.
        top: the most likely tokens at this step as (id, logprob), best first (empty unless asked).
    """

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


def decode_steps(
    model: Any,
    prompt_ids: Sequence[int],
    *,
    max_tokens: int,
    eos_ids: set[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_logprobs: int = 0,
    seed: int | None = None,
    device: str = "cpu",
) -> Iterator[Step]:
    """Yield up to ``max_tokens`` tokens after ``prompt_ids``; stops after an end-of-turn token.

    Must run under ``torch.inference_mode()`` (the caller holds the model).
    """
    gen = torch.Generator(device="cpu")
    if seed is not None:
        gen.manual_seed(seed)
    else:
        gen.seed()
    ids = torch.tensor([list(prompt_ids)], device=device)
    past = None
    for _ in range(max_tokens):
        out = model(input_ids=ids, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float().cpu()
        logp = torch.log_softmax(logits, dim=-1)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            if top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                keep = sorted_p.cumsum(0) - sorted_p < top_p  # the smallest set whose mass reaches top_p
                probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
            token = int(torch.multinomial(probs, 1, generator=gen))
        else:
            token = int(logits.argmax())
        top: list[tuple[int, float]] = []
        if top_logprobs:
            vals, idx = logp.topk(top_logprobs)
            top = [(int(i), float(v)) for i, v in zip(idx, vals, strict=True)]
        yield Step(token, float(logp[token]), top)
        if token in eos_ids:
            return
        ids = torch.tensor([[token]], device=device)


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    # GPT-2's byte-level BPE shows each byte as a printable character: printable Latin-1 bytes as
    # themselves, the others as the characters from U+0100 on, in byte order. This is the inverse map.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The exact bytes of one token (a byte-level token may hold part of a UTF-8 character)."""
    piece = tokenizer.convert_ids_to_tokens(token_id)
    table = _byte_decoder()
    if isinstance(piece, str) and piece and all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return str(tokenizer.decode([token_id])).encode("utf-8")


def token_entry(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    """An OpenAI ``logprobs`` entry (token text, logprob, bytes) for one token."""
    raw = token_bytes(tokenizer, token_id)
    return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}


class TextAssembler:
    """Generated tokens → text, with stop sequences cut off and held back while they may be forming.

    Args:
        tokenizer: decodes the ids.
        stops: stop sequences; the text ends just before the first one (not included, as in OpenAI's API).
        skip_ids: ids never shown (the end-of-turn token).
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], skip_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        self.skip_ids = skip_ids
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False

    def _text(self) -> str:
        return str(self.tokenizer.decode([i for i in self.ids if i not in self.skip_ids], skip_special_tokens=False))

    def add(self, token_id: int) -> str:
        """Add a token; returns the text now safe to send (may be empty). Sets ``stopped`` on a stop sequence."""
        self.ids.append(token_id)
        text = self._text()
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._emit(text[:cut])
        hold = max((len(s) - 1 for s in self.stops), default=0)
        safe = len(text) - hold
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for its next byte
            safe = min(safe, len(text) - 1)
        return self._emit(text[: max(safe, self.sent)])

    def finish(self) -> str:
        """The text held back, once generation has ended without a stop sequence."""
        return "" if self.stopped else self._emit(self._text())

    def _emit(self, text: str) -> str:
        new = text[self.sent :]
        self.sent = len(text)
        return new
