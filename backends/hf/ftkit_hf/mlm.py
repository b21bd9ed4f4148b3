"""Masked-LM domain adaptation of encoders (BERT-like models such as MiniLM) on unlabelled text.

BERT's recipe: 15% of the real tokens of a document (never ``[CLS]``, ``[SEP]`` or padding) are chosen
as targets; of those, 80% are replaced by ``[MASK]``, 10% by a random token and 10% are left as they
are, and the loss is the cross-entropy of predicting the original token at the chosen positions only.
The choice comes from a seeded ``torch.Generator``: the same seed masks the same tokens in the same way,
so a run is reproducible and evaluation (masked-token accuracy) sees the same masks for every model.

The encoder is trained with LoRA through the sequence-classification trainer's loop
(:func:`ftkit_hf.seqcls.train_head`: padded batches, AdamW, checkpoints, resume, early stopping), which
takes the masked batches from :class:`MaskedBatcher`. The MLM head's transform (dense + LayerNorm) is
trained and saved in full with the adapter: a sentence-embedding checkpoint such as all-MiniLM-L6-v2 ships
no MLM head, so it starts from random weights (the output projection is tied to the frozen embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftkit.errors import DatasetError

IGNORE = -100
MASK_PROBABILITY = 0.15
# Of the chosen tokens: [MASK], a random token, unchanged (BERT, Devlin et al. 2019, section 3.1).
REPLACE_MASK, REPLACE_RANDOM = 0.8, 0.1
# Modules trained in full beside the LoRA matrices: BERT's MLM head transform (random when the checkpoint
# has no MLM head). peft matches the name as a suffix (``cls.predictions.transform``).
MLM_HEAD_MODULES = ["transform"]


def mask_tokens(
    input_ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator,
    probability: float = MASK_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a batch: ``(inputs, labels)`` with labels -100 except at the chosen positions.

    Args:
        input_ids: ``(batch, length)`` token ids.
        special: a bool tensor of the same shape, True where a token may not be chosen (specials, padding).
        mask_id: the tokenizer's ``[MASK]`` id.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        generator: the seeded source of every random choice.
        probability: the share of real tokens chosen (0.15 in BERT).
    """
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & ~special
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE))
    draw = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (draw < REPLACE_MASK)
    to_random = chosen & (draw >= REPLACE_MASK) & (draw < REPLACE_MASK + REPLACE_RANDOM)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=input_ids.dtype)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, random_ids, inputs)
    return inputs, labels


@dataclass
class MaskedBatcher:
    """Padded, masked batches of tokenized documents for :func:`ftkit_hf.seqcls.train_head`.

    Each call draws fresh masks (dynamic masking, as RoBERTa does) from a generator seeded by the call's
    ``seed``: the engine passes ``seed + epoch`` for training and a fixed seed for validation, so a resumed
    run masks as the uninterrupted one would.
    """

    tokenizer: Any
    vocab_size: int

    def __call__(self, rows: list[dict[str, Any]], size: int, pad_id: int, order: list[int],
                 seed: int) -> list[dict[str, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, len(order), size):
            chunk = [rows[i]["input_ids"] for i in order[start : start + size]]
            ids, attention, special = self.pad(chunk, pad_id)
            inputs, labels = mask_tokens(ids, special, mask_id=self.tokenizer.mask_token_id,
                                         vocab_size=self.vocab_size, generator=gen)
            out.append({"input_ids": inputs, "attention_mask": attention, "labels": labels})
        return out

    def pad(self, chunk: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids, attention_mask, special)`` of a list of documents, right-padded."""
        width = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, x in enumerate(chunk):
            ids[j, : len(x)] = torch.tensor(x)
            attention[j, : len(x)] = 1
        specials = torch.tensor(self.tokenizer.all_special_ids, dtype=torch.long)
        special = torch.isin(ids, specials) | (attention == 0)
        return ids, attention, special


def with_specials(tokenizer: Any, ids: list[int]) -> list[int]:
    """``[CLS] ids [SEP]`` (BERT-likes), or the tokenizer's BOS/EOS around them (transformers 5's fast
    tokenizers no longer offer ``build_inputs_with_special_tokens``)."""
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return [*([first] if first is not None else []), *ids, *([last] if last is not None else [])]


def prepare_mlm_file(
    path: str | Path, *, tokenizer: Any, max_length: int
) -> tuple[list[dict[str, Any]], int, list[int]]:
    """Tokenize a text file for an encoder: ``(rows, tokens, tokens per line)``.

    A document longer than ``max_length`` is cut into pieces of ``max_length`` tokens, each with its own
    ``[CLS]`` and ``[SEP]`` (the encoder's context is fixed; nothing is dropped).
    """
    from ftkit_hf.examples import _field, read_jsonl

    p = Path(path)
    body = max_length - len(with_specials(tokenizer, []))
    rows: list[dict[str, Any]] = []
    per_line: list[int] = []
    for n, obj in read_jsonl(p):
        text = _field(p, n, obj, "text")
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{p}:{n}: 'text' must be a non-empty string")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise DatasetError(f"{p}:{n}: the text has no tokens")
        line = 0
        for i in range(0, len(ids), body):
            piece = with_specials(tokenizer, ids[i : i + body])
            rows.append({"input_ids": piece})
            line += len(piece)
        per_line.append(line)
    return rows, sum(per_line), per_line


def load_mlm_model(model_path: Path, config: Any) -> Any:
    """The encoder with an MLM head and LoRA adapters (the head's transform trained in full)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForMaskedLM

    from ftkit_hf.worker import default_target_modules

    model = AutoModelForMaskedLM.from_pretrained(str(model_path), dtype=torch.float32)
    if config.method == "full":
        return model
    targets = config.target_modules or default_target_modules(model.config.model_type)
    # peft annotates lora_alpha as int but computes alpha / r in float.
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", modules_to_save=MLM_HEAD_MODULES)
    return get_peft_model(model, lora)
