"""What the three provider emulators share: instances with a lifecycle on a clock, per-second
billing, scripted faults, per-endpoint rate limits, SSH sandboxes, and a loopback server thread.

An emulated instance moves through its provider's statuses on the emulator's clock
(``boot_s`` pending/loading, then running; sshd answers ``sshd_delay_s`` after that). Billing
accrues per second: compute while running, storage while the instance exists.

Faults are queued by name per test (``emu.faults.add("create", "offer_gone")``) and consumed by the
next matching call; a few are instance settings instead (``stuck``, ``gpu``, ``free_disk_gb``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftkit_remote.emulators.sandbox import SshSandbox


class Clock:
    """Wall time plus an offset tests can advance (to pass ``max_duration`` without waiting)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Seconds since the epoch, as the emulator sees them."""
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the emulator's time forward."""
        self.offset += seconds


class Faults:
    """A queue of scripted faults per call site: ``add("create", "offer_gone")`` fails the next create."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[str]] = defaultdict(deque)

    def add(self, where: str, fault: str, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` calls of ``where``."""
        self._queues[where].extend([fault] * times)

    def take(self, where: str) -> str | None:
        """The next fault for ``where``, consumed; None when none is queued."""
        q = self._queues.get(where)
        return q.popleft() if q else None


class RateGate:
    """A minimum interval between calls per endpoint, the way vast enforces its limits."""

    def __init__(self, intervals: dict[str, float]) -> None:
        self.intervals = intervals
        self._last: dict[str, float] = {}
        self.refused = 0

    def too_soon(self, endpoint: str) -> bool:
        """True (and the call is refused) when the endpoint was called less than its interval ago."""
        gap = self.intervals.get(endpoint, 0.0)
        now = time.monotonic()
        if gap and now - self._last.get(endpoint, -1e9) < gap:
            self.refused += 1
            return True
        self._last[endpoint] = now
        return False


@dataclass
class EmuInstance:
    """One emulated instance: provider fields live in ``fields``; the lifecycle is shared."""

    id: str
    label: str
    created_at: float
    compute_per_hour: float
    storage_per_hour: float
    boot_s: float
    sshd_delay_s: float
    sandbox: SshSandbox
    fields: dict[str, Any] = field(default_factory=dict)
    stuck: bool = False  # never leaves loading/booting
    failed: str | None = None  # a failure message (OCI error, unhealthy...)
    stopped: bool = False  # created stopped / outbid / exited
    sshd_down: bool = False  # a test holds sshd down (the "disconnect mid-run" fault); the machine runs on
    destroyed_at: float | None = None
    scoped_key: str = field(default_factory=lambda: "scoped-" + secrets.token_hex(12))

    def running_since(self) -> float | None:
        """When the instance became running, or None while it is not."""
        if self.stuck or self.failed or self.stopped:
            return None
        return self.created_at + self.boot_s

    def is_running(self, now: float) -> bool:
        """True when the provider reports it running at ``now``."""
        start = self.running_since()
        end = self.destroyed_at if self.destroyed_at is not None else now
        return start is not None and start <= now and start <= end and self.destroyed_at is None

    def sshd_due(self, now: float) -> bool:
        """True once sshd should answer."""
        start = self.running_since()
        return self.destroyed_at is None and start is not None and now >= start + self.sshd_delay_s

    def cost(self, now: float) -> float:
        """USD billed so far: compute per second while running, storage per second while it exists."""
        end = self.destroyed_at if self.destroyed_at is not None else now
        storage = max(0.0, end - self.created_at) * self.storage_per_hour / 3600
        start = self.running_since()
        compute = max(0.0, end - start) * self.compute_per_hour / 3600 if start is not None else 0.0
        return compute + storage


class EmulatorState:
    """An emulated provider account: its key, instances, clock, faults and sandboxes.

    Args:
        workdir: where each instance's sandbox folder is made.
        api_key: the account key the emulator accepts.
        boot_s: seconds an instance spends booting / loading before it runs.
        sshd_delay_s: seconds after running before sshd answers (connection refused until then).
        ssh_host: loopback address the sandboxes listen on.
    """

    provider = "base"

    def __init__(
        self,
        workdir: Path,
        api_key: str = "test-key",
        boot_s: float = 0.3,
        sshd_delay_s: float = 0.2,
        ssh_host: str = "127.0.0.1",
        rate_limits: dict[str, float] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.api_key = api_key
        self.boot_s = boot_s
        self.sshd_delay_s = sshd_delay_s
        self.ssh_host = ssh_host
        self.clock = Clock()
        self.faults = Faults()
        self.rate = RateGate(rate_limits or {})
        self.instances: dict[str, EmuInstance] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every call, for tests
        self.base_url = ""  # set once the server listens
        self._next_id = 1000 + secrets.randbelow(1000)
        self.sandbox_gpu: dict[str, Any] = {"gpu_name": "NVIDIA A100-SXM4-80GB", "num_gpus": 1}
        self.sandbox_free_disk_gb: float | None = None
        # Extra environment of every machine, as an image would set it (e.g. PIP_FIND_LINKS for offline pip).
        self.sandbox_env: dict[str, str] = {}

    def new_id(self) -> int:
        """The next instance id."""
        self._next_id += 1
        return self._next_id

    def authorized(self, header: str | None, query_key: str | None, instance_id: str | None = None) -> bool:
        """Bearer header or ``api_key`` query parameter; an instance's scoped key only for itself."""
        key = header[7:] if header and header.startswith("Bearer ") else query_key
        if key == self.api_key:
            return True
        inst = self.instances.get(instance_id or "")
        return inst is not None and key == inst.scoped_key

    def new_instance(
        self, label: str, compute_per_hour: float, storage_per_hour: float, public_key: str, env: dict[str, str],
        ssh_host: str | None = None, ssh_port: int | None = None, **fields: Any,
    ) -> EmuInstance:  # fmt: skip
        """Create an instance with its (not yet started) sandbox."""
        iid = str(self.new_id())
        host = ssh_host or self.ssh_host
        sandbox = SshSandbox(
            f"{self.provider}-{iid}-{secrets.token_hex(3)}", self.workdir / f"{self.provider}-{iid}", host,
            ssh_port or free_port(host), public_key, env=self.sandbox_env | env, free_disk_gb=self.sandbox_free_disk_gb,
            **self.sandbox_gpu,
        )  # fmt: skip
        inst = EmuInstance(
            iid, label, self.clock.now(), compute_per_hour, storage_per_hour, self.boot_s, self.sshd_delay_s,
            sandbox, fields,
        )  # fmt: skip
        self.instances[iid] = inst
        return inst

    def live(self) -> list[EmuInstance]:
        """Instances not destroyed."""
        return [i for i in self.instances.values() if i.destroyed_at is None]

    async def destroy(self, inst: EmuInstance) -> None:
        """Stop billing, stop sshd and kill the machine's processes."""
        if inst.destroyed_at is None:
            inst.destroyed_at = self.clock.now()
        await inst.sandbox.stop()

    async def tick(self) -> None:
        """Start sshd on instances that reached it; called every 50 ms by the server."""
        now = self.clock.now()
        for inst in self.live():
            if inst.sshd_due(now) and not inst.sandbox.running and not inst.sshd_down:
                await inst.sandbox.start()

    async def shutdown(self) -> None:
        """Stop every sandbox (the emulator is going away). Instances stay recorded for leak checks."""
        for inst in self.instances.values():
            await inst.sandbox.stop()

    def total_cost(self) -> float:
        """USD billed across all instances."""
        now = self.clock.now()
        return sum(i.cost(now) for i in self.instances.values())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmulatorServer:
    """Runs an emulator app with uvicorn on a loopback port in a background thread.

    The sandboxes' SSH servers run in the same event loop, so one thread serves a whole account.
    """

    def __init__(self, app: Any, state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.state = state
        self._config = uvicorn.Config(app, host=host, port=port or free_port(host), log_level="warning",
                                      lifespan="off", access_log=False)  # fmt: skip
        self._server = uvicorn.Server(self._config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name=f"emulator-{state.provider}", daemon=True)

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:38411``."""
        return f"http://{self._config.host}:{self._config.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        async def ticker() -> None:
            while not self._server.should_exit:
                with contextlib.suppress(Exception):  # a tick must never kill the emulator
                    await self.state.tick()
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(ticker())
        await self._server.serve()
        task.cancel()
        await self.state.shutdown()

    def start(self) -> EmulatorServer:
        """Start serving; returns once the port answers."""
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("emulator did not start")
            time.sleep(0.02)
        self.state.base_url = self.url
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine in the emulator's loop (e.g. ``state.destroy(inst)``) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Stop serving, stop all sandboxes and join the thread."""
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for slow handlers (the slow_response fault sleeps 30 s)
        self._thread.join(timeout=20)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def remove_tree(path: Path) -> None:
    """Remove a sandbox folder, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
