"""A loopback emulator of OpenAI's fine-tuning API, for tests and offline dry runs.

Run it as ``python -m ftkit_openai.emulator --port 8765`` and point the ``openai`` client (or
ftkit) at ``http://127.0.0.1:8765/v1``. In Python::

    with EmulatorServer(EmulatorSettings(status_seconds=0.1, step_seconds=0.02)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test")

See ``docs/emulator.md`` for the routes, the timing, how fine-tuned models answer, and faults.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from ftkit_openai.emulator.faults import FaultRule
from ftkit_openai.emulator.http import Emulator, UvicornServer
from ftkit_openai.emulator.settings import EmulatorSettings

__all__ = ["EmulatorServer", "EmulatorSettings", "FaultRule"]


class EmulatorServer:
    """The emulator in a background thread of this process, on 127.0.0.1 and a free port.

    Args:
        settings: timing and behaviour; defaults to ``EmulatorSettings.from_env()``.
        port: the port; 0 picks a free one.
    """

    def __init__(self, settings: EmulatorSettings | None = None, port: int = 0, host: str = "127.0.0.1") -> None:
        self.emulator = Emulator(settings or EmulatorSettings.from_env())
        self.server = UvicornServer(self.emulator, host, port)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.server.address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.server.address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` for the openai client: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    @property
    def settings(self) -> EmulatorSettings:
        """The live settings (changes apply to the running server)."""
        return self.emulator.state.settings

    def start(self) -> EmulatorServer:
        """Serve in a daemon thread (uvicorn, with an event loop of its own); returns once it accepts."""
        self._thread = threading.Thread(target=self.server.serve, name="openai-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started():
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the OpenAI emulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.server.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- control (same as the HTTP control routes)

    def inject(self, kind: str, path: str = "/", **kwargs: Any) -> None:
        """Make the next matching request(s) fail; see :class:`FaultRule`."""
        self.emulator.faults.add(FaultRule(kind=kind, path=path, **kwargs))  # type: ignore[arg-type]

    def clear_faults(self) -> None:
        """Drop faults not yet used."""
        self.emulator.faults.clear()

    def set_model(self, model: str, *, shutdown_date: str | None = None, shut_down: bool = False) -> dict[str, Any]:
        """Give a model a ``shutdown_date`` (ISO date) and/or shut it down now: it then answers 404.

        Shutting down a base model shuts down every fine-tune built on it.
        """
        with self.emulator.state.lock:
            return self.emulator.state.set_model_lifecycle(model, shutdown_date, shut_down)

    def requests(self) -> list[dict[str, Any]]:
        """Every request seen: time, method, path (without /v1), x-stainless-retry-count."""
        with self.emulator.log_lock:
            return list(self.emulator.requests)

    def violations(self) -> list[str]:
        """Answers that broke the OpenAPI excerpt (with ``validate_responses``)."""
        with self.emulator.log_lock:
            return list(self.emulator.violations)


def control(base_url: str, route: str, payload: dict[str, Any] | None = None, method: str = "POST") -> Any:
    """Call a control route of an emulator running in another process (``route`` e.g. ``faults``)."""
    root = base_url.removesuffix("/").removesuffix("/v1")
    r = httpx.request(method, f"{root}/_emulator/{route}", json=payload, timeout=10)
    r.raise_for_status()
    return r.json()
