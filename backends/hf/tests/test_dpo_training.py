"""DPO training: the engine's preference loop (learns, checkpoints, resumes) and a preference job end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ftkit_hf.engine.dpo import DPOSettings, PreferencePair
from ftkit_hf.engine.preference import REFERENCE_FILE, train_preference
from ftkit_hf.engine.settings import IGNORE_INDEX, EngineSettings, TokenizedExample
from ftkit_hf.engine.testing import tiny_lora_model

import ftkit
from ftkit import JobStatus


def _pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Prompt → answer of token 7s (preferred) or token 9s (rejected): a preference a tiny model can learn."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = torch.randint(20, 200, (6,), generator=g).tolist()
        k = int(torch.randint(3, 8, (1,), generator=g))
        good, bad = [7] * k, [9] * (k + 1)
        out.append(PreferencePair(TokenizedExample(prompt + good, [IGNORE_INDEX] * 6 + good),
                                  TokenizedExample(prompt + bad, [IGNORE_INDEX] * 6 + bad)))
    return out


def _settings(**kw) -> EngineSettings:
    base = {"epochs": 2, "learning_rate": 5e-3, "batch_tokens": 200, "max_batch_examples": 8, "seed": 0,
            "precision": "fp32", "device": "cpu", "warmup_ratio": 0.0}
    return EngineSettings(**{**base, **kw})


def _lora(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_dpo_learns_the_preference_and_reports_rewards(tmp_path):
    model = tiny_lora_model("llama")
    events: list[dict] = []
    result = train_preference(model, _pairs(16), _pairs(6, seed=1), _settings(), DPOSettings(beta=0.5),
                              checkpoint_dir=tmp_path / "ckpt", on_event=events.append)
    metrics = [e for e in events if e["kind"] == "metrics"]
    assert result.steps == metrics[-1]["step"] == 4
    assert metrics[0]["train_loss"] > metrics[-1]["train_loss"]
    last = metrics[-1]
    assert last["valid_reward_accuracy"] == 1.0 and last["valid_reward_margin"] > 0.5
    assert last["valid_loss"] < 0.69  # below log 2: the policy prefers the chosen answers more than the reference
    assert 0.0 <= last["reward_accuracy"] <= 1.0
    assert (tmp_path / "ckpt" / REFERENCE_FILE).is_file()


@pytest.mark.slow
def test_stop_and_resume_gives_the_same_weights_without_recomputing_the_reference(tmp_path):
    pairs, valid = _pairs(12), _pairs(4, seed=1)
    full = tiny_lora_model("llama")
    train_preference(full, pairs, valid, _settings(), DPOSettings(), checkpoint_dir=tmp_path / "a",
                     on_event=lambda e: None)

    resumed = tiny_lora_model("llama")
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    first = train_preference(resumed, pairs, valid, _settings(), DPOSettings(), checkpoint_dir=tmp_path / "b",
                             on_event=lambda e: None, should_stop=stop_after_two)
    assert first.stopped and first.steps == 2
    again = tiny_lora_model("llama")
    events: list[dict] = []
    second = train_preference(again, pairs, valid, _settings(), DPOSettings(), checkpoint_dir=tmp_path / "b",
                              on_event=events.append)
    assert not second.stopped and second.steps > 2
    messages = [e["message"] for e in events if e["kind"] == "message"]
    assert any("resumed from step-2" in m for m in messages)
    assert not any("reference log-probabilities" in m for m in messages)  # loaded from the cache
    a, b = _lora(full), _lora(again)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_full_fine_tuning_is_refused(tmp_path):
    from ftkit_hf.engine.testing import tiny_causal_lm

    from ftkit.errors import ConfigError

    with pytest.raises(ConfigError, match="adapter disabled"):
        train_preference(tiny_causal_lm("llama"), _pairs(4), None, _settings(), DPOSettings(),
                         checkpoint_dir=tmp_path, on_event=lambda e: None)


def _rows(n: int, offset: int = 0) -> list[dict]:
    return [{"input": {"messages": [{"role": "user", "content": f"Is {i + offset} even?"}]},
             "preferred_output": [{"role": "assistant", "content": "Yes." if (i + offset) % 2 == 0 else "No."}],
             "non_preferred_output": [{"role": "assistant", "content": "Maybe, it is hard to say."}]}
            for i in range(n)]


@pytest.mark.slow
def test_preference_job_end_to_end(tmp_path: Path, tiny_llama_dir, ftkit_home, write_rows):
    train = write_rows(tmp_path / "train.jsonl", _rows(12))
    valid = write_rows(tmp_path / "valid.jsonl", _rows(4, offset=100))
    spec = ftkit.JobSpec(task="preference", model=str(tiny_llama_dir), train=train, validation=valid,
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "max_steps": 3, "batch_tokens": 256,
                                                               "dpo_beta": 0.2, "dpo_loss": "ipo"})
    job.start()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED, (job.workdir / "worker.log").read_text()
    metrics = job.metrics()
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all("reward_margin" in m and 0 <= m["reward_accuracy"] <= 1 for m in metrics)
    assert metrics[-1]["valid_loss"] is not None and "valid_reward_accuracy" in metrics[-1]
    assert (job.workdir / "model" / "adapter_config.json").is_file()
    meta = json.loads((job.workdir / "model" / "ftkit-hf.json").read_text())
    assert meta["task"] == "preference"
    assert job.model().generate([[{"role": "user", "content": "Is 4 even?"}]], max_new_tokens=3)
    # Evaluation on a preference file: the job's base model is the reference by default.
    report = ftkit.evaluate(job, valid)
    assert report.task == "preference" and len(report.reward_margins) == 4
    assert 0 <= report.metrics["preference_accuracy"] <= 1 and "reward_margin_mean" in report.metrics
    assert report.training_curve


def test_predictor_answer_logprobs_are_the_answer_tokens_log_probability(tmp_path, tiny_llama_dir, write_rows):
    from ftkit_hf.predictor import HFPredictor
    from ftkit_hf.tokenize import encode_chat

    pred = HFPredictor.load(tiny_llama_dir, device="cpu", precision="fp32")
    convs = [[{"role": "user", "content": f"Is {i} even?"}, {"role": "assistant", "content": "Yes." * (i + 1)}]
             for i in range(3)]
    got = pred.answer_logprobs(convs)
    for conv, value in zip(convs, got, strict=True):
        ex = encode_chat(pred.tokenizer, conv)
        with torch.no_grad():
            logits = pred.model(input_ids=torch.tensor([ex.input_ids])).logits[0, :-1].float()
        targets = torch.tensor(ex.labels[1:])
        mask = targets != IGNORE_INDEX
        expected = logits.log_softmax(-1)[mask].gather(1, targets[mask][:, None]).sum().item()
        assert value == pytest.approx(expected, rel=1e-5)
    # The model against itself as the reference: every margin is 0, so no pair counts as preferred.
    data = write_rows(tmp_path / "pref.jsonl", _rows(3))
    report = ftkit.evaluate(pred, data, reference=pred)
    assert report.reward_margins == [0.0, 0.0, 0.0] and report.metrics["preference_accuracy"] == 0.0


def test_preference_refused_with_full_fine_tuning(tmp_path, tiny_llama_dir, write_rows):
    from ftkit_hf.backend import HFBackend, HFConfig

    from ftkit.errors import ConfigError

    train = write_rows(tmp_path / "train.jsonl", _rows(2))
    spec = ftkit.JobSpec(task="preference", model=str(tiny_llama_dir), train=train)
    with pytest.raises(ConfigError, match="method='lora'"):
        HFBackend().check(spec, HFConfig(method="full"))
    HFBackend().check(spec, HFConfig())  # LoRA: accepted


def test_bad_preference_line_names_file_and_line(tmp_path, tiny_llama_dir, write_rows):
    from ftkit_hf.backend import HFBackend, HFConfig

    from ftkit.errors import DatasetError

    rows = _rows(3)
    rows[1]["preferred_output"] = [{"role": "user", "content": "x"}]
    train = write_rows(tmp_path / "train.jsonl", rows)
    spec = ftkit.JobSpec(task="preference", model=str(tiny_llama_dir), train=train)
    with pytest.raises(DatasetError, match=r"train.jsonl:2: `preferred_output`"):
        HFBackend().check(spec, HFConfig())


def test_a_diverging_dpo_run_fails_with_the_step_and_says_the_bad_loss(tmp_path):
    """Issue 17's invariant 4 for DPO too: a non-finite loss fails the run; the bad loss is the last number said."""
    from ftkit_hf.engine.settings import TrainingDivergedError

    events: list[dict] = []
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf) at step \d+"):
        train_preference(tiny_lora_model("llama"), _pairs(16), None, _settings(learning_rate=1e30, epochs=1),
                         DPOSettings(beta=0.5), checkpoint_dir=tmp_path / "ckpt", on_event=events.append)
    last = [e for e in events if e["kind"] == "metrics"][-1]
    assert last["train_loss"] != last["train_loss"] or abs(last["train_loss"]) == float("inf")
