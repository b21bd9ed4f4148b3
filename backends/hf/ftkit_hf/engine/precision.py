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
def frozen_weights_in(model: torch.nn.Module, dtype: torch.dtype | None, *, linear_only: bool = False,
                      skip: tuple[torch.nn.Module, ...] = ()) -> Iterator[int]:
    """Store the frozen floating-point weights of ``model`` in ``dtype`` inside the block; restore them after.

    With ``linear_only`` only ``nn.Linear`` weights are converted (numerically identical to autocast);
    otherwise embeddings and norms too, so the hidden states flow in ``dtype`` between layers, as when a
    model is loaded in bf16 on a GPU (PEFT's input casting is switched off so LoRA does not upcast them).

    Args:
        model: the model (trainable weights, e.g. LoRA adapters, are left alone).
        dtype: the storage dtype, or None to do nothing.
        linear_only: convert only ``nn.Linear`` weights.
        skip: modules to leave alone (e.g. an LM head tied to the input embeddings when ``linear_only``).

    Yields:
        How many tensors were converted.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    stack = contextlib.ExitStack()
    if dtype is not None:
        skipped = {id(p) for m in skip for p in m.parameters()}
        if linear_only:
            candidates = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        else:
            candidates = list(model.parameters())
            from peft.helpers import disable_input_dtype_casting

            stack.enter_context(disable_input_dtype_casting(model))
        seen: set[int] = set()
        for w in candidates:
            if w.requires_grad or w.dtype == dtype or not w.is_floating_point() or id(w) in skipped \
                    or id(w) in seen:
                continue
            seen.add(id(w))
            saved.append((w, w.data))
            w.data = w.data.to(dtype)
    try:
        with stack:
            yield len(saved)
    finally:
        for w, original in saved:
            w.data = original
