"""The teardown step: destroy (by id, or by label when the id was never learned), verify, cost, close the lease.

Every other step ends here, whatever happened. The ledger is bookkeeping: a ledger that cannot be
read or written never stops a destroy (``ftkit remote gc`` closes what stays open). A destroy that
cannot be verified leaves the lease open for gc and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential,
)

from ftkit.backend import ActualCost
from ftkit.errors import BackendError
from ftkit_remote.core import RunCore
from ftkit_remote.providers import InstanceState, Provider
from ftkit_remote.ssh import SshError, connect, forget_host
from ftkit_remote.state import Outcome

DEAD_STATES = (InstanceState.FAILED, InstanceState.STOPPED, InstanceState.TERMINATING, InstanceState.TERMINATED)


async def destroy_until_gone(
    provider: Provider,
    instance_id: str,
    *,
    timeout: float = 120.0,
    first_wait: float = 0.2,
    max_wait: float = 5.0,
    retry_on: tuple[type[BaseException], ...] = (BackendError,),
    on_error: Callable[[BaseException], None] | None = None,
) -> bool:
    """Destroy ``instance_id`` and retry until the provider no longer reports it (True) or ``timeout`` (False).

    A destroy that answers an error in ``retry_on`` is retried with exponential backoff (``on_error``
    hears of each); any other error goes to the caller.
    """

    async def attempt() -> bool:
        await provider.destroy(instance_id)
        inst = await provider.get(instance_id)
        return inst is None or inst.state is InstanceState.TERMINATED

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        if error is not None and on_error is not None:
            on_error(error)

    retrying = AsyncRetrying(
        stop=stop_after_delay(timeout),
        wait=wait_exponential(multiplier=first_wait, max=max_wait),
        retry=retry_if_result(lambda gone: not gone) | retry_if_exception_type(retry_on),
        before_sleep=before_sleep,
        retry_error_callback=lambda state: False,  # out of time: not verified gone
    )
    return bool(await retrying(attempt))


class Teardown:
    """Destroy the run's machine and verify it is gone, record the cost, close the lease."""

    def __init__(self, core: RunCore) -> None:
        self.core = core

    async def destroy_orphan(self, reason: str) -> None:
        """Destroy what carries this job's label (a machine rented by a client since killed), close its lease."""
        self.core.state.final = Outcome(status="failed", error=reason)
        await self.run(reason)

    async def destroy(self, instance_id: str) -> bool:
        """Destroy one instance and verify it is gone, saying so in the events when an attempt fails."""
        return await destroy_until_gone(
            self.core.provider, instance_id,
            on_error=lambda e: self.core.note(f"destroy of {instance_id} failed: {e}; retrying", level="warning"),
        )  # fmt: skip

    async def run(self, reason: str) -> None:
        """Destroy (by id, or by label when the id was never learned), verify, cost, close the lease."""
        core, st = self.core, self.core.state
        st.phase, st.final_reason = "destroying", reason
        if st.final is None:
            st.final = Outcome(status="failed", error=reason)
        lease = core.ledger_call("read the lease", core.ledger.get, core.label)
        if lease is not None and lease.status != "released":
            core.ledger_call("mark the lease destroying", core.ledger.update, core.label, status="destroying",
                             note=reason)  # fmt: skip
        ids: list[str] = []
        if core.provider.caps.rents:
            ids = [st.instance_id] if st.instance_id else []
            if not ids:  # killed between create and learning the id: find it by label
                ids = [i.instance_id for i in await core.provider.list(core.label) if i.label == core.label]
        else:
            await self._stop_on_own_host()
        gone = True
        for iid in ids:
            gone = await self.destroy(iid) and gone
        if st.endpoint is not None:
            forget_host(core.endpoint)
        if not gone:
            core.note(f"could not verify that {ids} is gone: run `ftkit remote gc`", level="error")
            return  # the lease stays open for gc
        if st.created_at is not None:
            price = st.price_per_hour or 0.0
            hours = (time.time() - st.created_at) / 3600
            source = f"${price:.4f}/h × time from create to verified destroy (upper bound)"
            st.actual_cost = ActualCost(usd=round(price * hours, 6), hours=hours, source=source)
            core.note(f"machine destroyed ({reason}); cost ${price * hours:.4f}", kind="cost",
                      usd=price * hours, hours=hours)  # fmt: skip
        if lease is None or lease.status != "released":  # None: unreadable, or never opened (KeyError is fine)
            cost = st.actual_cost.usd if st.actual_cost else None
            core.ledger_call("close the lease", core.ledger.release, core.label, cost, reason, missing_ok=True)
        st.phase = "done"

    async def _stop_on_own_host(self) -> None:
        """On a host the user owns nothing is destroyed: stop our worker and dead-man switch only."""
        st = self.core.state
        if st.endpoint is None or not st.remote_job:
            return
        job = st.remote_job
        try:
            async with connect(self.core.endpoint, self.core.key, timeout=10) as s:
                await s.run(f'for f in worker.pid deadman.pid; do [ -f {job}/$f ] && kill -TERM -- -"$(cat {job}/$f)"'
                            " 2>/dev/null; done; true", timeout=30)  # fmt: skip
        except SshError:
            pass
