"""The shared state of one remote run: where it lives (``ctx.state["remote"]``), its events, and teardown.

Teardown is here because every phase needs it: destroy by id (or by label when the id was never
learned), wait until the provider no longer knows the instance, record the cost, close the lease.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ftkit.backend import ActualCost, JobContext, PollResult
from ftkit.errors import APIError, BackendError
from ftkit.events import Event, JobStatus
from ftkit_remote.config import RemoteConfig
from ftkit_remote.leases import LeaseLedger
from ftkit_remote.providers import (
    LABEL_PREFIX,
    InstanceState,
    Provider,
    SshEndpoint,
    make_provider,
)
from ftkit_remote.ssh import SshError, connect, forget_host, load_or_create_key
from ftkit_remote.trainer import WORKER_COMMAND, WorkerStatus

DEAD_STATES = (InstanceState.FAILED, InstanceState.STOPPED, InstanceState.TERMINATING, InstanceState.TERMINATED)
DEFAULT_WORKER = WORKER_COMMAND


class RunBase:
    """State, events and teardown shared by the provisioning and following steps of a run."""

    def __init__(self, ctx: JobContext, config: RemoteConfig, ledger: LeaseLedger | None = None) -> None:
        self.ctx = ctx
        self.config = config
        self.provider: Provider = make_provider(config.provider, config.provider_options)
        self.ledger = ledger or LeaseLedger()
        self.st: dict[str, Any] = ctx.state.setdefault("remote", {})
        self.label = LABEL_PREFIX + ctx.id
        self._key = load_or_create_key(Path(config.ssh_key_path).expanduser() if config.ssh_key_path else None)
        self.events: list[Event] = []

    async def aclose(self) -> None:
        """Release the provider's connections."""
        await self.provider.aclose()

    # ------------------------------------------------------------------ events

    def note(self, message: str, level: str = "info", kind: str = "message", **data: Any) -> None:
        """Record an event of the run itself (not of the worker)."""
        n = self.st["event_seq"] = int(self.st.get("event_seq", 0)) + 1
        self.events.append(Event(level=level, kind=kind, message=message, data=data, key=f"remote-{n}"))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ estimate
    def _endpoint(self) -> SshEndpoint:
        e = self.st["endpoint"]
        return SshEndpoint(e["host"], int(e["port"]), e["user"])

    def _take(self) -> list[Event]:
        pending = [Event.model_validate(e) for e in self.st.pop("pending_events", [])]
        out, self.events = pending + self.events, []
        return out

    def _final(self) -> PollResult:
        final = self.st.get("final") or {"status": "failed", "error": "the run ended without a status"}
        known = WorkerStatus.parse(final["status"])
        status = known.job_status if known else JobStatus.FAILED
        cost = self.st.get("actual_cost")
        actual = ActualCost(**cost) if cost else None
        model = str(self.ctx.workdir / "model") if status is JobStatus.SUCCEEDED else None
        return PollResult(status=status, backend_status=final["status"], events=self._take(), model=model,
                          actual_cost=actual, error=final.get("error"))  # fmt: skip

    # ------------------------------------------------------------------ cancel and teardown

    async def destroy_orphan(self, reason: str) -> None:
        """Destroy what carries this job's label (a machine rented by a client since killed), close its lease."""
        self.st["final"] = {"status": "failed", "error": reason}
        await self._teardown(reason)

    async def _teardown(self, reason: str) -> None:
        """Destroy (by id, or by label when the id was never learned), verify, cost, close the lease."""
        self.st["phase"], self.st["final_reason"] = "destroying", reason
        self.st.setdefault("final", {"status": "failed", "error": reason})
        # The ledger is bookkeeping: a ledger that cannot be read or written must never stop the destroy.
        lease = self._ledger("read the lease", self.ledger.get, self.label)
        if lease is not None and lease.status != "released":
            self._ledger("mark the lease destroying", self.ledger.update, self.label, status="destroying", note=reason)
        ids: list[str] = []
        if self.provider.caps.rents:
            ids = [str(self.st["instance_id"])] if self.st.get("instance_id") else []
            if not ids:  # killed between create and learning the id: find it by label
                ids = [i.instance_id for i in await self.provider.list(self.label) if i.label == self.label]
        else:
            await self._stop_on_own_host()
        gone = True
        for iid in ids:
            gone = await self._destroy_verified(iid) and gone
        if self.st.get("endpoint"):
            forget_host(self._endpoint())
        if not gone:
            self.note(f"could not verify that {ids} is gone: run `ftkit remote gc`", level="error")
            return  # the lease stays open for gc
        created = self.st.get("created_at")
        price = float(self.st.get("price_per_hour") or 0.0)
        if created is not None:
            hours = (time.time() - float(created)) / 3600
            source = f"${price:.4f}/h × time from create to verified destroy (upper bound)"
            self.st["actual_cost"] = {"usd": round(price * hours, 6), "hours": hours, "source": source}
            self.note(f"machine destroyed ({reason}); cost ${price * hours:.4f}", kind="cost",
                      usd=price * hours, hours=hours)  # fmt: skip
        if lease is None or lease.status != "released":  # None: unreadable, or never opened (KeyError is fine)
            cost = (self.st.get("actual_cost") or {}).get("usd")
            self._ledger("close the lease", self.ledger.release, self.label, cost, reason, missing_ok=True)
        self.st["phase"] = "done"

    def _ledger(self, what: str, call: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
        """Call the ledger; on failure say so in the events and go on (gc closes what is left open)."""
        try:
            return call(*args, **kwargs)
        except KeyError:
            if not missing_ok:
                self.note(f"lease ledger: no lease {self.label} to {what}", level="warning")
        except Exception as e:  # any ledger failure: the machine comes first
            self.note(f"lease ledger: could not {what} ({type(e).__name__}: {e}); going on with the teardown, "
                      "`ftkit remote gc` closes what stays open", level="error")  # fmt: skip
        return None

    async def _stop_on_own_host(self) -> None:
        """On a host the user owns nothing is destroyed: stop our worker and dead-man switch only."""
        if not (self.st.get("endpoint") and self.st.get("remote_job")):
            return
        job = self.st["remote_job"]
        try:
            async with connect(self._endpoint(), self._key, timeout=10) as s:
                await s.run(f'for f in worker.pid deadman.pid; do [ -f {job}/$f ] && kill -TERM -- -"$(cat {job}/$f)"'
                            " 2>/dev/null; done; true", timeout=30)  # fmt: skip
        except SshError:
            pass

    async def _destroy_verified(self, instance_id: str, timeout: float = 120.0) -> bool:
        """Destroy and wait until the provider no longer reports the instance (True) or give up (False)."""
        deadline = time.monotonic() + timeout
        delay = 0.2
        while True:
            try:
                await self.provider.destroy(instance_id)
                inst = await self.provider.get(instance_id)
                if inst is None or inst.state is InstanceState.TERMINATED:
                    return True
            except (APIError, BackendError) as e:
                self.note(f"destroy of {instance_id} failed: {e}; retrying", level="warning")
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
