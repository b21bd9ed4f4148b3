"""fp16 mixed precision with loss scaling (GPUs without bf16: T4, V100), run on a CPU where fp16 is emulated."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ftkit_hf.engine import EngineSettings, train
from ftkit_hf.engine import device as dev
from ftkit_hf.engine.precision import LossScaler, autocast
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model

from ftkit.errors import ConfigError


def _settings(precision: str, **kw) -> EngineSettings:
    base = dict(epochs=2, batch_tokens=200, learning_rate=5e-3, device="cpu", seed=3, threads=1)
    return EngineSettings(precision=precision, **{**base, **kw})


def test_a_gpu_without_bf16_trains_in_fp16_with_loss_scaling(monkeypatch):
    # What torch reports on a T4 or V100; the choice itself is what is tested.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    plan = dev.plan_device("cuda")
    assert (plan.precision, plan.reason, plan.autocast_dtype) == ("fp16", "no native bf16, loss scaling",
                                                                   torch.float16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert dev.plan_device("cuda").precision == "bf16"
    assert dev.plan_device("cuda", "fp16").autocast_dtype is torch.float16


def test_fp16_is_a_valid_setting_and_others_are_not():
    assert dev.plan_device("cpu", "fp16").reason == "chosen"
    with pytest.raises(ConfigError, match="auto, bf16, fp16 or fp32"):
        EngineSettings(precision="fp8")


def test_fp16_training_follows_fp32_and_checkpoints_the_loss_factor(tmp_path: Path):
    data = synthetic_examples(24, seed=1)
    losses: dict[str, list[float]] = {"fp32": [], "fp16": []}
    for precision, sink in losses.items():
        train(tiny_lora_model(), data, None, _settings(precision), checkpoint_dir=tmp_path / precision,
              on_event=lambda e, sink=sink: sink.append(e["train_loss"]) if e["kind"] == "metrics" else None)
    assert len(losses["fp16"]) == len(losses["fp32"]) > 6
    # fp16 keeps 11 significant bits: the step losses agree to ~1e-3 relative, and the model learns.
    assert losses["fp16"] == pytest.approx(losses["fp32"], rel=2e-3)
    assert losses["fp16"][-1] < losses["fp16"][0]
    last = max((tmp_path / "fp16").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    state = torch.load(last / "state.pt", weights_only=False)
    assert state["scaler"]["scale"] == 2.0**16  # no overflow in this run, the factor never dropped
    assert "scaler" not in torch.load(next((tmp_path / "fp32").glob("step-*")) / "state.pt", weights_only=False)


def test_fp16_resume_restores_the_loss_factor(tmp_path: Path):
    data = synthetic_examples(24, seed=1)
    full_model = tiny_lora_model()
    full = train(full_model, data, None, _settings("fp16"), checkpoint_dir=tmp_path / "a", on_event=lambda e: None)
    polls = iter(range(10_000))
    first = train(tiny_lora_model(), data, None, _settings("fp16"), checkpoint_dir=tmp_path / "b",
                  on_event=lambda e: None, should_stop=lambda: next(polls) >= 3)
    assert first.stopped
    state = torch.load(tmp_path / "b" / "step-3" / "state.pt", weights_only=False)
    assert state["scaler"]["_growth_tracker"] == 3  # three clean steps counted towards the next doubling
    resumed = tiny_lora_model()
    second = train(resumed, data, None, _settings("fp16"), checkpoint_dir=tmp_path / "b", on_event=lambda e: None)
    assert second.final_train_loss == pytest.approx(full.final_train_loss, rel=1e-6)
    for (name, a), (_, b) in zip(full_model.named_parameters(), resumed.named_parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("fused", [False, True])  # the engine's AdamW is fused on CUDA: the scaler then hands
def test_an_overflowing_step_is_skipped_and_the_factor_halved(fused: bool):  # the optimizer its inf flag itself
    torch.manual_seed(0)
    model = tiny_lora_model()
    ids = torch.randint(3, 256, (2, 16))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, fused=fused)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # A factor far above fp16's range (65504): the scaled gradients of the fp16 matmuls become inf.
    scaler = LossScaler("cpu", torch.float16, init_scale=2.0**100)
    with autocast("cpu", torch.float16):
        loss = model(input_ids=ids, labels=ids).loss
    scaler.scale(loss).backward()
    assert scaler.step(opt) is False
    assert scaler.skipped == 1 and scaler.factor == 2.0**99
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, before[n]), f"{n} changed on a skipped step"

    opt.zero_grad()
    scaler = LossScaler("cpu", torch.float16)
    with autocast("cpu", torch.float16):
        loss = model(input_ids=ids, labels=ids).loss
    scaler.scale(loss).backward()
    assert scaler.step(opt) is True and scaler.skipped == 0
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_without_fp16_the_scaler_is_a_pass_through():
    scaler = LossScaler("cpu", torch.bfloat16)
    loss = torch.tensor(2.5)
    assert scaler.scale(loss) is loss and scaler.factor == 1.0 and scaler.state_dict() == {}


def test_an_fp16_job_on_a_cpu_can_be_estimated(tmp_path: Path, tiny_llama_dir: Path, ftkit_home: Path):
    import ftkit

    train_file = tmp_path / "t.jsonl"
    train_file.write_text('{"text": "a", "label": "ham"}\n{"text": "b", "label": "spam"}\n' * 5)
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=train_file, labels=["ham", "spam"])
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "precision": "fp16"})
    assert any("CPU, fp16 (chosen)" in a for a in job.record.estimated_cost["assumptions"])
