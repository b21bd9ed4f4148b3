"""The following step of a run: read the worker's job folder over SSH, and collect its results at the end.

Status first, events second (the protocol of :mod:`ftkit_hf.protocol`): the worker appends its last
events before it writes a final status, so a final status read first means the events read after it
are complete. Events are read from the byte offset kept in the run's state, so a reconnecting client
(after a dropped connection, or from another process) neither loses nor repeats one.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ftkit.events import Event
from ftkit_remote.core import RunCore
from ftkit_remote.ssh import SshError, SshSession, connect
from ftkit_remote.state import Outcome
from ftkit_remote.teardown import Teardown
from ftkit_remote.trainer import CANCEL, EVENTS, LOG, MODEL, SPEC, STATUS, TERMINAL, parse_events, parse_status

EXIT_CODE = "exit_code"  # written by ftkit_run.sh once the worker process is gone


class Following:
    """Read the worker's status and events; fetch, record and tear down once it ended."""

    def __init__(self, core: RunCore, teardown: Teardown) -> None:
        self.core = core
        self.teardown = teardown

    @property
    def job(self) -> str:
        """The job folder on the machine."""
        assert self.core.state.remote_job is not None, "the worker was started"
        return self.core.state.remote_job

    async def read(self) -> tuple[str, list[Event]]:
        """One look at the worker: its status and new events; when it ended, also fetch and tear down.

        Raises:
            SshError: the machine did not answer (the caller decides whether it is gone).
        """
        async with connect(self.core.endpoint, self.core.key) as s:
            status = await self._read_json(s, STATUS) or {"status": "starting"}
            exit_code = (await s.read_from(f"{self.job}/{EXIT_CODE}", 0)).strip()
            events = await self.read_events(s)
            vendor = str(status.get("status", "starting"))
            if vendor in TERMINAL or exit_code:
                await self._finish(s, vendor, status, exit_code)
        return vendor, events

    async def _finish(self, s: SshSession, vendor: str, status: dict[str, Any], exit_code: bytes) -> None:
        job, workdir, st = self.job, self.core.ctx.workdir, self.core.state
        if vendor not in TERMINAL:
            # The worker may have written its final status and exited after the status was read: read it again
            # before calling the exit unexplained (the exit code is written only after the worker is gone).
            status = await self._read_json(s, STATUS) or status
            vendor = status.get("status", vendor)
        if vendor not in TERMINAL:
            log = (await s.read_from(f"{job}/{LOG}", 0))[-2000:].decode("utf-8", "replace")
            why = f"the worker exited ({exit_code.decode()}) without a status. Log tail:\n{log}"
            vendor, status = "failed", {"error": why}
        assert st.deadline is not None
        if vendor == "cancelled" and not st.cancel_requested and time.time() >= st.deadline - 5:
            vendor, status = "failed", {"error": "max_duration reached: the dead-man switch stopped the worker"}
        if vendor == "succeeded":
            await s.get(f"{job}/{MODEL}", workdir / MODEL)
            await s.get(f"{job}/{SPEC}", workdir / "remote_spec.json")
            self.core.note(f"adapter fetched to {workdir / MODEL}")
        with contextlib.suppress(SshError):
            await s.get(f"{job}/{LOG}", workdir / LOG)
        st.final = Outcome(status=vendor, error=status.get("error"))
        await self.teardown.run(f"worker {vendor}")

    async def read_events(self, s: SshSession) -> list[Event]:
        """The worker's events since the saved offset (a torn last line is left for the next read)."""
        st = self.core.state
        events, st.events = parse_events(await s.read_from(f"{self.job}/{EVENTS}", st.events.offset), st.events)
        return events

    async def _read_json(self, s: SshSession, name: str) -> dict[str, Any] | None:
        return parse_status(await s.read_from(f"{self.job}/{name}", 0))

    async def stop_worker(self) -> None:
        """Ask the worker to stop (it checkpoints and writes ``cancelled``) and read what it wrote meanwhile."""
        job = self.job
        async with connect(self.core.endpoint, self.core.key, timeout=10) as s:
            # The cancel file reaches every rank of a torchrun worker between steps; SIGTERM (which
            # torchrun forwards, then kills after 30 s) covers a worker that does not poll it.
            await s.run(f'touch {job}/{CANCEL}; kill -TERM -- -"$(cat {job}/worker.pid)" 2>/dev/null; sleep 1',
                        timeout=30)  # fmt: skip
            self.core.events += await self.read_events(s)
