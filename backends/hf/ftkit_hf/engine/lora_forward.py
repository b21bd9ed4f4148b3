"""LoRA's forward pass for training, scaled on the rank side with the addition inside the B matmul.

PEFT computes ``result + lora_B(lora_A(dropout(x))) * scaling``: a multiplication and an addition over the
layer's whole output (``tokens x out_features``) in the forward pass and another multiplication in the
backward pass, for each of the seven adapted projections of every decoder layer. The same value is
``addmm(result, lora_A(dropout(x)) * scaling, lora_B.weight.T)``: the scale multiplies the rank-r activations
(r / out_features of the work) and the addition happens in the matmul's output. On a CPU these full-size
elementwise passes cost about a tenth of a LoRA step (docs/performance.md).

:func:`fused_lora_forward` installs this forward on plain LoRA ``Linear`` layers for the duration of a block:
one active adapter, no variant (DoRA and others keep PEFT's forward), no bias on B, not merged, and matching
dtypes unless autocast is on. Any other call falls through to PEFT's own forward.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch


def _peft_lora_linear() -> type:
    from peft.tuners.lora.layer import Linear

    return Linear


def _fast_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    peft_forward = type(self).forward
    if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
        return peft_forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    if name not in self.lora_A or name in self.lora_variant:
        return peft_forward(self, x, *args, **kwargs)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    if not torch.is_autocast_enabled(x.device.type) and not (
            x.dtype == lora_a.weight.dtype == lora_b.weight.dtype == self.base_layer.weight.dtype):
        return peft_forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    low = lora_a(self.lora_dropout[name](x)) * self.scaling[name]
    flat = torch.addmm(result.reshape(-1, result.shape[-1]), low.reshape(-1, low.shape[-1]), lora_b.weight.t())
    return flat.view(result.shape)


def eligible(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a plain PEFT LoRA ``Linear`` this forward can serve."""
    if type(module) is not _peft_lora_linear():
        return False
    return all(getattr(b, "bias", None) is None for b in module.lora_B.values())  # type: ignore[operator]


@contextlib.contextmanager
def fused_lora_forward(model: torch.nn.Module, enabled: bool = True) -> Iterator[int]:
    """Serve the eligible LoRA layers of ``model`` with the fused forward inside the block.

    Yields:
        How many layers were switched.
    """
    switched = [m for m in model.modules() if eligible(m)] if enabled else []
    for m in switched:
        m.forward = types.MethodType(_fast_forward, m)
    try:
        yield len(switched)
    finally:
        for m in switched:
            del m.forward  # the class's (PEFT's) forward again
