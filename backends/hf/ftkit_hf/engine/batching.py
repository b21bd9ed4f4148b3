"""Token-budget batches and packing.

A step holds up to ``batch_tokens`` real tokens. Two layouts:

* **packed** (the fast path): every example of the step is concatenated into one row; ``position_ids``
  restart at 0 for each example and ``cu_seqlens`` marks the boundaries, so the attention kernel (see
  ``attention.py``) keeps the examples apart. No padding is computed at all.
* **padded** (the fallback for architectures the engine does not know): examples are grouped by length
  so that padding stays small, then padded to the longest in the batch.

In both layouts the target of position ``t`` is the label of ``t + 1`` *of the same example*; the last
token of an example never predicts the first token of the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .settings import IGNORE_INDEX, TokenizedExample


def plan_epoch(lengths: Sequence[int], batch_tokens: int, max_examples: int, seed: int, epoch: int,
               *, sort_by_length: bool = False) -> list[list[int]]:
    """Split one epoch into steps of at most ``batch_tokens`` tokens and ``max_examples`` examples.

    The order is a seeded shuffle (the same seed and epoch always give the same plan). With
    ``sort_by_length`` (padded layout) examples are sorted by length inside windows of ~32 steps so each
    batch holds similar lengths, and the steps are shuffled again afterwards.

    Args:
        lengths: token count of each example.
        batch_tokens: token budget per step.
        max_examples: most examples per step.
        seed: the run's seed.
        epoch: the epoch number (each epoch gets its own order).
        sort_by_length: group similar lengths (for padded batches).

    Returns:
        A list of steps, each a list of example indices.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)).tolist()
    if sort_by_length:
        window = max(1, 32 * max(1, batch_tokens // max(1, int(np.mean(lengths)) if lengths else 1)))
        order = [i for start in range(0, len(order), window)
                 for i in sorted(order[start:start + window], key=lambda j: lengths[j])]
    steps: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    longest = 0
    for i in order:
        n = lengths[i]
        # Padded batches cost (examples x longest); packed ones cost the sum of lengths.
        cost = (len(current) + 1) * max(longest, n) if sort_by_length else tokens + n
        if current and (cost > batch_tokens or len(current) >= max_examples):
            steps.append(current)
            current, tokens, longest = [], 0, 0
        current.append(i)
        tokens += n
        longest = max(longest, n)
    if current:
        steps.append(current)
    if sort_by_length:
        perm = rng.permutation(len(steps)).tolist()
        steps = [steps[j] for j in perm]
    return steps


@dataclass
class Batch:
    """One step's tensors.

    Attributes:
        input_ids: ``[1, T]`` (packed) or ``[B, L]`` (padded).
        targets: same shape; the token each position must predict, -100 where no loss.
        position_ids: packed only: positions restarting at 0 for each example.
        attention_mask: padded only: 1 for real tokens.
        cu_seqlens: packed only: int32 boundaries ``[0, n1, n1+n2, ...]``.
        max_seqlen: packed only: the longest example.
        seq_lengths: packed only: lengths of the examples, as Python ints (to split without a device sync).
        real_tokens: tokens that are not padding.
        label_tokens: positions that carry a loss.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    cu_seqlens: torch.Tensor | None
    max_seqlen: int
    seq_lengths: list[int] | None
    real_tokens: int
    label_tokens: int

    def to(self, device: str | torch.device) -> Batch:
        """Move the tensors to ``device``."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.input_ids), move(self.targets), move(self.position_ids),  # type: ignore[arg-type]
                     move(self.attention_mask), move(self.cu_seqlens), self.max_seqlen, self.seq_lengths,
                     self.real_tokens, self.label_tokens)


def shifted_targets(labels: Sequence[int]) -> list[int]:
    """The per-position targets of one example: ``labels[1:]`` and no target for the last token."""
    return [*labels[1:], IGNORE_INDEX]


def collate_packed(examples: Sequence[TokenizedExample]) -> Batch:
    """Concatenate examples into one row with per-example positions and boundaries."""
    ids: list[int] = []
    targets: list[int] = []
    positions: list[int] = []
    bounds = [0]
    for ex in examples:
        n = len(ex.input_ids)
        ids.extend(ex.input_ids)
        targets.extend(shifted_targets(ex.labels))
        positions.extend(range(n))
        bounds.append(bounds[-1] + n)
    lengths = [len(ex.input_ids) for ex in examples]
    t = torch.tensor(targets, dtype=torch.long)
    return Batch(
        input_ids=torch.tensor(ids, dtype=torch.long).unsqueeze(0),
        targets=t.unsqueeze(0),
        position_ids=torch.tensor(positions, dtype=torch.long).unsqueeze(0),
        attention_mask=None,
        cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
        max_seqlen=max(lengths),
        seq_lengths=lengths,
        real_tokens=len(ids),
        label_tokens=int((t != IGNORE_INDEX).sum()),
    )


def collate_padded(examples: Sequence[TokenizedExample], pad_id: int = 0) -> Batch:
    """Right-pad examples to the longest one; padding carries no loss and is masked out of attention."""
    longest = max(len(ex.input_ids) for ex in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids, dtype=torch.long)
        targets[row, :n] = torch.tensor(shifted_targets(ex.labels), dtype=torch.long)
        mask[row, :n] = 1
    return Batch(ids, targets, None, mask, None, longest, None, int(mask.sum()),
                 int((targets != IGNORE_INDEX).sum()))
