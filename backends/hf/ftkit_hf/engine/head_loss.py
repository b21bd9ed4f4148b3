"""Cross-entropy of an LM head whose gradient is computed in the forward pass, chunk by chunk.

The usual route, ``cross_entropy(linear(h, W))``, keeps the ``[rows, vocab]`` logits alive for the backward
pass (hundreds of MiB over a 49k-152k vocabulary), or recomputes them chunk by chunk under activation
checkpointing: a second head matmul and a second log-softmax per chunk. Here each chunk's logits are used
once: the forward pass computes the loss and, in place, the gradient of the loss with respect to those
logits (softmax minus one-hot), multiplies it back into gradients for the hidden states (and for the head's
weight and bias when they are trained), and frees the chunk. The backward pass only scales the stored
gradients by the incoming one. Measured on a 2-core CPU (docs/performance.md): the head's share of a LoRA
step drops from one forward + one recomputed forward + backward to one forward and one gradient matmul.

Without autograd (validation) no gradient is computed: only the chunked log-sum-exp.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .settings import IGNORE_INDEX

# Logits materialised at once (fp32): ~128 MiB per chunk.
CHUNK_LOGITS = 1 << 25


class Scratch:
    """Scratch tensors that outlive one call, so that every step reuses the same logits buffers.

    A fresh tensor of 100+ MiB is fresh pages from the OS (glibc maps allocations over 32 MiB on their own and
    unmaps them when freed); faulting them in on every step cost ~0.3 s of a ~12 s CPU step (measured).
    """

    def __init__(self) -> None:
        self._kept: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of ``shape``, the same memory as the last call's when it is large enough."""
        numel = math.prod(shape)
        kept = self._kept.get(name)
        if kept is None or kept.dtype != dtype or kept.device != device or kept.numel() < numel:
            kept = self._kept[name] = torch.empty(numel, dtype=dtype, device=device)
        return kept[:numel].view(shape)


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _loss_and_grad_(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The summed loss of one chunk of fp32 ``logits``, which become its gradient (in place)."""
    valid = t != IGNORE_INDEX
    safe = t.clamp(min=0)
    picked = logits.gather(1, safe[:, None]).squeeze(1)
    # Softmax in place (2x faster than logsumexp + exp on CPU: no temporary of the logits' size), and the
    # log-sum-exp from its max and sum.
    top = logits.amax(dim=-1, keepdim=True)
    grad = logits.sub_(top).exp_()
    total = grad.sum(dim=-1, keepdim=True)
    grad.div_(total)
    lse = (top + total.log()).squeeze(1)
    # The gradient of the summed loss w.r.t. the logits: softmax minus one-hot, zero on ignored rows.
    rows = valid.nonzero().squeeze(1)
    grad[rows, safe[rows]] -= 1.0
    if rows.numel() < t.numel():
        grad[~valid] = 0.0
    return torch.where(valid, lse - picked, 0.0).sum()


class _FusedHeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_rows: int, scratch: Scratch) -> torch.Tensor:
        dtype = _compute_dtype(hidden, weight)
        w = weight.detach().to(dtype)
        b = bias.detach().to(dtype) if bias is not None else None
        h_all = hidden.detach().to(dtype)
        want_h, want_w, want_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if want_b and bias is not None \
            else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # Two buffers serve every chunk (and every step, through `scratch`): fresh tensors of this size are
        # fresh pages from the OS each time, and faulting them in cost as much as the casts (measured on CPU).
        shape = (min(chunk_rows, hidden.shape[0]), weight.shape[0])
        low = scratch.get("logits", shape, dtype, hidden.device)
        fp32 = low if dtype == torch.float32 else scratch.get("logits_fp32", shape, torch.float32, hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                h = h_all[start:start + chunk_rows]
                n = h.shape[0]
                logits = torch.mm(h, w.t(), out=low[:n])
                if b is not None:
                    logits += b
                grad = fp32[:n].copy_(logits) if fp32 is not low else logits
                total += _loss_and_grad_(grad, targets[start:start + chunk_rows])
                g = low[:n].copy_(grad) if fp32 is not low else grad
                if grad_h is not None:
                    grad_h[start:start + n] = g @ w
                if grad_w is not None:
                    grad_w += (g.t() @ h).float()
                if grad_b is not None:
                    grad_b += grad.sum(0)
        ctx.save_for_backward(*(t for t in (grad_h, grad_w, grad_b) if t is not None))
        ctx.layout = (grad_h is not None, grad_w is not None, grad_b is not None)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None, hidden.dtype)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        has_h, has_w, has_b = ctx.layout
        gh = next(saved) * grad_out.to(ctx.dtypes[2]) if has_h else None
        gw = (next(saved) * grad_out).to(ctx.dtypes[0]) if has_w else None
        gb = (next(saved) * grad_out).to(ctx.dtypes[1]) if has_b else None
        return gh, gw, gb, None, None, None


def head_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       targets: torch.Tensor, chunk_logits: int = CHUNK_LOGITS,
                       scratch: Scratch | None = None) -> torch.Tensor:
    """Summed cross-entropy of ``hidden @ weight.T (+ bias)`` against ``targets``, logits in fp32.

    At most ``chunk_logits`` logits exist at any time, in the forward and the backward pass alike. Matmuls
    run in the autocast dtype when autocast is on (as ``F.linear`` would), the softmax in fp32.

    Args:
        hidden: ``[N, H]`` hidden states.
        weight: ``[V, H]`` LM head weight.
        bias: ``[V]`` or None.
        targets: ``[N]`` target ids (-100 ignored).
        chunk_logits: most logits materialised at once.
        scratch: where the logits buffers are kept between calls (None: freed after this call).
    """
    rows = hidden.shape[0]
    if rows == 0:
        return hidden.sum() * 0.0
    chunk_rows = max(1, chunk_logits // weight.shape[0])
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias))
    if needs_grad:
        out: torch.Tensor = _FusedHeadCrossEntropy.apply(hidden, weight, bias, targets, chunk_rows,
                                                         scratch or Scratch())
        return out
    dtype = _compute_dtype(hidden, weight)
    w, b = weight.to(dtype), bias.to(dtype) if bias is not None else None
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    with torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, rows, chunk_rows):
            logits = F.linear(hidden[start:start + chunk_rows].to(dtype), w, b).float()
            total += F.cross_entropy(logits, targets[start:start + chunk_rows], ignore_index=IGNORE_INDEX,
                                     reduction="sum")
    return total
