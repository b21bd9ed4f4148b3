"""One remote run: composed steps over one typed state (``ctx.state["remote"]``, so any process resumes it).

The steps are :class:`~ftkit_remote.shipping.Shipping` (stage, upload, start),
:class:`~ftkit_remote.provision.Provisioning` (offers, create, wait until usable),
:class:`~ftkit_remote.follow.Following` (status, events, collect) and
:class:`~ftkit_remote.teardown.Teardown` (destroy, verify, cost, lease); they share a
:class:`~ftkit_remote.core.RunCore` whose :class:`~ftkit_remote.state.RunState` is the only state.

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
import time

from ftkit.backend import CostEstimate, JobContext, PollResult
from ftkit.errors import BackendError, ConfigError, FtkitError
from ftkit.events import JobStatus
from ftkit_remote.config import RemoteConfig
from ftkit_remote.core import RunCore
from ftkit_remote.follow import Following
from ftkit_remote.interrupts import signals_held
from ftkit_remote.leases import Lease, LeaseLedger, public_options
from ftkit_remote.provision import Provisioning, Unusable
from ftkit_remote.shipping import Shipping
from ftkit_remote.ssh import HostKeyChanged, SshError
from ftkit_remote.state import Outcome, RunState
from ftkit_remote.teardown import DEAD_STATES, Teardown
from ftkit_remote.trainer import EventCursor, WorkerStatus

__all__ = ["RemoteRun", "Unusable"]


class RemoteRun:
    """Drives one job on one rented machine. Build one per backend call; call :meth:`save` after it."""

    def __init__(self, ctx: JobContext, config: RemoteConfig, ledger: LeaseLedger | None = None) -> None:
        self.core = RunCore(ctx, config, ledger)
        self.teardown = Teardown(self.core)
        self.shipping = Shipping(self.core)
        self.provisioning = Provisioning(self.core, self.shipping, self.teardown)
        self.following = Following(self.core, self.teardown)

    @property
    def state(self) -> RunState:
        """The run's one state."""
        return self.core.state

    def save(self) -> None:
        """Persist the state into ``ctx.state`` (the registry stores it after each backend call)."""
        self.core.save()

    async def aclose(self) -> None:
        """Release the provider's connections."""
        await self.core.aclose()

    def _hours(self) -> float:
        return self.core.config.setup_hours + self.core.config.estimated_train_hours

    def _max_duration_s(self, price: float | None = None) -> float:
        limit = self.core.config.max_duration_hours * 3600
        max_cost = self.core.ctx.spec.max_cost
        if max_cost is not None and price:
            limit = min(limit, max_cost / price * 3600)  # never bill past max_cost
        return limit

    async def estimate(self) -> CostEstimate:
        """The cheapest matching offer × (setup + training hours)."""
        config = self.core.config
        offer = (await self.provisioning.offers())[0]
        hours = self._hours()
        self.state.estimate_offer = offer.to_json()
        return CostEstimate(
            usd=round(offer.price_per_hour * hours, 4),
            hours=hours,
            assumptions=[
                f"{config.provider} offer {offer.offer_id}: {offer.num_gpus}× {offer.gpu_name} "
                f"at ${offer.price_per_hour:.4f}/h (disk {config.disk_gb} GB included)",
                f"{config.setup_hours} h boot/upload/download + {config.estimated_train_hours} h training "
                "(set estimated_train_hours)",
                f"the machine is destroyed after {self._max_duration_s() / 3600:.2f} h whatever happens",
            ],
        )

    # ------------------------------------------------------------------ submit

    async def submit(self) -> str:
        """Stage, rent, wait until usable, ship, start. Destroys the machine if anything in here fails."""
        core, st, max_cost = self.core, self.core.state, self.core.ctx.spec.max_cost
        staged = await self.shipping.stage()  # bad data and a bad build fail before renting
        offers = await self.provisioning.offers()
        best = offers[0]
        if max_cost is not None and best.price_per_hour * self._hours() > max_cost:
            raise ConfigError(
                f"[remote] cheapest offer now ${best.price_per_hour:.4f}/h × {self._hours():.2f} h exceeds "
                f"max_cost ${max_cost:.2f}"
            )
        deadline = time.time() + self._max_duration_s(best.price_per_hour)
        core.ledger.open(
            Lease(label=core.label, job_id=core.ctx.id, provider=core.provider.name, deadline=deadline,
                  provider_options=public_options(core.config.provider_options), offer=best.to_json())
        )  # fmt: skip
        st.label, st.deadline, st.phase, st.events = core.label, deadline, "creating", EventCursor()
        try:
            instance_id, offer = await self.provisioning._create(offers)
            st.instance_id, st.created_at, st.price_per_hour = instance_id, time.time(), offer.price_per_hour
            st.offer, st.phase = offer.to_json(), "provisioning"
            core.ledger.update(core.label, instance_id=instance_id, status="active",
                               price_per_hour=offer.price_per_hour, offer=offer.to_json())  # fmt: skip
            core.note(f"rented {offer.num_gpus}× {offer.gpu_name} ({core.provider.name} {instance_id}) "
                      f"at ${offer.price_per_hour:.4f}/h", offer=offer.to_json())  # fmt: skip
            t0 = time.monotonic()
            endpoint, gpus = await self.provisioning._wait_ready(instance_id)
            t1 = time.monotonic()
            await self.provisioning._ship_and_start(endpoint, gpus, staged)
            t2 = time.monotonic()
            st.timings = {"ready_s": round(t1 - t0, 3), "ship_and_start_s": round(t2 - t1, 3)}
            core.note(f"usable after {t1 - t0:.1f} s, shipped and started in {t2 - t1:.1f} s",
                      ready_s=st.timings["ready_s"], ship_and_start_s=st.timings["ship_and_start_s"])
            core.ledger.update(core.label, started=True)
            st.phase = "running"
            # submit() returns only an id: keep its events in the state for the first poll to report.
            st.pending_events = core.take()
            return f"{core.provider.name}:{instance_id}"
        except BaseException as e:  # errors, Ctrl-C, SIGTERM (as KeyboardInterrupt), SystemExit: never leave it running
            why = "interrupted" if isinstance(e, KeyboardInterrupt | asyncio.CancelledError) else str(e)
            why = why or type(e).__name__
            # A second Ctrl-C or SIGTERM would cut the teardown short and leave the machine billing: hold them.
            with signals_held("destroying the machine before stopping"):
                await asyncio.shield(self.teardown.run(f"setup failed: {why}"))
            if isinstance(e, FtkitError) or not isinstance(e, Exception):
                raise  # ftkit's own errors, and interruptions and exits, go on as they are
            raise BackendError(f"[remote] setup failed: {type(e).__name__}: {e}") from e

    # ------------------------------------------------------------------ poll, cancel

    async def poll(self) -> PollResult:
        """Follow the worker; at its end fetch, destroy, verify, cost."""
        core, st = self.core, self.core.state
        if st.phase == "done":
            return core.result()
        if st.phase in ("creating", "provisioning", None):
            return PollResult(status=JobStatus.QUEUED, backend_status=st.phase or "creating", events=core.take())
        if st.phase == "destroying":
            await self.teardown.run(st.final_reason or "finishing teardown")
            return core.result()
        assert st.deadline is not None and st.instance_id is not None
        if time.time() > st.deadline:
            st.final = Outcome(status="failed", error="max_duration reached: the machine was destroyed")
            core.note("max_duration reached: destroying the machine", level="error")
            await self.teardown.run("max_duration reached")
            return core.result()
        try:
            vendor, worker_events = await self.following.read()
        except HostKeyChanged:
            raise  # never talk to a machine that changed its key; cancel (or the deadline) destroys it
        except SshError as e:
            inst = await core.provider.get(st.instance_id)
            if inst is None or inst.state in DEAD_STATES:
                what = inst.state.value if inst else "not found"
                st.final = Outcome(status="failed", error=f"the machine is gone ({what}): preempted, "
                                   "destroyed by the dead-man switch, or by hand")  # fmt: skip
                await self.teardown.run("machine gone")
                return core.result()
            core.note(f"lost the SSH connection ({e}); the job keeps running there, reconnecting next time",
                      level="warning")  # fmt: skip
            return PollResult(status=JobStatus.RUNNING, backend_status="disconnected", events=core.take())
        if st.phase == "done":
            result = core.result()
            return result.model_copy(update={"events": worker_events + result.events})
        known = WorkerStatus.parse(vendor)
        if known is None:
            core.note(f"unknown worker status {vendor!r}", level="error")
        mapped = known.job_status if known else JobStatus.RUNNING
        return PollResult(status=mapped, backend_status=vendor, events=worker_events + core.take())

    async def cancel(self, reason: str = "cancelled") -> None:
        """Stop the worker (it writes ``cancelled``), fetch what it wrote, destroy the machine."""
        st = self.core.state
        if st.phase == "done":
            return
        st.cancel_requested = True
        if st.endpoint is not None and st.remote_job:
            try:
                await self.following.stop_worker()
            except SshError as e:
                self.core.note(f"could not reach the machine to stop the worker ({e}); destroying it anyway",
                               level="warning")  # fmt: skip
        st.final = Outcome(status="cancelled", error=None if reason == "cancelled" else reason)
        await self.teardown.run(reason)

    async def destroy_orphan(self, reason: str) -> None:
        """Destroy what carries this job's label (a machine rented by a client since killed), close its lease."""
        await self.teardown.destroy_orphan(reason)
