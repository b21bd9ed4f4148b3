"""Forward + backward time of one example's causal attention on CPU: ftkit's tiled route against SDPA.

The shapes are SmolLM2-135M's (9 query heads, 3 key/value heads, head dim 64). For each length the routes
run interleaved on fresh inputs of the same values, the first round is dropped, and the median is reported,
with the largest difference from SDPA's input gradients. In fp32 a third route, ``untiled`` (plain matmuls
over the full ``n x n`` scores, probabilities kept), shows what the textbook formulation costs in place.
``--parts`` times each of that route's matmuls and softmaxes alone, on warm operands, at 256 and 512 tokens.

    python benchmarks/cpu_attention.py                   # fp32 and bf16, 64..2048 tokens
    python benchmarks/cpu_attention.py --dtype fp32 --parts

Which route the engine takes per precision is ``ftkit_hf.engine.cpu_attention.use_for``; this script is how
that choice was measured (``docs/performance.md``).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, DIM = 9, 3, 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _inputs(n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Query/key/value laid out as transformers passes them (head-major views of token-major rows), and dO."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, n, HEADS, DIM, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    k = torch.randn(1, n, KV_HEADS, DIM, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    v = torch.randn(1, n, KV_HEADS, DIM, generator=g).to(dtype).transpose(1, 2).requires_grad_()
    grad = torch.randn(1, n, HEADS, DIM, generator=g).to(dtype)
    return q, k, v, grad


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2)


def _tiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from ftkit_hf.engine import cpu_attention

    return cpu_attention.causal_attention(q, k, v)


@functools.cache
def _causal_mask(n: int, groups: int) -> torch.Tensor:
    """``[n * groups, n]`` additive mask of token-major query rows (built once per length, as the engine would)."""
    future = torch.arange(n)[None, :] > torch.arange(n).repeat_interleave(groups)[:, None]
    return torch.zeros(future.shape).masked_fill_(future, float("-inf"))


class _Untiled(torch.autograd.Function):
    """Plain matmul attention: full ``n x n`` scores, probabilities kept for the backward pass (fp32 only)."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        _, heads, n, dim = query.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        q = (query[0].unflatten(0, (kv_heads, groups)).transpose(1, 2) * dim**-0.5).reshape(kv_heads, n * groups, dim)
        k, v = key[0].contiguous(), value[0].contiguous()
        probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)).add_(_causal_mask(n, groups)), -1)
        out = torch.bmm(probs, v)
        ctx.save_for_backward(q, k, v, out, probs)
        return out.view(kv_heads, n, groups, dim).transpose(0, 1).reshape(1, n, heads, dim)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v, out, probs = ctx.saved_tensors
        kv_heads, n, dim = k.shape
        groups = q.shape[1] // n
        go = grad_out[0].unflatten(1, (kv_heads, groups)).transpose(0, 1).reshape(q.shape)
        grad_v = torch.bmm(probs.transpose(1, 2), go)
        grad_s = torch.bmm(go, v.transpose(1, 2)).sub_((go * out).sum(-1, keepdim=True)).mul_(probs)
        grad_q = torch.bmm(grad_s, k).mul_(dim**-0.5).view(kv_heads, n, groups, dim).transpose(1, 2)
        grad_k = torch.bmm(grad_s.transpose(1, 2), q)
        return grad_q.reshape(1, kv_heads * groups, n, dim), grad_k.unsqueeze(0), grad_v.unsqueeze(0)


def _untiled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = _Untiled.apply(q, k, v)
    return out


ROUTES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sdpa": _sdpa, "ftkit_tiled": _tiled, "untiled": _untiled}


def _run(route: str, n: int, dtype: torch.dtype, seed: int) -> tuple[float, list[torch.Tensor]]:
    q, k, v, grad = _inputs(n, dtype, seed)
    start = time.perf_counter()
    ROUTES[route](q, k, v).backward(grad)
    seconds = time.perf_counter() - start
    return seconds, [t.grad for t in (q, k, v) if t.grad is not None]


def compare(n: int, dtype: torch.dtype, rounds: int) -> dict[str, float]:
    """Median milliseconds of each route at length ``n``, SDPA's time over each, and the largest gradient
    difference from SDPA."""
    routes = [r for r in ROUTES if r != "untiled" or dtype == torch.float32]
    times: dict[str, list[float]] = {r: [] for r in routes}
    grads: dict[str, list[torch.Tensor]] = {}
    for i in range(rounds + 1):
        for route in routes:
            seconds, grads[route] = _run(route, n, dtype, seed=i)
            if i:  # round 0 warms caches and allocator
                times[route].append(seconds)
    row: dict[str, float] = {"tokens": n}
    sdpa = statistics.median(times["sdpa"])
    for route in routes:
        row[f"{route}_ms"] = statistics.median(times[route]) * 1e3
        if route != "sdpa":
            row[f"{route}_speedup"] = sdpa * 1e3 / row[f"{route}_ms"]
            row[f"{route}_max_grad_diff"] = max((a.float() - b.float()).abs().max().item()
                                                for a, b in zip(grads["sdpa"], grads[route], strict=True))
    return row


def parts(n: int, rounds: int) -> dict[str, float]:
    """Milliseconds of each part of untiled fp32 attention for one example (full ``n x n`` scores)."""
    groups = HEADS // KV_HEADS
    q = torch.randn(KV_HEADS, groups * n, DIM)
    k, v, do = torch.randn(KV_HEADS, n, DIM), torch.randn(KV_HEADS, n, DIM), torch.randn(KV_HEADS, groups * n, DIM)
    p = torch.softmax(torch.bmm(q, k.transpose(1, 2)), -1)
    dp = torch.bmm(do, v.transpose(1, 2))
    ops: dict[str, Callable[[], torch.Tensor]] = {
        "scores QK^T": lambda: torch.bmm(q, k.transpose(1, 2)),
        "softmax": lambda: torch.softmax(p, -1),
        "out PV": lambda: torch.bmm(p, v),
        "dV = P^T dO": lambda: torch.bmm(p.transpose(1, 2), do),
        "dP = dO V^T": lambda: torch.bmm(do, v.transpose(1, 2)),
        "softmax backward": lambda: torch._softmax_backward_data(dp, p, -1, torch.float32),
        "dQ = dS K": lambda: torch.bmm(dp, k),
        "dK = dS^T Q": lambda: torch.bmm(dp.transpose(1, 2), q),
    }
    result: dict[str, float] = {"tokens": n}
    matmul_flops = 2 * KV_HEADS * groups * n * n * DIM
    for name, op in ops.items():
        op()
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            op()
            samples.append(time.perf_counter() - start)
        ms = statistics.median(samples) * 1e3
        result[f"{name} ms"] = ms
        if "softmax" not in name:
            result[f"{name} GFLOP/s"] = matmul_flops / ms / 1e6
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    p.add_argument("--lengths", default="64,128,256,384,512,768,1024,2048")
    p.add_argument("--rounds", type=int, default=11, help="timed rounds per length (after one warm-up round)")
    p.add_argument("--parts", action="store_true", help="also time the parts of untiled fp32 attention")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the engine's choice)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    from ftkit_hf.engine.device import apply_plan, cpu_model_name, plan_device

    from ftkit.atomic import atomic_write_text

    plan = plan_device("cpu", threads=a.threads)  # the engine's threads for a CPU run
    apply_plan(plan)
    lengths = [int(x) for x in a.lengths.split(",")]
    dtypes = ["fp32", "bf16"] if a.dtype == "both" else [a.dtype]
    report: dict[str, object] = {"date": date.today().isoformat(), "cpu": cpu_model_name(),
                                 "engine_choice": plan.describe(), "threads": torch.get_num_threads(),
                                 "torch": torch.__version__}
    for name in dtypes:
        rows = []
        for n in lengths:
            row = compare(n, DTYPES[name], a.rounds)
            rows.append(row)
            others = ", ".join(f"{r} {row[f'{r}_ms']:8.2f} ms ({row[f'{r}_speedup']:.2f}x, grad diff "
                               f"{row[f'{r}_max_grad_diff']:.0e})" for r in ROUTES if f"{r}_speedup" in row)
            print(f"{name} {n:5d} tokens: sdpa {row['sdpa_ms']:8.2f} ms, {others}", flush=True)
        report[name] = rows
    if a.parts:
        part_rows = [parts(n, a.rounds) for n in (256, 512)]
        report["fp32_parts"] = part_rows
        for part in part_rows:
            print(" | ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in part.items()))
    if a.out:
        atomic_write_text(a.out, json.dumps(report, indent=2) + "\n")
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
