"""``ftkit export JOB_ID --format merged|gguf|ollama --out DIR``: a finished job's model in a runtime's format.

- ``merged``: a transformers folder (adapter folded into the base) that loads without peft or ftkit;
- ``gguf``: one ``.gguf`` file (llama.cpp, LM Studio, Ollama) with the tokenizer and chat template;
- ``ollama``: the GGUF file plus a ``Modelfile`` (template, stop tokens, and a classifier's system
  prompt) for ``ollama create NAME -f DIR/Modelfile``.

Every file is written atomically; a merged export refuses a non-empty folder rather than mixing
weights into someone's files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from ftkit.errors import ConfigError
from ftkit_hf.gguf_export import GGUF_TYPES, GGUFType, export_gguf

ExportFormat = Literal["merged", "gguf", "ollama"]
FORMATS: tuple[str, ...] = ("merged", "gguf", "ollama")


def export_job(job_id: str, fmt: str, out: str | Path, *, dtype: str = "f16") -> list[Path]:
    """Export a succeeded hf or remote job's model; returns the files or folder written.

    Args:
        job_id: the job id (or a unique prefix).
        fmt: ``merged``, ``gguf`` or ``ollama``.
        out: the output folder.
        dtype: GGUF matrix type: ``f16``, ``bf16``, ``q8_0`` or ``f32``.

    Raises:
        ConfigError: an unknown format or type, a non-empty folder for ``merged``, a job whose weights
            are not on this machine (OpenAI), or a model the GGUF writer does not support.
        JobError: the job has not succeeded.
    """
    from ftkit.job import FineTuneJob
    from ftkit_hf.predictor import HFPredictor

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if dtype not in GGUF_TYPES:
        raise ConfigError(f"--type must be one of {', '.join(GGUF_TYPES)}, not {dtype!r}")
    job = FineTuneJob.get(job_id)
    predictor = job.model()
    if not isinstance(predictor, HFPredictor):
        raise ConfigError(f"job {job.id} ran on backend {job.record.backend!r}: its weights are not on this machine")
    out = Path(out)
    if fmt == "merged":
        return [save_merged(predictor, out)]
    if predictor.kind == "encoder":
        raise ConfigError("an encoder classification head has no GGUF form that llama.cpp or Ollama runs; "
                          "use --format merged")
    meta = _job_meta(job.workdir / "model")
    typed: GGUFType = dtype  # type: ignore[assignment]  # checked against GGUF_TYPES above
    gguf_path = export_gguf(predictor.model, predictor.tokenizer, out / f"{job.id}.{dtype}.gguf", dtype=typed,
                            name=f"ftkit {job.id}", pre_tokenizer=source_pre_tokenizer(meta.get("base_model")))
    if fmt == "gguf":
        return [gguf_path]
    from ftkit.data.convert import render_preamble
    from ftkit_hf.ollama_export import write_modelfile

    labels = predictor.labels
    system = render_preamble(labels, predictor.preamble) if labels else None
    modelfile = write_modelfile(out, gguf_path.name, predictor.tokenizer, system=system,
                                temperature=0.0 if labels else None)
    return [gguf_path, modelfile]


def save_merged(predictor: Any, out: Path) -> Path:
    """Save the predictor's (already merged) model and tokenizer as a transformers folder, atomically."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; give a new folder for --format merged")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        predictor.model.save_pretrained(str(tmp))
        predictor.tokenizer.save_pretrained(str(tmp))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _job_meta(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "ftkit-hf.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def source_pre_tokenizer(base_model: str | None) -> str | None:
    """llama.cpp's pre-tokenizer name recorded in the GGUF a base model was converted from, if any.

    transformers' GGUF reader does not keep every pre-tokenizer step (SmolLM2's digit splitting),
    so the name the original file carried is the faithful one to write back.
    """
    if not base_model:
        return None
    marker = Path(base_model) / "ftkit-model.json"
    if not marker.is_file():
        return None
    source = json.loads(marker.read_text(encoding="utf-8")).get("source")
    if not source or not Path(source).is_file():
        return None
    import gguf

    field = gguf.GGUFReader(source).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else None
