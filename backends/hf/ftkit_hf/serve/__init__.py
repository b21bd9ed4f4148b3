"""``ftkit serve``: fine-tuned models behind an OpenAI-compatible HTTP endpoint.

An app that called an OpenAI fine-tune through the ``openai`` client switches to the served model by
changing ``base_url`` and the model name::

    from ftkit_hf.serve import Server
    with Server(["spam=JOB_ID"]) as server:          # or: ftkit serve spam=JOB_ID --port 8000
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        client.chat.completions.create(model="spam", messages=[...], logprobs=True, top_logprobs=5)

Engine: transformers on the job's own device with ftkit's packed label scorer (concurrent
classification requests are batched; see :mod:`ftkit_hf.serve.engine`). Classification jobs answer
their training prompt with exact label probabilities (:mod:`ftkit_hf.serve.served`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType

from ftkit.errors import ConfigError
from ftkit_hf.serve.served import ServedModel

__all__ = ["ServedModel", "Server", "load_models", "serve"]


def load_models(refs: Sequence[str], *, base: Sequence[str] = (), device: str | None = None,
                precision: str | None = None) -> list[ServedModel]:
    """Load the models to serve.

    Args:
        refs: job ids (or unique prefixes), each optionally ``ALIAS=JOB_ID`` to serve it under another name.
        base: base model names or folders to serve untrained (``smollm2-135m``), optionally ``ALIAS=MODEL``.
        device: the base models' device (``auto``, ``cpu``, ``cuda``...); a job keeps the one it was run with.
        precision: the base models' precision (``auto``, ``fp32``, ``bf16``); a job keeps its own.

    Raises:
        ConfigError: no models, a job that is not served locally (an OpenAI job), or a bad reference.
        JobError: a job that has not succeeded.
    """
    from ftkit.job import FineTuneJob
    from ftkit_hf.backend import HFBackend
    from ftkit_hf.config import HFConfig
    from ftkit_hf.predictor import HFPredictor

    if not refs and not base:
        raise ConfigError("nothing to serve: give job ids and/or --base MODEL")
    out: list[ServedModel] = []
    for ref in refs:
        alias, _, job_id = ref.rpartition("=")
        job = FineTuneJob.get(job_id)
        predictor = job.model()
        if not isinstance(predictor, HFPredictor):
            raise ConfigError(f"job {job.id} ran on backend {job.record.backend!r}, whose model is served by that "
                              "provider; ftkit serve serves hf and remote jobs (weights on this machine)")
        out.append(ServedModel(alias or job.id, predictor, owned_by=f"ftkit:{job.record.backend}"))
    for ref in base:
        alias, _, name = ref.rpartition("=")
        cfg = HFConfig.model_validate({k: v for k, v in (("device", device), ("precision", precision)) if v})
        out.append(ServedModel(alias or name, HFBackend().base_model(name, cfg), owned_by="ftkit:base"))
    return out


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Server:
    """The server in a background thread (for tests, notebooks and benchmarks); a context manager.

    Args:
        models: job references (see :func:`load_models`) or loaded :class:`ServedModel` objects.
        host: the interface to listen on (loopback by default).
        port: the port (0: a free one).
        api_key: require this bearer token.
        max_batch: the most texts one classification batch scores.
    """

    def __init__(self, models: Sequence[str | ServedModel], *, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, max_batch: int = 64) -> None:
        try:
            import uvicorn
        except ImportError:
            raise ConfigError("the server needs FastAPI and uvicorn: pip install 'ftkit-hf[serve]'") from None
        from ftkit_hf.serve.app import build_app
        from ftkit_hf.serve.engine import Engine

        refs = [m for m in models if isinstance(m, str)]
        loaded = [m for m in models if isinstance(m, ServedModel)] + (load_models(refs) if refs else [])
        self.engine = Engine(max_batch=max_batch)
        self.app = build_app(loaded, api_key=api_key, engine=self.engine)
        self.config = uvicorn.Config(self.app, host=host, port=port or _free_port(host), log_level="warning",
                                     lifespan="off", access_log=False)
        self._server = uvicorn.Server(self.config)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), name="ftkit-serve",
                                        daemon=True)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8000`` (the ``openai`` client's ``base_url`` is this + ``/v1``)."""
        return f"http://{self.config.host}:{self.config.port}"

    def start(self) -> Server:
        """Start serving; returns once the port answers."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ConfigError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop accepting requests and end the threads."""
        self._server.should_exit = True
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=30)
        self.engine.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(models: Sequence[str | ServedModel], *, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, max_batch: int = 64) -> None:
    """Serve until interrupted (what ``ftkit serve`` runs).

    Args:
        models: job references (``JOB_ID`` or ``ALIAS=JOB_ID``) or loaded models.
        host: the interface (``0.0.0.0`` to accept other machines; set an API key then).
        port: the port.
        api_key: require this bearer token.
        max_batch: the most texts one classification batch scores.
    """
    import uvicorn

    from ftkit_hf.serve.app import build_app
    from ftkit_hf.serve.engine import Engine

    refs = [m for m in models if isinstance(m, str)]
    loaded = [m for m in models if isinstance(m, ServedModel)] + (load_models(refs) if refs else [])
    engine = Engine(max_batch=max_batch)
    try:
        uvicorn.run(build_app(loaded, api_key=api_key, engine=engine), host=host, port=port, log_level="info")
    finally:
        engine.close()
