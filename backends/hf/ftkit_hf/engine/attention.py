"""Attention over packed examples that never crosses an example boundary.

Packing several examples into one row removes padding, but plain SDPA would let a token attend to the
examples packed before it (TRL #3910), and a dense block-diagonal mask costs O(T²) for the whole row. This
module registers an attention implementation, ``ftkit_varlen``, with transformers' attention registry:

* with ``flash-attn`` installed on CUDA, ``flash_attn_varlen_func`` over ``cu_seqlens`` (one kernel);
* otherwise (CPU, MPS, CUDA without flash-attn), causal attention on each example separately — exact, and
  the attention cost is Σ nᵢ², not T²: SDPA, or on a CPU in bf16 the tiled batched-matmul route of
  :mod:`.cpu_attention` (1.1-1.6x faster there).

It also registers a mask builder that returns None, so transformers does not build a T×T mask we ignore.
The model's ``config._attn_implementation`` is switched only while the engine runs (:func:`varlen_attention`).

The example lengths reach the attention through :func:`packed_lengths`, not through the model's keyword
arguments: a Python list passed into a ``torch.compile``d decoder layer is guarded on its length and
would recompile the layer for every new number of examples in a step. The attention itself stays out of
the compiled graph (its loop over examples depends on those lengths).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from . import cpu_attention

NAME = "ftkit_varlen"
_registered = False
_lengths: list[int] | None = None  # the example lengths of the packed row being run (see packed_lengths)


@contextlib.contextmanager
def packed_lengths(lengths: list[int] | None) -> Iterator[None]:
    """Tell :func:`varlen_attention_forward` where the examples of the packed row begin and end."""
    global _lengths
    previous, _lengths = _lengths, lengths
    try:
        yield
    finally:
        _lengths = previous


def _flash_varlen() -> Any:
    try:
        from flash_attn import flash_attn_varlen_func  # optional extra; no wheel on PyPI for most setups
    except Exception:
        return None
    return flash_attn_varlen_func


@torch.compiler.disable
def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None,
                             dropout: float = 0.0, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Causal attention per packed example.

    Shapes follow transformers' attention interface: ``query`` is ``[1, Hq, T, D]``, ``key``/``value`` are
    ``[1, Hkv, T, D]``; the result is ``[1, T, Hq, D]``. The boundaries come from :func:`packed_lengths`
    (Python ints) and the ``cu_seq_lens_q`` keyword argument (int32 tensor, for flash-attn).
    """
    lengths = _lengths
    if lengths is not None and sum(lengths) != query.shape[2]:
        raise ValueError(f"packed lengths sum to {sum(lengths)}, but the row has {query.shape[2]} tokens")
    if lengths is None:  # called without packing info (e.g. generation after training): one sequence
        lengths = [query.shape[2]]
    if query.shape[0] != 1:
        raise ValueError("ftkit_varlen attention expects one packed row (batch size 1)")
    groups = query.shape[1] // key.shape[1]
    if query.is_cuda and dropout == 0.0:
        flash = _flash_varlen()
        cu = kwargs.get("cu_seq_lens_q")
        if flash is not None and cu is not None and query.dtype in (torch.bfloat16, torch.float16):
            q = query[0].transpose(0, 1)  # [T, H, D]
            k = key[0].transpose(0, 1)
            v = value[0].transpose(0, 1)
            out = flash(q, k, v, cu, cu, max(lengths), max(lengths), dropout_p=0.0, softmax_scale=scaling,
                        causal=True)
            return out.unsqueeze(0), None
    outs = []  # per example [1, n, Hq, D]
    for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2),
                       strict=True):
        if cpu_attention.use_for(q, dropout):
            outs.append(cpu_attention.causal_attention(q, k, v, scaling))
        else:
            outs.append(F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling, dropout_p=dropout,
                                                       enable_gqa=groups > 1).transpose(1, 2))
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    # The boundaries travel as cu_seqlens; a T×T mask would only cost time and memory.
    return None


def register() -> None:
    """Register ``ftkit_varlen`` with transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, _no_mask)
    _registered = True


@contextlib.contextmanager
def varlen_attention(config: Any) -> Iterator[None]:
    """Switch a model config to ``ftkit_varlen`` for the duration of the block, then restore it."""
    register()
    previous = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = previous
