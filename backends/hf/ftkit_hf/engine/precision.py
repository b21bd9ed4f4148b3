"""Mixed precision helpers: autocast, bf16 storage of frozen weights, and fp16 loss scaling.

Autocast casts a weight to bf16 every time a matmul uses it, and caches the cast only for leaf tensors
that require grad. In LoRA the big base weights are frozen, so they are recast on every forward pass and
again for the backward matmuls. Storing the frozen Linear weights in bf16 for the duration of training
removes those casts; the matmul sees exactly the same bf16 values as under autocast, so the numbers do not
change. Embeddings, norms, LoRA weights, the optimizer state and the loss stay fp32.

The original fp32 tensors are kept and put back when training ends, so the model the caller gets back is
bit-for-bit the model it passed in (apart from the trained parameters).

fp16 (GPUs without bf16: T4, V100) has bf16's 16 bits but 5 exponent bits instead of 8: gradients below about
6e-8 flush to zero. :class:`LossScaler` multiplies the loss by a large factor before the backward pass and divides
the gradients by it before the optimizer step (``torch.amp.GradScaler``); a step whose gradients overflowed is
skipped and the factor halved. Only the matmuls run in fp16 (the frozen ``nn.Linear`` weights may be stored in
it); the residual stream, norms and the loss stay fp32, because fp16's range (65504) is what breaks models there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

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


class LossScaler:
    """Loss scaling for fp16 training; for any other dtype every method is a pass-through.

    Args:
        device: the training device (``cuda``, ``cpu``; fp16 on a CPU is emulated, but the scaler works there,
            which is how it is tested without a GPU).
        dtype: the autocast dtype of the run (None for fp32).
        init_scale: the first loss factor (``GradScaler``'s default, 2**16).
    """

    def __init__(self, device: str, dtype: torch.dtype | None, init_scale: float = 2.0**16) -> None:
        self.enabled = dtype == torch.float16
        self._scaler = torch.amp.GradScaler(device, init_scale=init_scale, enabled=self.enabled)
        self.skipped = 0  # optimizer steps skipped because the gradients were inf/NaN

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` times the current factor (``loss`` itself when disabled)."""
        return self._scaler.scale(loss)

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Unscale the gradients, step ``optimizer`` unless they overflowed, update the factor.

        Returns:
            Whether the optimizer stepped (always True when disabled).
        """
        if not self.enabled:
            optimizer.step()
            return True
        before = self._scaler.get_scale()
        self._scaler.step(optimizer)
        self._scaler.update()
        # GradScaler skips a step exactly when it lowers the factor (found inf): the public way to tell.
        stepped = self._scaler.get_scale() >= before
        self.skipped += not stepped
        return stepped

    @property
    def factor(self) -> float:
        """The current loss factor (1.0 when disabled)."""
        return float(self._scaler.get_scale()) if self.enabled else 1.0

    def state_dict(self) -> dict[str, Any]:
        """The factor and its growth tracker, for checkpoints (empty when disabled)."""
        return self._scaler.state_dict() if self.enabled else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty state, from a checkpoint without scaling, is ignored)."""
        if self.enabled and state:
            self._scaler.load_state_dict(state)
