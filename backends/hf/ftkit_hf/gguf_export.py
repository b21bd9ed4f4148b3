"""Writing a transformers Llama-architecture model as one GGUF file that llama.cpp, Ollama and LM Studio load.

The layout follows llama.cpp's own converter (``convert_hf_to_gguf.py``) so that llama.cpp reads the
file as if it had converted it itself:

- tensor names come from ``gguf``'s tensor tables (``token_embd``, ``blk.N.attn_q``, ..., ``output``);
  a tied LM head is not written (llama.cpp reuses ``token_embd``);
- the query and key projections are permuted: transformers stores each head's rotary dimensions as
  two halves (``rotate_half``), llama.cpp's rope kernel wants them interleaved in pairs. Getting this
  wrong loads fine and produces garbage, so the tests compare against a llama.cpp-made file;
- 1-D tensors (norms) stay f32; matrices are f16, bf16 or q8_0 (a matrix whose rows do not split into
  q8_0 blocks of 32 falls back to f16, as llama.cpp does);
- the tokenizer travels in the file (``gpt2`` byte-level BPE: tokens, types, merges, special ids) with
  the chat template the model was trained with, so a runtime renders prompts exactly as training did.

Only Llama-architecture models (SmolLM2, Llama, Mistral-style configs without sliding windows) are
written; others get a :class:`ConfigError` that points at llama.cpp's converter and the merged export.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ftkit.errors import ConfigError

GGUFType = Literal["f32", "f16", "bf16", "q8_0"]
GGUF_TYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")

# llama.cpp's token types (gguf.TokenType): what a runtime may print and what it treats as control.
_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED = 1, 3, 4, 5

# transformers parameter names (after "model.") → gguf tensor names, for one Llama block.
_BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def permute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder a q/k projection's output rows from transformers' half-split rotary layout to llama.cpp's pairs.

    Within each head the rows ``[x0..x(d/2-1), y0..y(d/2-1)]`` become ``[x0, y0, x1, y1, ...]``.
    """
    rows = weight.shape[0]
    return weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def unpermute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_rotary` (for checks: a GGUF q/k tensor back in transformers' layout)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(model: Any) -> dict[str, np.ndarray]:
    """The model's weights as float32 arrays under their GGUF names, q/k already permuted.

    Raises:
        ConfigError: the model is not a Llama-architecture causal LM.
    """
    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise ConfigError(
            f"GGUF export supports Llama-architecture models (SmolLM2, Llama); this one is "
            f"{getattr(cfg, 'model_type', '?')!r}. Export the merged folder (--format merged) and convert it "
            "with llama.cpp's convert_hf_to_gguf.py"
        )
    n_head = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    out: dict[str, np.ndarray] = {}
    for name, tensor in model.state_dict().items():
        arr = tensor.detach().float().cpu().numpy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = arr
        elif name == "model.norm.weight":
            out["output_norm.weight"] = arr
        elif name == "lm_head.weight":
            if not getattr(cfg, "tie_word_embeddings", False):
                out["output.weight"] = arr
        elif name.startswith("model.layers."):
            idx, _, rest = name.removeprefix("model.layers.").partition(".")
            if rest not in _BLOCK:
                if rest.endswith("rotary_emb.inv_freq"):
                    continue  # recomputed by the runtime from rope.freq_base
                raise ConfigError(f"GGUF export: no GGUF name for {name} (a Llama variant this exporter does not know)")
            if rest == "self_attn.q_proj.weight":
                arr = permute_rotary(arr, n_head)
            elif rest == "self_attn.k_proj.weight":
                arr = permute_rotary(arr, n_kv)
            out[f"blk.{idx}.{_BLOCK[rest]}"] = arr
        else:
            raise ConfigError(f"GGUF export: no GGUF name for {name}")
    return out


def _encode(arr: np.ndarray, dtype: GGUFType) -> tuple[np.ndarray, Any]:
    """The array as stored and its GGML type: norms and other vectors stay f32, as in llama.cpp."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    if arr.ndim == 1 or dtype == "f32":
        return arr.astype(np.float32), T.F32
    if dtype == "bf16":
        return quantize(arr, T.BF16), T.BF16
    if dtype == "q8_0" and arr.shape[-1] % 32 == 0:
        return quantize(arr, T.Q8_0), T.Q8_0
    return arr.astype(np.float16), T.F16


def _file_type(dtype: GGUFType) -> int:
    from gguf import LlamaFileType as F

    return int({"f32": F.ALL_F32, "f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0}[dtype])


def tokenizer_vocab(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types and merges of a byte-level BPE tokenizer, padded to the model's vocab size.

    Ids the tokenizer lacks (a model vocab rounded up) become ``[PADn]`` of type unused, as in llama.cpp.

    Raises:
        ConfigError: the tokenizer is not a byte-level BPE (``tokenizer.json`` with a BPE model).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("GGUF export needs a fast (tokenizer.json) tokenizer")
    spec = json.loads(backend.to_str())
    if (spec.get("model") or {}).get("type") != "BPE":
        raise ConfigError("GGUF export supports byte-level BPE tokenizers (gpt2 family); this one is not BPE")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    by_id = {i: tok for tok, i in tokenizer.get_vocab().items()}
    added = {t["id"]: bool(t.get("special")) for t in spec.get("added_tokens", [])}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(_UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(_NORMAL if i not in added else _CONTROL if added[i] else _USER_DEFINED)
    return tokens, types, merges


def _pre_tokenizer(tokenizer: Any) -> str:
    """llama.cpp's name for how text is split before BPE, from the tokenizer's own description."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    parts = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    return "default"


def export_gguf(
    model: Any,
    tokenizer: Any,
    out: str | Path,
    *,
    dtype: GGUFType = "f16",
    name: str | None = None,
    pre_tokenizer: str | None = None,
) -> Path:
    """Write ``model`` (a transformers Llama causal LM, adapter merged) and its tokenizer as one GGUF file.

    Args:
        model: the model; LoRA adapters must be merged first (``merge_and_unload``).
        tokenizer: its fast tokenizer, chat template included.
        out: the ``.gguf`` file to write (replaced atomically).
        dtype: ``f16`` (default), ``bf16``, ``q8_0`` or ``f32`` for the matrices.
        name: ``general.name`` in the file.
        pre_tokenizer: llama.cpp's pre-tokenizer name (e.g. ``smollm``); None derives it from the tokenizer.

    Returns:
        The path written.

    Raises:
        ConfigError: an unsupported architecture, tokenizer or dtype.
    """
    if dtype not in GGUF_TYPES:
        raise ConfigError(f"GGUF type must be one of {', '.join(GGUF_TYPES)}, not {dtype!r}")
    import gguf

    cfg = model.config
    tensors = gguf_tensors(model)
    vocab_size = int(cfg.vocab_size)
    tokens, types, merges = tokenizer_vocab(tokenizer, vocab_size)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch="llama")
    try:
        writer.add_name(name or getattr(cfg, "_name_or_path", "") or "ftkit model")
        writer.add_context_length(int(cfg.max_position_embeddings))
        writer.add_embedding_length(int(cfg.hidden_size))
        writer.add_block_count(int(cfg.num_hidden_layers))
        writer.add_feed_forward_length(int(cfg.intermediate_size))
        writer.add_head_count(int(cfg.num_attention_heads))
        writer.add_head_count_kv(int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads))
        writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
        writer.add_rope_freq_base(float(_rope_theta(cfg)))
        writer.add_rope_dimension_count(int(head_dim))
        if head_dim * cfg.num_attention_heads != cfg.hidden_size:
            writer.add_key_length(int(head_dim))
            writer.add_value_length(int(head_dim))
        writer.add_vocab_size(vocab_size)
        writer.add_file_type(_file_type(dtype))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer or _pre_tokenizer(tokenizer))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        _add_special_tokens(writer, tokenizer, cfg)
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, str) and template:
            writer.add_chat_template(template)
        for tname, arr in tensors.items():
            data, ggml_type = _encode(arr, dtype)
            writer.add_tensor(tname, data, raw_dtype=ggml_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return out


def _rope_theta(cfg: Any) -> float:
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:  # transformers 5 keeps it in rope_parameters
        theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def _add_special_tokens(writer: Any, tokenizer: Any, cfg: Any) -> None:
    ids = {
        "bos": tokenizer.bos_token_id if tokenizer.bos_token_id is not None else getattr(cfg, "bos_token_id", None),
        "eos": tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(cfg, "eos_token_id", None),
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    if ids["bos"] is not None:
        writer.add_bos_token_id(int(ids["bos"]))
    if ids["eos"] is not None:
        writer.add_eos_token_id(int(ids["eos"] if not isinstance(ids["eos"], list) else ids["eos"][0]))
    if ids["unk"] is not None:
        writer.add_unk_token_id(int(ids["unk"]))
    if ids["pad"] is not None:
        writer.add_pad_token_id(int(ids["pad"]))
    # What the tokenizer does when it encodes a prompt: a runtime must add (or not add) BOS the same way.
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(ids["bos"] is not None and probe and probe[0] == ids["bos"]))
    writer.add_add_eos_token(bool(ids["eos"] is not None and probe and probe[-1] == ids["eos"] and len(probe) > 1))
