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


@pytest.mark.parametrize("n", [1, 5, 37])
@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (6, 2)])
def test_matches_sdpa_in_fp32(n: int, heads: int, kv_heads: int):
    q, k, v = _qkv(n, heads, kv_heads, torch.float32, seed=n)
    upstream = torch.randn(1, heads, n, 16)
    ours = cpu_attention.causal_attention(q, k, v, scale=0.3)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3, enable_gqa=heads != kv_heads)
    torch.testing.assert_close(ours, ref)
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), upstream), torch.autograd.grad(ref, (q, k, v), upstream),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_stays_within_bf16_rounding_of_the_fp32_result():
    q32, k32, v32 = _qkv(200, 6, 2, torch.float32, seed=3)
    q, k, v = (t.detach().to(torch.bfloat16).requires_grad_() for t in (q32, k32, v32))
    upstream = torch.randn(1, 6, 200, 16)
    ref = F.scaled_dot_product_attention(q32, k32, v32, is_causal=True, enable_gqa=True)
    ours = cpu_attention.causal_attention(q, k, v)
    torch.testing.assert_close(ours.float(), ref, rtol=2e-2, atol=2e-2)
    g_ref = torch.autograd.grad(ref, (q32, k32, v32), upstream)
    g_ours = torch.autograd.grad(ours, (q, k, v), upstream.to(torch.bfloat16))
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)


def test_only_short_bf16_sequences_without_dropout_take_the_route():
    q16 = torch.zeros(1, 2, 4, 8, dtype=torch.bfloat16)
    assert cpu_attention.use_for(q16, 0.0)
    assert not cpu_attention.use_for(torch.zeros(1, 2, cpu_attention.MAX_TOKENS + 1, 8, dtype=torch.bfloat16), 0.0)
    assert not cpu_attention.use_for(q16, 0.1)
    assert not cpu_attention.use_for(q16.float(), 0.0)


def test_packed_bf16_training_loss_and_grads_match_the_sdpa_route(monkeypatch: pytest.MonkeyPatch):
    model = tiny_lora_model("llama")
    batch = collate_packed(synthetic_examples(6, seed=2))
    computer = LossComputer(model, Levers())
    results = []
    taken = []
    route = cpu_attention.causal_attention
    monkeypatch.setattr(cpu_attention, "causal_attention", lambda *a, **k: taken.append(1) or route(*a, **k))
    for limit in (cpu_attention.MAX_TOKENS, 0):  # this route, then SDPA for every example
        monkeypatch.setattr(cpu_attention, "MAX_TOKENS", limit)
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


def test_a_layer_keeps_at_most_its_budget_of_probabilities(monkeypatch: pytest.MonkeyPatch):
    from ftkit_hf.engine.attention import packed_lengths, varlen_attention_forward

    taken: list[int] = []
    route = cpu_attention.causal_attention
    monkeypatch.setattr(cpu_attention, "causal_attention", lambda q, *a: taken.append(q.shape[2]) or route(q, *a))
    lengths = [10, 20, 30, 40]
    q, k, v = _qkv(sum(lengths), 6, 2, torch.bfloat16)
    per_token_sq = 6 * 2  # heads x bytes per bf16 probability
    monkeypatch.setattr(cpu_attention, "LAYER_BUDGET_BYTES", per_token_sq * (10**2 + 20**2 + 30**2))
    with packed_lengths(lengths):
        out, _ = varlen_attention_forward(torch.nn.Module(), q, k, v, None, scaling=0.25)
    assert taken == [10, 20, 30]  # the 40-token example would exceed the budget: SDPA
    ref = torch.cat([F.scaled_dot_product_attention(a, b, c, is_causal=True, scale=0.25, enable_gqa=True)
                     for a, b, c in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2), strict=True)],
                    dim=2).transpose(1, 2)
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)
