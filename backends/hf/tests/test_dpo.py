"""DPO in ftkit's engine: the same loss and gradients as TRL's DPOTrainer, packed or not."""

from __future__ import annotations

import pytest
import torch
from ftkit_hf.engine.dpo import (
    DPOSettings,
    PreferencePair,
    SequenceLogProbs,
    collate_pairs,
    dpo_loss,
    head_token_logps,
    reference_logps,
)
from ftkit_hf.engine.loss import Levers, LossComputer
from ftkit_hf.engine.settings import IGNORE_INDEX, TokenizedExample
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model

from ftkit.errors import ConfigError


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def _ftkit_loss_and_grads(model, pairs, settings: DPOSettings, packing: bool = True):
    """ftkit's DPO step: reference cached first (adapter disabled), then the policy pass and the loss."""
    computer = LossComputer(model, Levers(packing=packing))
    seq = SequenceLogProbs(computer)
    with computer.context():
        ref = reference_logps(model, seq, pairs, batch_tokens=1 << 20, device="cpu")
        model.zero_grad(set_to_none=True)
        sums, counts = seq(collate_pairs(pairs, computer.packed))
        out = dpo_loss(sums, ref, counts, settings)
        out.loss.backward()
    return out, _grads(model)


def _random_pairs(n: int, seed: int) -> list[PreferencePair]:
    """Pairs sharing each prompt, answers of different lengths (the tiny vocabulary of tiny_lora_model)."""
    seqs = synthetic_examples(2 * n, seed=seed, prompt_fraction=0.0)
    pairs = []
    for i in range(n):
        prompt = seqs[2 * i].input_ids[:5]
        a, b = seqs[2 * i].input_ids[5:], seqs[2 * i + 1].input_ids[3:]
        pairs.append(PreferencePair(
            TokenizedExample(prompt + a, [IGNORE_INDEX] * 5 + a),
            TokenizedExample(prompt + b, [IGNORE_INDEX] * 5 + b)))
    return pairs


@pytest.fixture(scope="module")
def trl_setup(tiny_llama_dir, smollm2_tokenizer, tmp_path_factory):
    """A TRL DPOTrainer over the tiny Llama with a LoRA adapter (B randomised so policy != reference), and one
    collated batch of real chat preference rows."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
             "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"I think it might be {2 * i + 1}, or not" + " really" * i}]}
            for i in range(4)]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
    torch.manual_seed(0)

    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), beta=0.5, loss_type="sigmoid",
                     per_device_train_batch_size=4, report_to=[], use_cpu=True, bf16=False, max_steps=1)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=smollm2_tokenizer, peft_config=lora)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer, batch


def _pairs_from_trl(batch) -> list[PreferencePair]:
    """TRL's batch rows (chosen first, then rejected; right-padded) as ftkit pairs of the very same tokens."""
    seqs = []
    for ids, attn, completion in zip(batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                     strict=True):
        n = int(attn.sum())
        ids_l = ids[:n].tolist()
        seqs.append(TokenizedExample(ids_l, [t if c else IGNORE_INDEX for t, c in zip(ids_l, completion[:n].tolist(),
                                                                                       strict=True)]))
    half = len(seqs) // 2
    return [PreferencePair(seqs[i], seqs[half + i]) for i in range(half)]


@pytest.mark.slow  # builds a TRL trainer (dataset preparation, accelerate)
@pytest.mark.parametrize(("loss_type", "smoothing", "sft"),
                         [("sigmoid", 0.0, 0.0), ("ipo", 0.0, 0.0), ("robust", 0.1, 0.0), ("sigmoid", 0.0, 0.5)])
def test_loss_and_lora_gradients_match_trl_dpo_trainer(trl_setup, loss_type, smoothing, sft):
    trainer, batch = trl_setup
    model = trainer.model
    # The attributes DPOTrainer.__init__ sets from DPOConfig(loss_type=..., label_smoothing=...); one trainer
    # (and one dataset preparation) serves the three losses.
    trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = [loss_type], [1.0], smoothing
    if sft:
        trainer.loss_types, trainer.loss_weights = [loss_type, "sft"], [1.0, sft]
    model.train()
    model.zero_grad(set_to_none=True)
    trl_loss = trainer.compute_loss(model, batch)
    trl_loss.backward()
    trl_grads = _grads(model)

    settings = DPOSettings(beta=0.5, loss=loss_type, label_smoothing=smoothing, sft_weight=sft)
    out, ours = _ftkit_loss_and_grads(model, _pairs_from_trl(batch), settings)

    assert abs(trl_loss.item() - 0.6931) > 1e-3 or loss_type != "sigmoid"  # the adapter moved the policy
    # Tolerance: fp32 on both sides, which differ only in summation order (packed row vs padded batch, chunked
    # head): loss to 1e-5 relative; each gradient element to 1e-4 relative or 1e-4 of its tensor's largest element
    # (elements that are a cancellation of larger terms carry absolute, not relative, rounding noise).
    assert out.loss.item() == pytest.approx(trl_loss.item(), rel=1e-5, abs=1e-6)
    assert ours.keys() == trl_grads.keys() and ours
    for name, g in trl_grads.items():
        assert g.abs().max() > 0, name
        torch.testing.assert_close(ours[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()),
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_packed_and_padded_pairs_give_the_same_loss_and_gradients(arch):
    model = tiny_lora_model(arch)
    pairs = _random_pairs(5, seed=3)
    settings = DPOSettings(beta=0.2)
    packed, grads_packed = _ftkit_loss_and_grads(model, pairs, settings, packing=True)
    padded, grads_padded = _ftkit_loss_and_grads(model, pairs, settings, packing=False)
    assert packed.loss.item() == pytest.approx(padded.loss.item(), rel=1e-5)
    torch.testing.assert_close(packed.margins, padded.margins, rtol=1e-4, atol=1e-6)
    assert grads_packed.keys() == grads_padded.keys() and grads_packed
    for name in grads_packed:
        torch.testing.assert_close(grads_packed[name], grads_padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_chosen_and_rejected_do_not_see_each_other_when_packed():
    """Changing the rejected answer leaves the chosen answer's log-probability unchanged in the packed row."""
    model = tiny_lora_model("llama")
    computer = LossComputer(model, Levers())
    seq = SequenceLogProbs(computer)
    pair = _random_pairs(1, seed=5)[0]
    other = TokenizedExample([9] * len(pair.rejected.input_ids), pair.rejected.labels)
    with torch.no_grad(), computer.context():
        a, _ = seq(collate_pairs([pair], packed=True))
        b, _ = seq(collate_pairs([PreferencePair(pair.chosen, other)], packed=True))
    assert a[0].item() == pytest.approx(b[0].item(), rel=1e-6)
    assert abs(a[1].item() - b[1].item()) > 1e-3


def test_reference_is_the_base_model_with_the_adapter_disabled():
    model = tiny_lora_model("llama")
    pairs = _random_pairs(3, seed=6)
    computer = LossComputer(model, Levers())
    seq = SequenceLogProbs(computer)
    with torch.no_grad(), computer.context():
        ref = reference_logps(model, seq, pairs, batch_tokens=64, device="cpu")  # several passes
        policy, _ = seq(collate_pairs(pairs, packed=True))
    base = model.get_base_model()
    expected = []
    for pair in pairs:
        for ex in (pair.chosen, pair.rejected):
            with model.disable_adapter(), torch.no_grad():
                logits = base(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1].float()
            targets = torch.tensor(ex.labels[1:])
            mask = targets != IGNORE_INDEX
            expected.append(logits.log_softmax(-1)[mask].gather(1, targets[mask][:, None]).sum().item())
    torch.testing.assert_close(ref, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref, policy, atol=1e-3)  # the adapter (randomised B) changes the policy


def test_frozen_head_route_equals_autograd():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    targets = torch.randint(0, 50, (37,))
    upstream = torch.randn(37)
    fast = head_token_logps(hidden, weight, None, targets, chunk_logits=50 * 8)  # 5 chunks
    (g_fast,) = torch.autograd.grad((fast * upstream).sum(), hidden)
    plain = torch.log_softmax(hidden @ weight.t(), -1).gather(1, targets[:, None]).squeeze(1)
    (g_plain,) = torch.autograd.grad((plain * upstream).sum(), hidden)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-5, atol=1e-5)


def test_label_smoothed_sigmoid_is_cdpo():
    """TRL 1.16's sigmoid loss has no label smoothing any more; cDPO's formula, checked by hand."""
    import math

    policy, reference, counts = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -3.0]), torch.ones(2)
    out = dpo_loss(policy, reference, counts, DPOSettings(beta=1.0, label_smoothing=0.1))
    expected = -0.9 * math.log(1 / (1 + math.exp(-1.0))) - 0.1 * math.log(1 / (1 + math.exp(1.0)))
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)
    assert out.margins.tolist() == [1.0]


def test_bad_dpo_settings_are_refused():
    with pytest.raises(ConfigError, match="beta"):
        DPOSettings(beta=0)
    with pytest.raises(ConfigError, match="loss"):
        DPOSettings(loss="hinge-ish")
    with pytest.raises(ConfigError, match="label_smoothing"):
        DPOSettings(label_smoothing=0.5)
