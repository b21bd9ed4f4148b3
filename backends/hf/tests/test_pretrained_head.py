"""A trained sequence classifier (its own label map) as the base model: its head is kept when the job's labels are
its labels (reordered to the job's order), replaced otherwise; from a local folder or by Hub id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from ftkit_hf.pretrained_head import checkpoint_labels, load_head_model

import ftkit
from ftkit import JobStatus

TEXTS = ["a wonderful, moving film", "dull and far too long", "not bad at all", "the worst acting this year"]


@pytest.fixture(scope="module")
def sst2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sentiment classifier saved as a trained one is: NEGATIVE/POSITIVE head, real tokenizer."""
    from ftkit_hf.models import resolve_model
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(str(resolve_model("all-minilm-l6-v2").path))
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, num_labels=2,
                     id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():  # a head with an opinion: outputs clearly apart, and differing between texts
        model.classifier.weight.mul_(20)
        model.classifier.bias.copy_(torch.tensor([-1.0, 1.0]))
    out = tmp_path_factory.mktemp("tiny-sst2")
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _probs(model, path: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model.eval()
    with torch.no_grad():
        return model(**tok(texts, return_tensors="pt", padding=True)).logits.softmax(-1)


def test_the_trained_head_is_kept_in_the_jobs_label_order(sst2_dir: Path):
    from transformers import AutoModelForSequenceClassification

    assert checkpoint_labels(sst2_dir) == ["NEGATIVE", "POSITIVE"]
    original = _probs(AutoModelForSequenceClassification.from_pretrained(str(sst2_dir)), sst2_dir, TEXTS)
    assert (original.max(-1).values > 0.6).all()  # the head decides something the test can see
    flipped, note = load_head_model(sst2_dir, ["positive", "negative"])
    assert "kept the checkpoint's trained classification head" in note
    assert torch.allclose(_probs(flipped, sst2_dir, TEXTS), original.flip(-1), atol=1e-6)
    assert flipped.config.id2label == {0: "positive", 1: "negative"}
    same, _ = load_head_model(sst2_dir, ["negative", "positive"])
    assert torch.allclose(_probs(same, sst2_dir, TEXTS), original, atol=1e-6)


def test_other_labels_get_a_new_head_and_say_so(sst2_dir: Path):
    other, note = load_head_model(sst2_dir, ["ham", "spam", "unsure"])
    assert "a new classification head" in note and "['NEGATIVE', 'POSITIVE']" in note
    assert other.config.num_labels == 3 and _probs(other, sst2_dir, TEXTS).shape == (4, 3)


@pytest.mark.slow
def test_a_job_on_a_hub_classifier_starts_from_its_head(sst2_dir: Path, tmp_path: Path, ftkit_home, write_rows,
                                                        monkeypatch: pytest.MonkeyPatch):
    from huggingface_hub import constants
    from test_hub import _hub_cache
    from transformers import AutoModelForSequenceClassification

    cache = tmp_path / "hf-cache"
    _hub_cache(cache, sst2_dir, repo="ftkit-test/tiny-sst2")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    rows = [{"text": t, "label": "positive" if i % 2 == 0 else "negative"} for i, t in enumerate(TEXTS * 4)]
    train = write_rows(tmp_path / "train.jsonl", rows)
    # A learning rate too small to move anything: the trained job must predict what the checkpoint predicts.
    spec = ftkit.JobSpec(task="classification", model="ftkit-test/tiny-sst2", train=train,
                         labels=["positive", "negative"],
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-12))
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": "cpu", "max_steps": 1})
    job.start()
    assert job.wait(timeout=300) is JobStatus.SUCCEEDED
    assert any("kept the checkpoint's trained classification head" in e.message for e in job.events())
    original = _probs(AutoModelForSequenceClassification.from_pretrained(str(sst2_dir)), sst2_dir, TEXTS)
    for res, p in zip(job.model().classify(TEXTS), original, strict=True):
        assert res.probabilities["positive"] == pytest.approx(float(p[1]), abs=1e-3)
    assert json.loads((job.workdir / "spec.json").read_text())["model_revision"]["repo"] == "ftkit-test/tiny-sst2"
