"""The bf16 CPU attention route computes what scaled_dot_product_attention computes, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ftkit_hf.engine import cpu_attention
from ftkit_hf.engine.batching import collate_packed
from ftkit_hf.engine.loss import Levers, LossComputer
from ftkit_hf.engine.precision import frozen_weights_in
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model


def _qkv(n: int, heads: int, kv_heads: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, h, n, 16, generator=g, dtype=torch.float32).to(dtype).requires_grad_()
            for h in (heads, kv_heads, kv_heads)]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out.transpose(1, 2)  # [1, n, H, D], as the route returns it


@pytest.mark.parametrize("n", [1, 5, 37, cpu_attention.BLOCK, 2 * cpu_attention.BLOCK + 7])  # 1 to 3 tiles
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (6, 2)])
def test_matches_sdpa_in_fp32(n: int, heads: int, kv_heads: int):
    q, k, v = _qkv(n, heads, kv_heads, torch.float32, seed=n)
    upstream = torch.randn(1, n, heads, 16)
    ours = cpu_attention.causal_attention(q, k, v, scale=0.3)
    ref = _sdpa(q, k, v, scale=0.3)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), upstream), torch.autograd.grad(ref, (q, k, v), upstream),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_takes_inputs_in_the_strided_layout_transformers_gives():
    # q_proj(x).view(1, T, H, D).transpose(1, 2), then one example's slice of the packed row.
    g = torch.Generator().manual_seed(1)
    rows = [torch.randn(1, 300, h, 16, generator=g).transpose(1, 2).requires_grad_() for h in (6, 2, 2)]
    q, k, v = (t[:, :, 40:250] for t in rows)
    assert not q.is_contiguous()
    upstream = torch.randn(1, 210, 6, 16)
    ours = cpu_attention.causal_attention(q, k, v)
    ref = _sdpa(q, k, v)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours, rows, upstream), torch.autograd.grad(ref, rows, upstream), strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_stays_within_bf16_rounding_of_the_fp32_result():
    q32, k32, v32 = _qkv(300, 6, 2, torch.float32, seed=3)
    q, k, v = (t.detach().to(torch.bfloat16).requires_grad_() for t in (q32, k32, v32))
    upstream = torch.randn(1, 300, 6, 16)
    ref = _sdpa(q32, k32, v32)
    ours = cpu_attention.causal_attention(q, k, v)
    torch.testing.assert_close(ours.float(), ref, rtol=2e-2, atol=2e-2)
    g_ref = torch.autograd.grad(ref, (q32, k32, v32), upstream)
    g_ours = torch.autograd.grad(ours, (q, k, v), upstream.to(torch.bfloat16))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)


def test_only_bf16_or_fp16_without_dropout_take_the_route():
    q16 = torch.zeros(1, 2, 4, 8, dtype=torch.bfloat16)
    assert cpu_attention.use_for(q16, 0.0)
    assert cpu_attention.use_for(torch.zeros(1, 2, 5000, 8, dtype=torch.float16), 0.0)
    assert not cpu_attention.use_for(q16, 0.1)
    assert not cpu_attention.use_for(q16.float(), 0.0)


def test_packed_row_gives_each_example_its_own_causal_attention():
    from ftkit_hf.engine.attention import packed_lengths, varlen_attention_forward

    lengths = [10, 200, 3, 140]
    q, k, v = _qkv(sum(lengths), 6, 2, torch.bfloat16)
    with packed_lengths(lengths):
        out, _ = varlen_attention_forward(torch.nn.Module(), q, k, v, None, scaling=0.25)
    ref = torch.cat([_sdpa(a, b, c, scale=0.25)
                     for a, b, c in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2), strict=True)],
                    dim=1)
    assert out.shape == (1, sum(lengths), 6, 16) and out.is_contiguous()
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_packed_bf16_training_loss_and_grads_match_the_sdpa_route(monkeypatch: pytest.MonkeyPatch):
    model = tiny_lora_model("llama")
    batch = collate_packed(synthetic_examples(6, seed=2))
    computer = LossComputer(model, Levers())
    results = []
    taken = []
    route = cpu_attention.causal_attention
    monkeypatch.setattr(cpu_attention, "causal_attention", lambda *a, **k: taken.append(1) or route(*a, **k))
    use_for = cpu_attention.use_for
    for route_on in (True, False):  # this route, then SDPA for every example
        monkeypatch.setattr(cpu_attention, "use_for", lambda q, dropout, on=route_on: on and use_for(q, dropout))
        model.zero_grad(set_to_none=True)
        # As the engine trains under bf16: frozen weights stored in bf16, so the attention inputs are bf16.
        with computer.context(), frozen_weights_in(model, torch.bfloat16), torch.autocast("cpu", torch.bfloat16):
            loss = computer(batch)
            loss.backward()
        grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert len(taken) == 6 * model.config.num_hidden_layers  # every example of every layer, the first time only
    assert loss_a == pytest.approx(loss_b, rel=2e-2)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=0.1, atol=2e-3, msg=name)
