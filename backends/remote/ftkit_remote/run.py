"""One remote run as a state machine whose state lives in ``ctx.state["remote"]`` (so any process resumes it).

::

    submit():  search offers ─ max_cost guard ─ lease written ─ create ─ wait until usable ─ ship ─ start
               (any exception, Ctrl-C or SIGTERM in here destroys the instance before re-raising)
    poll():    running ── follow events over SSH (reconnecting after a drop, from the saved offset)
                      ├─ worker ended ─ fetch adapter + log ─ destroy ─ verify gone ─ cost ─ done
                      ├─ max_duration passed ─ destroy ─ failed
                      └─ instance gone (dead-man switch, preemption) ─ failed
    cancel():  stop the worker ─ destroy ─ verify ─ cancelled

Phases: ``creating → provisioning → running → destroying → done``. The lease ledger is written before
create and closed only after the instance is verified gone, so a run killed at any point is found
again by ``ftkit remote gc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import Any

from ftkit.backend import CostEstimate, PollResult
from ftkit.errors import BackendError, ConfigError, FtkitError
from ftkit.events import Event, JobStatus
from ftkit_remote.interrupts import signals_held
from ftkit_remote.jobfolder import stage_job_folder
from ftkit_remote.leases import Lease, public_options
from ftkit_remote.providers import (
    Offer,
)
from ftkit_remote.provision import Provisioning, Unusable
from ftkit_remote.runbase import DEAD_STATES
from ftkit_remote.shipping import stage_wheels
from ftkit_remote.ssh import HostKeyChanged, SshError, SshSession, connect
from ftkit_remote.trainer import EVENTS, TERMINAL, EventCursor, WorkerStatus, parse_events, parse_status

__all__ = ["RemoteRun", "Unusable"]


class RemoteRun(Provisioning):
    """Drives one job on one rented machine. Build one per backend call; all state is in ``ctx.state``."""

    def _hours(self) -> float:
        return self.config.setup_hours + self.config.estimated_train_hours

    async def _offers(self) -> list[Offer]:
        offers = []
        for offer in await self.provider.search_offers(self.config.offer_query()):
            # A price the guards cannot compare (nan, inf) or one below zero (or zero where the machine is rented)
            # would slip past max_cost: such an offer is never taken.
            if math.isfinite(offer.price_per_hour) and (offer.price_per_hour > 0 or not self.provider.caps.rents):
                offers.append(offer)
            else:
                self.note(f"offer {offer.offer_id} skipped: price {offer.price_per_hour!r}/h", level="warning")
        if not offers:
            raise ConfigError(
                f"[remote] no {self.config.provider} offer matches gpu_names={self.config.gpu_names or 'any'}, "
                f"num_gpus={self.config.num_gpus}, max_price_per_hour={self.config.max_price_per_hour}, "
                f"disk_gb={self.config.disk_gb}"
            )
        return offers

    async def estimate(self) -> CostEstimate:
        """The cheapest matching offer × (setup + training hours)."""
        offer = (await self._offers())[0]
        hours = self._hours()
        self.st["estimate_offer"] = offer.to_json()
        return CostEstimate(
            usd=round(offer.price_per_hour * hours, 4),
            hours=hours,
            assumptions=[
                f"{self.config.provider} offer {offer.offer_id}: {offer.num_gpus}× {offer.gpu_name} "
                f"at ${offer.price_per_hour:.4f}/h (disk {self.config.disk_gb} GB included)",
                f"{self.config.setup_hours} h boot/upload/download + {self.config.estimated_train_hours} h training "
                "(set estimated_train_hours)",
                f"the machine is destroyed after {self._max_duration_s() / 3600:.2f} h whatever happens",
            ],
        )

    def _max_duration_s(self, price: float | None = None) -> float:
        limit = self.config.max_duration_hours * 3600
        if self.ctx.spec.max_cost is not None and price:
            limit = min(limit, self.ctx.spec.max_cost / price * 3600)  # never bill past max_cost
        return limit

    # ------------------------------------------------------------------ submit

    async def submit(self) -> str:
        """Rent, wait until usable, ship, start. Destroys the machine if anything in here fails."""
        custom = self.config.worker_command is not None
        stage, model_dir = stage_job_folder(self.ctx, self.config.hf, custom)  # bad data fails before renting
        t = time.monotonic()
        plan = await asyncio.to_thread(stage_wheels, stage, self.config, not custom)  # a bad build too
        if plan is not None and plan.wheels:
            self.note(f"shipping {plan.describe()} ({time.monotonic() - t:.1f} s)",
                      wheels=[w.path.name for w in plan.wheels], wheels_s=round(time.monotonic() - t, 3))  # fmt: skip
        offers = await self._offers()
        best = offers[0]
        if self.ctx.spec.max_cost is not None and best.price_per_hour * self._hours() > self.ctx.spec.max_cost:
            raise ConfigError(
                f"[remote] cheapest offer now ${best.price_per_hour:.4f}/h × {self._hours():.2f} h exceeds "
                f"max_cost ${self.ctx.spec.max_cost:.2f}"
            )
        deadline = time.time() + self._max_duration_s(best.price_per_hour)
        self.ledger.open(
            Lease(label=self.label, job_id=self.ctx.id, provider=self.provider.name, deadline=deadline,
                  provider_options=public_options(self.config.provider_options), offer=best.to_json())
        )  # fmt: skip
        self.st.update(label=self.label, deadline=deadline, phase="creating", events_offset=0, events_line=0)
        try:
            instance_id, offer = await self._create(offers)
            self.st.update(instance_id=instance_id, created_at=time.time(), price_per_hour=offer.price_per_hour,
                           offer=offer.to_json(), phase="provisioning")  # fmt: skip
            self.ledger.update(self.label, instance_id=instance_id, status="active",
                               price_per_hour=offer.price_per_hour, offer=offer.to_json())  # fmt: skip
            self.note(f"rented {offer.num_gpus}× {offer.gpu_name} ({self.provider.name} {instance_id}) "
                      f"at ${offer.price_per_hour:.4f}/h", offer=offer.to_json())  # fmt: skip
            t0 = time.monotonic()
            endpoint, gpus = await self._wait_ready(instance_id)
            t1 = time.monotonic()
            await self._ship_and_start(endpoint, gpus, stage, model_dir)
            t2 = time.monotonic()
            self.st["timings"] = {"ready_s": round(t1 - t0, 3), "ship_and_start_s": round(t2 - t1, 3)}
            self.note(f"usable after {t1 - t0:.1f} s, shipped and started in {t2 - t1:.1f} s", **self.st["timings"])
            self.ledger.update(self.label, started=True)
            self.st["phase"] = "running"
            # submit() returns only an id: keep its events in the state for the first poll to report.
            self.st["pending_events"] = [e.model_dump(mode="json") for e in self._take()]
            return f"{self.provider.name}:{instance_id}"
        except BaseException as e:  # errors, Ctrl-C, SIGTERM (as KeyboardInterrupt), SystemExit: never leave it running
            why = "interrupted" if isinstance(e, KeyboardInterrupt | asyncio.CancelledError) else str(e)
            why = why or type(e).__name__
            # A second Ctrl-C or SIGTERM would cut the teardown short and leave the machine billing: hold them.
            with signals_held("destroying the machine before stopping"):
                await asyncio.shield(self._teardown(f"setup failed: {why}"))
            if isinstance(e, FtkitError) or not isinstance(e, Exception):
                raise  # ftkit's own errors, and interruptions and exits, go on as they are
            raise BackendError(f"[remote] setup failed: {type(e).__name__}: {e}") from e

    async def poll(self) -> PollResult:
        """Follow the worker; at its end fetch, destroy, verify, cost."""
        phase = self.st.get("phase")
        if phase == "done":
            return self._final()
        if phase in ("creating", "provisioning", None):
            return PollResult(status=JobStatus.QUEUED, backend_status=phase or "creating", events=self._take())
        if phase == "destroying":
            await self._teardown(self.st.get("final_reason", "finishing teardown"))
            return self._final()
        if time.time() > float(self.st["deadline"]):
            self.st["final"] = {"status": "failed", "error": "max_duration reached: the machine was destroyed"}
            self.note("max_duration reached: destroying the machine", level="error")
            await self._teardown("max_duration reached")
            return self._final()
        try:
            async with connect(self._endpoint(), self._key) as s:
                # Status first, events second: the worker appends its last events before it writes a final
                # status, so a final status read first means the events read after it are complete.
                status = await self._read_json(s, "status.json") or {"status": "starting"}
                exit_code = (await s.read_from(f"{self.st['remote_job']}/exit_code", 0)).strip()
                worker_events = await self._read_events(s)
                vendor = status.get("status", "starting")
                if vendor in TERMINAL or exit_code:
                    await self._finish(s, vendor, status, exit_code)
        except HostKeyChanged:
            raise  # never talk to a machine that changed its key; cancel (or the deadline) destroys it
        except SshError as e:
            inst = await self.provider.get(str(self.st["instance_id"]))
            if inst is None or inst.state in DEAD_STATES:
                what = inst.state.value if inst else "not found"
                self.st["final"] = {"status": "failed", "error": f"the machine is gone ({what}): preempted, "
                                    "destroyed by the dead-man switch, or by hand"}  # fmt: skip
                await self._teardown("machine gone")
                return self._final()
            self.note(f"lost the SSH connection ({e}); the job keeps running there, reconnecting next time",
                      level="warning")  # fmt: skip
            return PollResult(status=JobStatus.RUNNING, backend_status="disconnected", events=self._take())
        if self.st.get("phase") == "done":
            result = self._final()
            return result.model_copy(update={"events": worker_events + result.events})
        known = WorkerStatus.parse(vendor)
        if known is None:
            self.note(f"unknown worker status {vendor!r}", level="error")
        mapped = known.job_status if known else JobStatus.RUNNING
        return PollResult(status=mapped, backend_status=vendor, events=worker_events + self._take())

    async def _finish(self, s: SshSession, vendor: str, status: dict[str, Any], exit_code: bytes) -> None:
        job = self.st["remote_job"]
        workdir = self.ctx.workdir
        if vendor not in TERMINAL:
            # The worker may have written its final status and exited after the status was read: read it again
            # before calling the exit unexplained (the exit code is written only after the worker is gone).
            status = await self._read_json(s, "status.json") or status
            vendor = status.get("status", vendor)
        if vendor not in TERMINAL:
            log = (await s.read_from(f"{job}/worker.log", 0))[-2000:].decode("utf-8", "replace")
            why = f"the worker exited ({exit_code.decode()}) without a status. Log tail:\n{log}"
            vendor, status = "failed", {"error": why}
        if vendor == "cancelled" and not self.st.get("cancel_requested") and time.time() >= self.st["deadline"] - 5:
            vendor, status = "failed", {"error": "max_duration reached: the dead-man switch stopped the worker"}
        if vendor == "succeeded":
            await s.get(f"{job}/model", workdir / "model")
            await s.get(f"{job}/spec.json", workdir / "remote_spec.json")
            self.note(f"adapter fetched to {workdir / 'model'}")
        with contextlib.suppress(SshError):
            await s.get(f"{job}/worker.log", workdir / "worker.log")
        self.st["final"] = {"status": vendor, "error": status.get("error")}
        await self._teardown(f"worker {vendor}")

    async def _read_events(self, s: SshSession) -> list[Event]:
        cursor = EventCursor(offset=int(self.st.get("events_offset", 0)), line=int(self.st.get("events_line", 0)))
        out, cursor = parse_events(await s.read_from(f"{self.st['remote_job']}/{EVENTS}", cursor.offset), cursor)
        self.st["events_offset"], self.st["events_line"] = cursor.offset, cursor.line
        return out

    async def _read_json(self, s: SshSession, name: str) -> dict[str, Any] | None:
        return parse_status(await s.read_from(f"{self.st['remote_job']}/{name}", 0))

    async def cancel(self, reason: str = "cancelled") -> None:
        """Stop the worker (it writes ``cancelled``), fetch what it wrote, destroy the machine."""
        if self.st.get("phase") == "done":
            return
        self.st["cancel_requested"] = True
        if self.st.get("endpoint") and self.st.get("remote_job"):
            job = self.st["remote_job"]
            try:
                async with connect(self._endpoint(), self._key, timeout=10) as s:
                    # The cancel file reaches every rank of a torchrun worker between steps; SIGTERM (which
                    # torchrun forwards, then kills after 30 s) covers a worker that does not poll it.
                    await s.run(
                        f'touch {job}/cancel; kill -TERM -- -"$(cat {job}/worker.pid)" 2>/dev/null; sleep 1', timeout=30
                    )
                    self.events += await self._read_events(s)
            except SshError as e:
                self.note(f"could not reach the machine to stop the worker ({e}); destroying it anyway",
                          level="warning")  # fmt: skip
        self.st["final"] = {"status": "cancelled", "error": None if reason == "cancelled" else reason}
        await self._teardown(reason)
