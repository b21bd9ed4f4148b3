"""``ftkit serve`` and ``ftkit export``: the hf backend's commands, mounted by the core CLI.

The core finds them through the ``ftkit.cli`` entry-point group and never imports this package by
name; this module imports nothing heavy at load time (torch and transformers load inside the commands),
so ``ftkit --help`` stays fast. Errors reach the core's one top-level handler (``ftkit.cli_errors``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ftkit.errors import ConfigError

_err = Console(stderr=True, soft_wrap=True)
_out = Console(soft_wrap=True)


def serve(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Job ids to serve; ALIAS=JOB_ID serves one under ALIAS.", show_default=False),
    ] = None,
    base: Annotated[
        list[str] | None,
        typer.Option("--base", help="Also serve a base model (e.g. smollm2-135m); ALIAS=MODEL to rename. Repeatable."),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Interface; 0.0.0.0 accepts other machines (set an API key).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="FTKIT_SERVE_API_KEY",
            help="Require this bearer token (or set FTKIT_SERVE_API_KEY).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Device for --base models (jobs keep their own).")] = None,
    max_batch: Annotated[int, typer.Option(help="Most texts scored in one classification batch.")] = 64,
) -> None:
    """Serve fine-tuned models behind an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("the server needs FastAPI and uvicorn: pip install 'ftkit-hf[serve]'") from None
    from ftkit_hf.serve import load_models
    from ftkit_hf.serve import serve as run

    loaded = load_models(models or [], base=base or [], device=device)
    names = ", ".join(m.name for m in loaded)
    _err.print(
        f"serving {names} on http://{host}:{port}/v1 (openai.OpenAI(base_url=..., api_key=...))", highlight=False
    )
    run(loaded, host=host, port=port, api_key=api_key, max_batch=max_batch)


def export(
    job_id: Annotated[str, typer.Argument(help="The job id (or a unique prefix).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="merged, gguf or ollama.")] = "gguf",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("export"),
    dtype: Annotated[str, typer.Option("--type", help="GGUF matrix type: f16, bf16, q8_0 or f32.")] = "f16",
) -> None:
    """Export a finished job's model: a merged transformers folder, a GGUF file, or GGUF + Ollama Modelfile."""
    from ftkit_hf.export_job import export_job

    written = export_job(job_id, fmt, out, dtype=dtype)
    for path in written:
        _out.print(str(path), highlight=False)
    if fmt == "ollama":
        name = os.path.basename(str(out).rstrip("/")) or "ftkit-model"
        _err.print(f"next: ollama create {name} -f {out / 'Modelfile'}", highlight=False)
