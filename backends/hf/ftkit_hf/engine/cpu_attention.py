"""Causal attention of one bf16 sequence on a CPU, in tiles of query rows, with batched matmuls.

PyTorch's CPU flash-attention kernel reaches about a sixth of the CPU's bf16 matmul speed on the lengths of
fine-tuning examples. Here the queries are cut into tiles of :data:`BLOCK` tokens; a tile's scores against
the keys up to its last token (nothing above the diagonal beyond its own tile) come from one batched matmul
over the key/value heads (the query heads sharing a key/value head are stacked, so grouped-query attention
needs no copy of the keys), then the softmax and a second matmul. Nothing of the size ``n x n`` is kept: the
backward pass recomputes each tile's probabilities (one more matmul) and accumulates the key and value
gradients in fp32, so memory grows with ``n``, as with the flash kernel.

Queries are laid out token-major (``[kv_heads, n * groups, dim]``: the rows of a tile are contiguous), and the
result comes back token-major too, ``[1, n, Hq, D]``, the layout transformers' attention interface returns.

Scores and probabilities are bf16, as in the matmul route it replaces; the softmax reduces in fp32 internally.
Measured on a 2-core AVX512-BF16 CPU (9 query heads, 3 key/value heads, head dim 64), forward + backward,
against ``scaled_dot_product_attention``: 1.1x at 64 tokens, 1.6x at 384, 1.5x at 512, 1.3x at 768-1024,
1.3x at 2,048 (``docs/performance.md``; ``python benchmarks/cpu_attention.py``). No faster in fp32 (0.53-1.07x
on a 2-core Xeon), so only bf16/fp16 take this route (:func:`use_for`).
"""

from __future__ import annotations

from typing import Any

import torch

BLOCK = 128  # query tokens per tile: 64 and 256 were slower from 256 tokens up
_masks: dict[tuple[int, str, torch.dtype], torch.Tensor] = {}


def use_for(query: torch.Tensor, dropout: float) -> bool:
    """Whether this route is the faster one for ``query`` ``[1, H, n, D]``."""
    return query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16) and dropout == 0.0


def _diagonal_mask(groups: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[BLOCK * groups, BLOCK]``: 0 where query row ``r`` (token ``r // groups``) may see key ``j``, else -inf."""
    key = (groups, str(device), dtype)
    mask = _masks.get(key)
    if mask is None:
        token = torch.arange(BLOCK, device=device).repeat_interleave(groups)
        future = torch.arange(BLOCK, device=device)[None, :] > token[:, None]
        mask = _masks[key] = torch.zeros(future.shape, device=device, dtype=dtype).masked_fill_(future, float("-inf"))
    return mask


def _tile_probs(q: torch.Tensor, k: torch.Tensor, start: int, end: int, groups: int) -> torch.Tensor:
    """Softmax probabilities of the query tokens ``start:end`` over the keys ``:end``: ``[kv_heads, rows, end]``."""
    scores = torch.bmm(q[:, start * groups:end * groups], k[:, :end].transpose(1, 2))
    mask = _diagonal_mask(groups, q.device, q.dtype)[:(end - start) * groups, :end - start]
    scores[:, :, start:end].add_(mask)
    return torch.softmax(scores, dim=-1)


class _CausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float) -> torch.Tensor:
        _, heads, n, dim = query.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        q = torch.empty(kv_heads, n, groups, dim, dtype=query.dtype, device=query.device)
        torch.mul(query[0].unflatten(0, (kv_heads, groups)).transpose(1, 2), scale, out=q)  # token-major rows
        q = q.view(kv_heads, n * groups, dim)
        k, v = key[0].contiguous(), value[0].contiguous()
        out = torch.empty_like(q)
        for start in range(0, n, BLOCK):
            end = min(n, start + BLOCK)
            torch.bmm(_tile_probs(q, k, start, end, groups), v[:, :end], out=out[:, start * groups:end * groups])
        ctx.save_for_backward(q, k, v, out)
        ctx.scale = scale
        return out.view(kv_heads, n, heads // kv_heads, dim).transpose(0, 1).reshape(1, n, heads, dim)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, out = ctx.saved_tensors
        kv_heads, rows, dim = q.shape
        n = k.shape[1]
        groups = rows // n
        grad_out = grad_out[0].unflatten(1, (kv_heads, groups)).transpose(0, 1).reshape(q.shape).to(q.dtype)
        # Softmax backward: dS = P * (dP - rowsum(dO * O)); the row sums once for all tiles.
        row_dot = (grad_out.float() * out.float()).sum(-1, keepdim=True).to(q.dtype)
        grad_q = torch.empty_like(q)
        grad_k = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        grad_v = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        for start in range(0, n, BLOCK):
            end = min(n, start + BLOCK)
            tile = slice(start * groups, end * groups)
            probs = _tile_probs(q, k, start, end, groups)
            grad_v[:, :end] += torch.bmm(probs.transpose(1, 2), grad_out[:, tile])
            grad_scores = torch.bmm(grad_out[:, tile], v[:, :end].transpose(1, 2)).sub_(row_dot[:, tile]).mul_(probs)
            torch.bmm(grad_scores, k[:, :end], out=grad_q[:, tile])
            grad_k[:, :end] += torch.bmm(grad_scores.transpose(1, 2), q[:, tile])  # sums over the stacked heads
        heads = kv_heads * groups
        grad_query = grad_q.mul_(ctx.scale).view(kv_heads, n, groups, dim).transpose(1, 2).reshape(1, heads, n, dim)
        return grad_query, grad_k.to(k.dtype).unsqueeze(0), grad_v.to(v.dtype).unsqueeze(0), None


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     scale: float | None = None) -> torch.Tensor:
    """Causal attention of one sequence: ``query`` ``[1, Hq, n, D]``, ``key``/``value`` ``[1, Hkv, n, D]``.

    Returns ``[1, n, Hq, D]``: ``scaled_dot_product_attention(..., is_causal=True, enable_gqa=True)``
    transposed, as transformers' attention functions return it.
    """
    if scale is None:
        scale = query.shape[-1] ** -0.5
    out: torch.Tensor = _CausalAttention.apply(query, key, value, scale)
    return out
