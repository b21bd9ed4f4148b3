"""The fused LoRA forward computes what PEFT's forward computes, and leaves every other layer to PEFT."""

from __future__ import annotations

import pytest
import torch
from ftkit_hf.engine.batching import collate_packed
from ftkit_hf.engine.lora_forward import eligible, fused_lora_forward
from ftkit_hf.engine.loss import Levers, LossComputer
from ftkit_hf.engine.precision import frozen_weights_in
from ftkit_hf.engine.testing import synthetic_examples, tiny_causal_lm, tiny_lora_model


def _loss_and_grads(model, batch, fused: bool, bf16: bool = False):
    computer = LossComputer(model, Levers())
    model.zero_grad(set_to_none=True)
    dtype = torch.bfloat16 if bf16 else None
    with computer.context(), frozen_weights_in(model, dtype), fused_lora_forward(model, fused) as switched, \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = computer(batch)
        loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads, switched


@pytest.mark.parametrize("bf16", [False, True])
def test_same_loss_and_gradients_as_peft(bf16: bool):
    model = tiny_lora_model("llama")
    for name, p in model.named_parameters():  # B starts at zero in PEFT: make it non-zero so A gets gradients
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    batch = collate_packed(synthetic_examples(5, seed=1))
    loss_peft, grads_peft, none = _loss_and_grads(model, batch, fused=False, bf16=bf16)
    loss_ours, grads_ours, switched = _loss_and_grads(model, batch, fused=True, bf16=bf16)
    assert none == 0 and switched == sum(eligible(m) for m in model.modules()) > 0
    tol = {"rtol": 2e-2, "atol": 2e-3} if bf16 else {"rtol": 1e-5, "atol": 1e-6}
    assert loss_ours == pytest.approx(loss_peft, rel=tol["rtol"])
    assert grads_ours.keys() == grads_peft.keys() and any("lora_A" in n for n in grads_ours)
    for name in grads_peft:
        torch.testing.assert_close(grads_ours[name], grads_peft[name], **tol, msg=name)


def test_dropout_and_scaling_follow_peft():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_causal_lm("llama"), LoraConfig(r=4, lora_alpha=12, lora_dropout=0.3,
                                                               target_modules=["q_proj", "up_proj"]))
    layer = next(m for m in model.modules() if eligible(m))
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.1)
    x = torch.randn(2, 7, layer.in_features)
    torch.manual_seed(5)
    expected = layer(x)
    with fused_lora_forward(model):
        torch.manual_seed(5)  # the same dropout mask
        ours = layer(x)
    torch.testing.assert_close(ours, expected)
    assert "forward" not in vars(layer)  # PEFT's forward is back


def test_other_adapters_keep_peft_forward():
    from peft import LoraConfig, get_peft_model

    dora = get_peft_model(tiny_causal_lm("llama"), LoraConfig(r=4, use_dora=True, target_modules=["q_proj"]))
    layer = next(m for m in dora.modules() if eligible(m))
    assert "default" in layer.lora_variant
    x = torch.randn(1, 3, layer.in_features)
    with fused_lora_forward(dora) as switched:
        assert switched >= 1 and "forward" in vars(layer)
        ours = layer(x)  # falls through to PEFT: DoRA is a variant
    torch.testing.assert_close(ours, layer(x))
    biased = get_peft_model(tiny_causal_lm("llama"), LoraConfig(r=4, lora_bias=True, target_modules=["q_proj"]))
    with fused_lora_forward(biased) as switched:
        assert switched == 0  # a bias on B: PEFT's forward
