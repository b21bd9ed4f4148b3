"""Mixed precision helpers: autocast and bf16 storage of frozen weights during training.

Autocast casts a weight to bf16 every time a matmul uses it, and caches the cast only for leaf tensors
that require grad. In LoRA the big base weights are frozen, so they are recast on every forward pass and
again for the backward matmuls. Storing the frozen Linear weights in bf16 for the duration of training
removes those casts; the matmul sees exactly the same bf16 values as under autocast, so the numbers do not
change. Embeddings, norms, LoRA weights, the optimizer state and the loss stay fp32.

The original fp32 tensors are kept and put back when training ends, so the model the caller gets back is
bit-for-bit the model it passed in (apart from the trained parameters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def autocast(device: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[None]:
    """``torch.autocast`` for ``dtype``, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=dtype)


@contextlib.contextmanager
def frozen_linear_weights_in(model: torch.nn.Module, dtype: torch.dtype | None,
                             skip: tuple[torch.nn.Module, ...] = ()) -> Iterator[int]:
    """Store frozen ``nn.Linear`` weights of ``model`` in ``dtype`` inside the block; restore them after.

    Args:
        model: the model (LoRA adapters and other trainable weights are left alone).
        dtype: the storage dtype, or None to do nothing.
        skip: modules to leave alone (e.g. an LM head tied to the input embeddings).

    Yields:
        How many weights were converted.
    """
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    if dtype is not None:
        skipped = {id(p) for m in skip for p in m.parameters()}
        seen: set[int] = set()
        for module in model.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            w = module.weight
            if w.requires_grad or w.dtype == dtype or not w.is_floating_point() or id(w) in skipped \
                    or id(w) in seen:
                continue
            seen.add(id(w))
            saved.append((w, w.data))
            w.data = w.data.to(dtype)
    try:
        yield len(saved)
    finally:
        for w, original in saved:
            w.data = original
