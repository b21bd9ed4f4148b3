"""The compile lever: compiled decoder layers give the eager numbers and do not recompile per step."""

from __future__ import annotations

import pytest
import torch
from ftkit_hf.engine.batching import collate_packed
from ftkit_hf.engine.loss import Levers, LossComputer
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model

pytestmark = pytest.mark.slow  # inductor generates and compiles C++ on the first step (tens of seconds cold)


def _loss_and_grads(model: torch.nn.Module, fn: LossComputer, examples: list) -> tuple[float, dict]:
    model.zero_grad(set_to_none=True)
    with fn.context():
        loss = fn(collate_packed(examples))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_layers_match_eager_and_compile_once() -> None:
    torch._dynamo.reset()
    model = tiny_lora_model("llama")
    eager = LossComputer(model, Levers())
    compiled = LossComputer(model, Levers(compile=True))
    assert "compiled decoder layers" in compiled.route and "compiled" not in eager.route
    steps = [synthetic_examples(n, seed=n) for n in (3, 5, 2, 7)]  # a new example count and length every step
    graphs = []
    for examples in steps:
        ref_loss, ref_grads = _loss_and_grads(model, eager, examples)
        loss, grads = _loss_and_grads(model, compiled, examples)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert grads.keys() == ref_grads.keys() and grads
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    # The first step compiles (the first layer sees an input without grad, the others one with grad); later
    # steps with other lengths and example counts reuse those graphs.
    assert graphs[0] > 0 and graphs[-1] == graphs[1]
    # Leaving the computer's context hands the model back eager (generation, export, a later eager run).
    assert all(layer._compiled_call_impl is None for layer in compiled.decoder.layers)

