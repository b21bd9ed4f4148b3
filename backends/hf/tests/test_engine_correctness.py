"""The fast paths compute the same loss and gradients as the plain, obviously-correct computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ftkit_hf.engine.attention import packed_lengths
from ftkit_hf.engine.batching import collate_packed, collate_padded
from ftkit_hf.engine.head_loss import head_cross_entropy
from ftkit_hf.engine.loss import Levers, LossComputer
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model


def reference_loss(model, examples) -> torch.Tensor:
    """Each example run alone through model(...).logits; mean CE over all target tokens."""
    total, count = 0.0, 0
    for ex in examples:
        logits = model(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1]
        labels = torch.tensor(ex.labels[1:])
        total = total + F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
        count += int((labels != -100).sum())
    return total / count


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def loss_and_grads(model, fn) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.item(), lora_grads(model)


def assert_grads_close(a, b, rtol=1e-4, atol=1e-6):
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_and_padded_equal_each_example_alone(arch):
    model = tiny_lora_model(arch)
    examples = synthetic_examples(6, seed=1)
    ref_loss, ref_grads = loss_and_grads(model, lambda: reference_loss(model, examples))

    packed = LossComputer(model, Levers(packing=True))
    with packed.context():
        packed_loss, packed_grads = loss_and_grads(model, lambda: packed(collate_packed(examples)))
    padded = LossComputer(model, Levers(packing=False))
    padded_loss, padded_grads = loss_and_grads(model, lambda: padded(collate_padded(examples)))

    assert packed.packed and not padded.packed
    assert packed_loss == pytest.approx(ref_loss, rel=1e-5)
    assert padded_loss == pytest.approx(ref_loss, rel=1e-5)
    assert_grads_close(packed_grads, ref_grads)
    assert_grads_close(padded_grads, ref_grads)


def test_naive_packing_contaminates_and_ours_does_not():
    """The control: concatenating examples under plain causal attention changes the loss (TRL #3910)."""
    model = tiny_lora_model("llama")
    examples = synthetic_examples(4, seed=2)
    batch = collate_packed(examples)
    with torch.no_grad():
        ref = reference_loss(model, examples).item()
        # Naive packing: one long causal sequence, positions running on, attention across examples.
        hidden = model.get_base_model().model(input_ids=batch.input_ids).last_hidden_state
        naive = F.cross_entropy(model.get_base_model().lm_head(hidden)[0], batch.targets[0], ignore_index=-100).item()
        ours_fn = LossComputer(model, Levers())
        with ours_fn.context():
            ours = ours_fn(batch).item()
    assert ours == pytest.approx(ref, rel=1e-5)
    assert abs(naive - ref) > 1e-3


def test_changing_one_example_leaves_the_others_untouched():
    model = tiny_lora_model("llama")
    examples = synthetic_examples(3, seed=3)
    computer = LossComputer(model, Levers())
    with torch.no_grad(), computer.context():
        a = collate_packed(examples)
        with packed_lengths(a.seq_lengths):
            hidden_a = model.get_base_model().model(input_ids=a.input_ids,
                                                    position_ids=a.position_ids).last_hidden_state
        changed = [examples[0].__class__([7] * len(examples[0].input_ids), examples[0].labels), *examples[1:]]
        b = collate_packed(changed)
        with packed_lengths(b.seq_lengths):
            hidden_b = model.get_base_model().model(input_ids=b.input_ids,
                                                    position_ids=b.position_ids).last_hidden_state
    n0 = len(examples[0].input_ids)
    assert not torch.allclose(hidden_a[0, :n0], hidden_b[0, :n0])
    torch.testing.assert_close(hidden_a[0, n0:], hidden_b[0, n0:])


@pytest.mark.parametrize("packing", [True, False])
def test_label_only_logits_equal_full_logits(packing):
    model = tiny_lora_model("llama")
    examples = synthetic_examples(5, seed=4, prompt_fraction=0.7)
    batch = collate_packed(examples) if packing else collate_padded(examples)
    results = []
    for label_only in (True, False):
        computer = LossComputer(model, Levers(packing=packing, label_only_logits=label_only))
        with computer.context():
            results.append(loss_and_grads(model, lambda c=computer: c(batch)))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert_grads_close(grads_a, grads_b)


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("frozen_head", [False, True])
def test_fused_head_cross_entropy_matches_autograd_reference(with_bias: bool, frozen_head: bool):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=not frozen_head)
    bias = torch.randn(50, requires_grad=not frozen_head) if with_bias else None
    targets = torch.randint(0, 50, (37,))
    targets[::5] = -100
    params = [t for t in (hidden, weight, bias) if t is not None and t.requires_grad]
    ref = F.cross_entropy(F.linear(hidden, weight, bias), targets, ignore_index=-100, reduction="sum")
    g_ref = torch.autograd.grad(ref * 0.5, params)  # a non-unit upstream gradient reaches every input
    for chunk_logits in (10_000, 50 * 8):  # one chunk; 5 chunks of 8 rows
        ours = head_cross_entropy(hidden, weight, bias, targets, chunk_logits=chunk_logits)
        torch.testing.assert_close(ours, ref)
        for a, b in zip(torch.autograd.grad(ours * 0.5, params), g_ref, strict=True):
            torch.testing.assert_close(a, b)
    with torch.no_grad():  # validation: no gradient work, same number
        torch.testing.assert_close(head_cross_entropy(hidden, weight, bias, targets, chunk_logits=400), ref.detach())


def test_fused_head_cross_entropy_under_bf16_autocast_follows_the_bf16_reference():
    torch.manual_seed(1)
    hidden = torch.randn(64, 32, requires_grad=True)
    weight = torch.randn(300, 32) * 0.2
    targets = torch.randint(0, 300, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="sum")
        ours = head_cross_entropy(hidden, weight, None, targets, chunk_logits=300 * 16)
    (g_ref,) = torch.autograd.grad(ref, hidden)
    (g_ours,) = torch.autograd.grad(ours, hidden)
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(g_ours, g_ref, rtol=2e-2, atol=2e-3)


def test_unknown_architecture_takes_the_generic_route_and_matches_reference():
    model = tiny_lora_model("gpt2")
    examples = synthetic_examples(4, seed=5)
    computer = LossComputer(model, Levers())
    assert not computer.known and not computer.packed
    with torch.no_grad():
        ours = computer(collate_padded(examples)).item()
        ref = reference_loss(model, examples).item()
    assert ours == pytest.approx(ref, rel=1e-5)
