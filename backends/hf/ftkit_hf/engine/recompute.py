"""Gradient (activation) checkpointing for the engine: each decoder layer's activations are recomputed in the
backward pass instead of kept, so a pass keeps only the layers' inputs.

transformers' own switch (``activation_checkpointing_enable``; ``gradient_checkpointing_enable`` before
5.x) wraps every decoder layer in ``torch.utils.checkpoint``, non-reentrant here: no ``requires_grad`` on the
inputs is needed, and it works with frozen weights, LoRA and ``torch.compile``d layers. The engine's packed
attention learns where each example begins from :func:`ftkit_hf.engine.attention.packed_lengths`, a context that
has ended by the time the backward pass recomputes a layer: :func:`_contexts` captures the lengths at the forward
pass and restores them for the recomputation, so the recomputed attention sees the same example boundaries
(without it the recomputation runs the row as one sequence and fails).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from . import attention


def _contexts() -> tuple[contextlib.AbstractContextManager[Any], contextlib.AbstractContextManager[Any]]:
    # Called by torch.utils.checkpoint at each checkpointed forward: (forward context, recompute context).
    return contextlib.nullcontext(), attention.packed_lengths(attention._lengths)


def _base(model: torch.nn.Module) -> Any:
    get = getattr(model, "get_base_model", None)  # peft.PeftModel
    return get() if callable(get) else model


def enable_gradient_checkpointing(model: torch.nn.Module) -> bool:
    """Recompute each decoder layer in the backward pass (the model's own switch, packing-aware).

    Args:
        model: a ``transformers`` model, or a ``peft`` model around one.

    Returns:
        True if the model supports it (``supports_gradient_checkpointing``); False and unchanged otherwise.
    """
    base = _base(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        return False
    kwargs = {"use_reentrant": False, "context_fn": _contexts}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers 5.x; the old name warns there
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True

