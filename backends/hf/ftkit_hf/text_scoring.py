"""Scoring unlabelled documents for ``ftkit.evaluate`` on a text file (see :mod:`ftkit.evaluate.text`).

Documents are tokenized exactly as training tokenizes them (:func:`ftkit_hf.tokenize.encode_text` for
decoders, :func:`ftkit_hf.mlm.prepare_mlm_file`'s pieces for encoders), so held-out perplexity measures the
objective the job trained.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch

from ftkit_hf.mlm import MASK_PROBABILITY, with_specials
from ftkit_hf.tokenize import encode_text

MASK_SEED = 0


def _padded(rows: list[list[int]], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = torch.tensor(r)
        attention[j, : len(r)] = 1
    return ids.to(device), attention.to(device)


def causal_scores(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, device: str,
                  rows_per_pass: int = 8) -> list[dict[str, Any]]:
    """Per document: summed NLL of every token given the ones before it (the first excepted), and the count."""
    pieces: list[tuple[int, list[int]]] = []
    for i, text in enumerate(texts):
        pieces.extend((i, ex.input_ids) for ex in encode_text(tokenizer, text, max_length))
    out = [{"nll": 0.0, "tokens": 0} for _ in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(pieces), rows_per_pass):
        chunk = pieces[start : start + rows_per_pass]
        ids, attention = _padded([p for _, p in chunk], pad, device)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        targets = ids[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        nll = nll * attention[:, 1:]  # padding is no target
        for (doc, _), row_nll, row_mask in zip(chunk, nll, attention[:, 1:], strict=True):
            out[doc]["nll"] += float(row_nll.sum())
            out[doc]["tokens"] += int(row_mask.sum())
    return out


def masked_scores(model: Any, tokenizer: Any, texts: Sequence[str], *, max_length: int, device: str,
                  rows_per_pass: int = 16, seed: int = MASK_SEED) -> list[dict[str, Any]]:
    """Per document: 15% of its real tokens replaced by [MASK] (seeded by the seed and the text, so the same
    positions for every model and any batching); summed NLL of the originals, their count, and how many of
    them the model's top guess gets right."""
    body = max_length - len(with_specials(tokenizer, []))
    specials = torch.tensor(tokenizer.all_special_ids, dtype=torch.long)
    pieces: list[tuple[int, list[int], list[int]]] = []
    for i, text in enumerate(texts):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(text.encode("utf-8")))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for k in range(0, len(ids), body):
            piece = torch.tensor(with_specials(tokenizer, ids[k : k + body]), dtype=torch.long)
            chosen = (torch.rand(piece.shape, generator=gen) < MASK_PROBABILITY) & ~torch.isin(piece, specials)
            masked = torch.where(chosen, torch.full_like(piece, tokenizer.mask_token_id), piece)
            labels = torch.where(chosen, piece, torch.full_like(piece, -100))
            pieces.append((i, masked.tolist(), labels.tolist()))
    out: list[dict[str, Any]] = [{"nll": 0.0, "tokens": 0, "correct": 0} for _ in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(pieces), rows_per_pass):
        chunk = pieces[start : start + rows_per_pass]
        ids, attention = _padded([p for _, p, _ in chunk], pad, device)
        labels, _ = _padded([lab for _, _, lab in chunk], -100, device)
        logits = model(input_ids=ids, attention_mask=attention).logits.float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none", ignore_index=-100)
        hit = (logits.argmax(-1) == labels) & (labels != -100)
        for (doc, _, _), row_nll, row_hit, row_lab in zip(chunk, nll, hit, labels, strict=True):
            out[doc]["nll"] += float(row_nll.sum())
            out[doc]["tokens"] += int((row_lab != -100).sum())
            out[doc]["correct"] += int(row_hit.sum())
    return out
