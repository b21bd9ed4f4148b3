"""What ftkit does on a GPU, checked on one: training in bf16, fp16 and fp32, packed = padded, resume, scoring,
merge and export. ``benchmarks/gpu_check.sh`` runs these on a lent GPU machine (docs/performance.md, "GPU check").

Without CUDA every test skips, unless ``FTKIT_GPU_TESTS_ON_CPU=1``: then they run on the CPU, as
``gpu_check.sh --device cpu --dry-run`` does in CI, so that the checks themselves cannot fail on a typo when
the GPU minutes come. Nothing here needs a download: the model is a random tiny Llama and its tokenizer is
trained here, in milliseconds, on the test's own texts.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from ftkit_hf.engine import EngineSettings, train
from ftkit_hf.engine.batching import collate_packed, collate_padded
from ftkit_hf.engine.loss import Levers, LossComputer
from ftkit_hf.engine.precision import autocast
from ftkit_hf.engine.testing import synthetic_examples, tiny_lora_model

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def device() -> str:
    """``cuda``, or ``cpu`` under FTKIT_GPU_TESTS_ON_CPU=1 (the dry run); otherwise the test skips."""
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("FTKIT_GPU_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.skip("no CUDA GPU (FTKIT_GPU_TESTS_ON_CPU=1 runs these checks on the CPU)")


def _bf16_or_skip(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16 (T4, V100): the fp16 test covers it")


def _losses(model: torch.nn.Module, data, settings: EngineSettings, ckpt: Path, **kw) -> list[float]:
    out: list[float] = []
    train(model, data, None, settings, checkpoint_dir=ckpt,
          on_event=lambda e: out.append(e["train_loss"]) if e["kind"] == "metrics" else None, **kw)
    return out


def _settings(device: str, precision: str, **kw) -> EngineSettings:
    # One thread on a CPU (the dry run): a tiny model gains nothing from more, and CI shares its cores.
    base = dict(epochs=2, batch_tokens=128, learning_rate=5e-3, seed=3, device=device, precision=precision,
                threads=1 if device == "cpu" else None)
    return EngineSettings(**{**base, **kw})


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_follows_fp32(device: str, precision: str, tmp_path: Path):
    if precision == "bf16":
        _bf16_or_skip(device)
    data = synthetic_examples(16, max_len=40, seed=1)
    fp32_model, mixed_model = tiny_lora_model(), tiny_lora_model()
    fp32 = _losses(fp32_model, data, _settings(device, "fp32"), tmp_path / "fp32")
    mixed = _losses(mixed_model, data, _settings(device, precision), tmp_path / precision)
    assert next(mixed_model.parameters()).device.type == device
    assert len(mixed) == len(fp32) >= 8
    assert all(torch.isfinite(torch.tensor(mixed)))
    # bf16 keeps 8 significant bits, fp16 11: the step losses of a 2-layer model stay within a few percent.
    assert mixed == pytest.approx(fp32, rel=3e-2 if precision == "bf16" else 1e-2)
    assert mixed[-1] < mixed[0]
    if precision == "fp16":
        last = max((tmp_path / "fp16").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        assert torch.load(last / "state.pt", weights_only=False)["scaler"]["scale"] > 1


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_and_padded_losses_and_gradients_equal(device: str, precision: str):
    if precision == "bf16":
        _bf16_or_skip(device)
    model = tiny_lora_model().to(device)
    examples = synthetic_examples(6, seed=1)
    results = []
    for packing in (True, False):
        computer = LossComputer(model, Levers(packing=packing))
        batch = (collate_packed(examples) if packing else collate_padded(examples)).to(device)
        model.zero_grad()
        with computer.context(), autocast(device, torch.bfloat16 if precision == "bf16" else None):
            loss = computer(batch)
        loss.backward()
        grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads))
    (packed_loss, packed_grads), (padded_loss, padded_grads) = results
    rel = 1e-5 if precision == "fp32" else 2e-2
    assert packed_loss == pytest.approx(padded_loss, rel=rel)
    for name, g in packed_grads.items():
        torch.testing.assert_close(g, padded_grads[name], rtol=rel * 10, atol=rel, msg=name)


def test_resume_on_the_device_equals_an_uninterrupted_run(device: str, tmp_path: Path):
    data = synthetic_examples(16, max_len=40, seed=1)
    settings = _settings(device, "fp32")
    full_model = tiny_lora_model()
    full = _losses(full_model, data, settings, tmp_path / "a")
    polls = iter(range(10_000))
    first = tiny_lora_model()
    _losses(first, data, settings, tmp_path / "b", should_stop=lambda: next(polls) >= 4)
    assert (tmp_path / "b" / "step-4").is_dir()
    resumed = tiny_lora_model()
    rest = _losses(resumed, data, settings, tmp_path / "b")
    assert rest[-1] == pytest.approx(full[-1], rel=1e-4)
    for (name, a), (_, b) in zip(full_model.named_parameters(), resumed.named_parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------------- the whole job, through the public API
SPAM = ["win a free prize now", "claim your cash reward today", "urgent: you won a holiday, call now",
        "free entry to win cash", "txt to claim your free prize"]
HAM = ["see you at lunch", "are we still on for tonight", "call me when you get home",
       "thanks for dinner yesterday", "the meeting moved to three"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer and a chat template, both made here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-gpu-model")
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(SPAM + HAM + ["user", "assistant", "system", "ham", "spam"],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                         "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    # Numbered so that training and validation rows never repeat each other (create refuses such leakage).
    return [{"text": f"{rng.choice(SPAM if k % 2 else HAM)} (#{seed}-{k})", "label": "spam" if k % 2 else "ham"}
            for k in range(n)]


def test_a_job_trains_on_the_device_scores_like_the_cpu_and_merges(device: str, tiny_model_dir: Path,
                                                                     tmp_path: Path, monkeypatch):
    from ftkit_hf.export import merge_job_model
    from ftkit_hf.predictor import HFPredictor

    import ftkit

    monkeypatch.setenv("FTKIT_HOME", str(tmp_path / "home"))
    files = {}
    for seed, (name, n) in enumerate((("train", 32), ("valid", 8))):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps(r) + "\n" for r in _rows(n, seed=seed)))
    spec = ftkit.JobSpec(task="classification", model=str(tiny_model_dir), train=files["train"],
                         validation=files["valid"], labels=["ham", "spam"],
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
    precision = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    job = ftkit.FineTuneJob.create(spec, backend="hf", options={"device": device, "precision": precision,
                                                                "max_steps": 3, "batch_tokens": 256,
                                                                "merge_adapter": True})
    job.start()
    assert job.wait(timeout=300) is ftkit.JobStatus.SUCCEEDED, (job.workdir / "worker.log").read_text()
    log = (job.workdir / "worker.log").read_text() + "".join(e.message for e in job.events())
    assert ("CUDA" if device == "cuda" else "CPU") in log  # trained where it was asked to
    model_dir = job.workdir / "model"
    meta = json.loads((model_dir / "ftkit-hf.json").read_text())

    texts = [r["text"] for r in _rows(6, seed=9)]
    on_device = HFPredictor.load(tiny_model_dir, model_dir, labels=["ham", "spam"], preamble=meta.get("preamble"),
                                 device=device, precision=precision)
    on_cpu = HFPredictor.load(tiny_model_dir, model_dir, labels=["ham", "spam"], preamble=meta.get("preamble"),
                              device="cpu", precision="fp32")
    # bf16 weights on the GPU round each weight to 8 significant bits: probabilities move by ~1e-2 at most here.
    tol = 3e-2 if precision == "bf16" else 1e-4
    for a, b in zip(on_device.classify(texts), on_cpu.classify(texts), strict=True):
        assert a.probabilities["spam"] == pytest.approx(b.probabilities["spam"], abs=tol)

    # Merged at the end of the job, and exported again from the adapter: plain transformers models that score
    # the same without peft.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    exported = merge_job_model(model_dir, tmp_path / "export")
    for folder in (model_dir / "merged", exported):
        plain = HFPredictor(AutoModelForCausalLM.from_pretrained(str(folder)).to(device),
                            AutoTokenizer.from_pretrained(str(folder)), labels=["ham", "spam"],
                            preamble=meta.get("preamble"), device=device)
        for a, b in zip(plain.classify(texts), on_cpu.classify(texts), strict=True):
            assert a.probabilities["spam"] == pytest.approx(b.probabilities["spam"], abs=3e-2)


def test_a_step_too_big_for_the_gpu_is_run_in_shorter_passes(device: str, tmp_path: Path, monkeypatch):
    if device != "cuda":
        pytest.skip("the memory plan chooses passes on a GPU only")
    from types import SimpleNamespace

    real = torch.cuda.get_device_properties(0)
    # A card of 1 MiB: the plan cannot fit a whole 4,096-token step of even this tiny model.
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *_: SimpleNamespace(
        total_memory=1 << 20, name=real.name))
    messages: list[str] = []
    train(tiny_lora_model(), synthetic_examples(16, max_len=40, seed=1), None,
          _settings(device, "fp32", batch_tokens=4096, epochs=1), checkpoint_dir=tmp_path,
          on_event=lambda e: messages.append(e.get("message", "")))
    assert any(m.startswith("memory plan:") for m in messages), messages


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gradient_checkpointing_on_the_device_keeps_the_losses_and_cuts_the_peak(device: str, precision: str,
                                                                                tmp_path: Path):
    # The memory plan turns checkpointing on when a step does not fit: on the device, packed passes (the
    # recomputed attention must see the same example boundaries), the same losses, less peak memory on CUDA.
    if precision == "bf16":
        _bf16_or_skip(device)
    from ftkit_hf.engine.recompute import enable_gradient_checkpointing

    data = synthetic_examples(24, max_len=120, seed=4)
    runs: dict[bool, tuple[list[float], int]] = {}
    for ckpt in (False, True):
        model = tiny_lora_model()
        if ckpt:
            assert enable_gradient_checkpointing(model)
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        losses = _losses(model, data, _settings(device, precision, batch_tokens=1024, epochs=1), tmp_path / str(ckpt))
        runs[ckpt] = (losses, torch.cuda.max_memory_allocated() if device == "cuda" else 0)
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5 if precision == "fp32" else 2e-2)
    if device == "cuda":
        assert runs[True][1] < runs[False][1], runs
