"""train(): resume after stop, early stopping, checkpoints, events, precision."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ftkit_hf.engine import EngineSettings, TokenizedExample, train
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model

from ftkit.errors import ConfigError


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def settings(**kw) -> EngineSettings:
    base = dict(epochs=2, batch_tokens=200, learning_rate=5e-3, precision="fp32", device="cpu", seed=3)
    return EngineSettings(**{**base, **kw})


def test_resume_after_stop_equals_an_uninterrupted_run(tmp_path: Path):
    data, valid = synthetic_examples(24, seed=1), synthetic_examples(6, seed=2)
    full_model = tiny_lora_model()
    full = train(full_model, data, valid, settings(), checkpoint_dir=tmp_path / "a", on_event=lambda e: None)
    assert full.steps > 6 and not full.stopped

    polls = iter(range(10_000))
    model = tiny_lora_model()
    events: list[dict] = []
    first = train(model, data, valid, settings(), checkpoint_dir=tmp_path / "b", on_event=events.append,
                  should_stop=lambda: next(polls) >= 4)
    assert first.stopped and first.steps == 4
    assert [e["step"] for e in events if e["kind"] == "checkpoint"][-1] == 4
    assert (tmp_path / "b" / "step-4" / "state.json").is_file()

    resumed_model = tiny_lora_model()  # a fresh process would rebuild the model from scratch
    events.clear()
    second = train(resumed_model, data, valid, settings(), checkpoint_dir=tmp_path / "b", on_event=events.append)
    assert any("resumed from step-4" in e.get("message", "") for e in events)
    assert second.steps == full.steps and not second.stopped
    assert second.final_train_loss == pytest.approx(full.final_train_loss, rel=1e-6)
    assert second.best_valid_loss == pytest.approx(full.best_valid_loss, rel=1e-6)
    for name, value in trainable(full_model).items():
        torch.testing.assert_close(trainable(resumed_model)[name], value, rtol=1e-6, atol=1e-7)

    # A finished run is not trained again: calling train() once more only reports it.
    again = train(tiny_lora_model(), data, valid, settings(), checkpoint_dir=tmp_path / "b", on_event=lambda e: None)
    assert again.steps == full.steps


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The real tokens of every forward/backward pass train() runs, in order."""
    from ftkit_hf.engine.loss import LossComputer

    seen: list[int] = []
    call = LossComputer.__call__
    monkeypatch.setattr(LossComputer, "__call__", lambda self, batch: seen.append(batch.real_tokens)
                        or call(self, batch))
    return seen


def test_a_step_in_several_passes_is_the_same_step(tmp_path: Path, passes: list[int]):
    data = synthetic_examples(24, seed=1)
    runs = []
    for pass_tokens in (None, 70):  # the whole 200-token step in one pass on a CPU; passes of ~70 tokens
        model = tiny_lora_model()
        events: list[dict] = []
        passes.clear()
        result = train(model, data, None, settings(pass_tokens=pass_tokens), checkpoint_dir=tmp_path / str(pass_tokens),
                       on_event=events.append)
        losses = [e["train_loss"] for e in events if e["kind"] == "metrics"]
        runs.append((result, losses, trainable(model), list(passes)))
    (one, losses_one, weights_one, passes_one), (split, losses_split, weights_split, passes_split) = runs
    assert len(passes_one) == one.steps and len(passes_split) > 2 * split.steps
    assert max(passes_split) < 140 < max(passes_one)
    assert split.steps == one.steps and sum(passes_split) == sum(passes_one)
    assert losses_split == pytest.approx(losses_one, rel=1e-5)
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_split[name], value, rtol=1e-4, atol=1e-6)


def test_cpu_passes_are_half_as_long_in_fp32(tmp_path: Path, passes: list[int]):
    # fp32 activations take twice the bytes of bf16 ones: left to the default, a CPU step of ~4,000 tokens
    # runs in passes of ~1,024 tokens in fp32 and ~2,048 in bf16.
    data = synthetic_examples(120, min_len=30, max_len=40, seed=1)
    longest = {}
    for precision in ("fp32", "bf16"):
        passes.clear()
        train(tiny_lora_model(), data, None, settings(epochs=1, batch_tokens=4096, max_batch_examples=200,
                                                      precision=precision, max_steps=1),
              checkpoint_dir=tmp_path / precision, on_event=lambda e: None)
        assert sum(passes) > 4000
        longest[precision] = max(passes)
    assert 900 < longest["fp32"] <= 1024 + 40 < 1800 < longest["bf16"] <= 2048 + 40


def test_checkpoint_of_another_run_is_refused(tmp_path: Path):
    data = synthetic_examples(10, seed=1)
    train(tiny_lora_model(), data, None, settings(max_steps=2), checkpoint_dir=tmp_path, on_event=lambda e: None)
    with pytest.raises(ConfigError, match="other data or settings"):
        train(tiny_lora_model(), data, None, settings(max_steps=2, seed=99), checkpoint_dir=tmp_path,
              on_event=lambda e: None)


def test_early_stopping_restores_the_best_weights(tmp_path: Path):
    # Training teaches "5 6 7 -> 8"; validation asks "5 6 7 -> 9": validation loss only gets worse.
    train_data = [TokenizedExample([5, 6, 7, 8], [-100, -100, -100, 8])] * 4
    valid_data = [TokenizedExample([5, 6, 7, 9], [-100, -100, -100, 9])]
    events: list[dict] = []
    model = tiny_lora_model()
    result = train(model, train_data, valid_data,
                   settings(epochs=20, learning_rate=2e-2, eval_every=1, early_stopping_patience=2),
                   checkpoint_dir=tmp_path, on_event=events.append)
    valid_losses = [e["valid_loss"] for e in events if e["kind"] == "metrics" and "valid_loss" in e]
    assert result.early_stopped and result.steps == 3
    assert len(valid_losses) == 3 and min(valid_losses[1:]) >= valid_losses[0]
    assert result.best_valid_loss == pytest.approx(valid_losses[0])
    # The model handed back is the best one, not the last one.
    from ftkit_hf.engine.batching import collate_packed
    from ftkit_hf.engine.loss import Levers, LossComputer

    computer = LossComputer(model, Levers())
    with torch.no_grad(), computer.context():
        assert computer(collate_packed(valid_data)).item() == pytest.approx(valid_losses[0], rel=1e-5)


def test_checkpoints_are_complete_pruned_and_announced(tmp_path: Path):
    events: list[dict] = []
    result = train(tiny_lora_model(), synthetic_examples(12, seed=4), None,
                   settings(epochs=1, batch_tokens=100, checkpoint_every=1), checkpoint_dir=tmp_path,
                   on_event=events.append)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"step-{s}" for s in sorted(range(result.steps - 2, result.steps + 1), key=str)]
    for name in names:
        assert {p.name for p in (tmp_path / name).iterdir()} >= {"trainable.safetensors", "state.pt", "state.json"}
    announced = [e for e in events if e["kind"] == "checkpoint"]
    assert [e["step"] for e in announced] == list(range(1, result.steps + 1))
    assert Path(announced[-1]["path"]).is_dir()


def test_metrics_events_and_max_steps(tmp_path: Path):
    events: list[dict] = []
    result = train(tiny_lora_model(), synthetic_examples(20, seed=5), synthetic_examples(4, seed=6),
                   settings(max_steps=5, eval_every=2), checkpoint_dir=tmp_path, on_event=events.append)
    metrics = [e for e in events if e["kind"] == "metrics"]
    assert result.steps == 5 and [m["step"] for m in metrics] == [1, 2, 3, 4, 5]
    for m in metrics:
        assert {"step", "total_steps", "epoch", "train_loss", "learning_rate", "tokens_per_second"} <= m.keys()
        assert m["total_steps"] == 5 and m["tokens_per_second"] > 0
    assert [m["step"] for m in metrics if "valid_loss" in m] == [2, 4, 5]
    assert metrics[-1]["learning_rate"] < metrics[0]["learning_rate"] or metrics[0]["learning_rate"] < 5e-3
    assert result.tokens_per_second > 0 and result.final_train_loss == metrics[-1]["train_loss"]


def test_training_learns_and_bf16_stays_close_to_fp32(tmp_path: Path):
    data = synthetic_examples(16, seed=7)
    finals = {}
    for precision in ("fp32", "bf16"):
        model = tiny_lora_model()
        losses: list[float] = []
        train(model, data, None, settings(precision=precision, epochs=3, learning_rate=1e-2),
              checkpoint_dir=tmp_path / precision,
              on_event=lambda e, sink=losses: sink.append(e["train_loss"]) if e["kind"] == "metrics" else None)
        finals[precision] = losses[-1]
        assert losses[-1] < losses[0]
        # The frozen base weights are handed back in their own dtype.
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert finals["bf16"] == pytest.approx(finals["fp32"], rel=0.02)


def test_frozen_weights_are_returned_bit_for_bit(tmp_path: Path):
    model = tiny_lora_model()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    train(model, synthetic_examples(6, seed=8), None, settings(precision="bf16", max_steps=2),
          checkpoint_dir=tmp_path, on_event=lambda e: None)
    for name, value in model.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name


def test_generic_architecture_trains(tmp_path: Path):
    events: list[dict] = []
    result = train(tiny_lora_model("gpt2"), synthetic_examples(10, seed=9), None, settings(epochs=3),
                   checkpoint_dir=tmp_path, on_event=events.append)
    assert "generic" in events[0]["message"]
    losses = [e["train_loss"] for e in events if e["kind"] == "metrics"]
    assert result.steps > 2 and losses[-1] < losses[0]


def test_bad_input_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="no training example"):
        train(tiny_lora_model(), [TokenizedExample([1, 2, 3], [-100, -100, -100])], None, settings(),
              checkpoint_dir=tmp_path, on_event=lambda e: None)
    with pytest.raises(ConfigError, match="differ in length"):
        TokenizedExample([1, 2], [1])
    with pytest.raises(ConfigError, match="batch_tokens"):
        EngineSettings(batch_tokens=0)
    with pytest.raises(ConfigError, match="precision"):
        EngineSettings(precision="fp8")
