"""What every step of one remote run shares: the job, the provider client, the ledger, the typed state, events.

The steps (:mod:`~ftkit_remote.shipping`, :mod:`~ftkit_remote.provision`, :mod:`~ftkit_remote.follow`,
:mod:`~ftkit_remote.teardown`) each hold a :class:`RunCore` and nothing else in common; the run
(:mod:`~ftkit_remote.run`) composes them. The state is one :class:`~ftkit_remote.state.RunState`,
loaded from ``ctx.state["remote"]`` and saved back there by :meth:`RunCore.save`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftkit.backend import JobContext, PollResult
from ftkit.events import Event, JobStatus
from ftkit_remote.config import RemoteConfig
from ftkit_remote.leases import LeaseLedger
from ftkit_remote.providers import LABEL_PREFIX, Provider, SshEndpoint, make_provider
from ftkit_remote.ssh import load_or_create_key
from ftkit_remote.state import Outcome, RunState
from ftkit_remote.trainer import MODEL, WorkerStatus


class RunCore:
    """The parts of one run that every step uses."""

    def __init__(self, ctx: JobContext, config: RemoteConfig, ledger: LeaseLedger | None = None) -> None:
        self.ctx = ctx
        self.config = config
        self.provider: Provider = make_provider(config.provider, config.provider_options)
        self.ledger = ledger or LeaseLedger()
        self.state = RunState.model_validate(ctx.state.get("remote") or {})
        self.label = LABEL_PREFIX + ctx.id
        self.key = load_or_create_key(Path(config.ssh_key_path).expanduser() if config.ssh_key_path else None)
        self.events: list[Event] = []

    def save(self) -> None:
        """Write the state back into ``ctx.state`` (the job registry stores it after the backend call)."""
        self.ctx.state["remote"] = self.state.model_dump(mode="json", exclude_defaults=True)

    async def aclose(self) -> None:
        """Release the provider's connections."""
        await self.provider.aclose()

    @property
    def endpoint(self) -> SshEndpoint:
        """The machine's SSH endpoint (known once it was usable)."""
        assert self.state.endpoint is not None, "no endpoint before the machine was usable"
        return self.state.endpoint.ssh()

    def note(self, message: str, level: str = "info", kind: str = "message", **data: Any) -> None:
        """Record an event of the run itself (not of the worker)."""
        self.state.event_seq += 1
        key = f"remote-{self.state.event_seq}"
        self.events.append(Event(level=level, kind=kind, message=message, data=data, key=key))  # type: ignore[arg-type]

    def take(self) -> list[Event]:
        """The run's events not yet reported (those submit kept for the first poll first)."""
        out, self.events = [*self.state.pending_events, *self.events], []
        self.state.pending_events = []
        return out

    def ledger_call(self, what: str, call: Any, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
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

    def result(self) -> PollResult:
        """The poll result of a run that has ended."""
        final = self.state.final or Outcome(status="failed", error="the run ended without a status")
        known = WorkerStatus.parse(final.status)
        status = known.job_status if known else JobStatus.FAILED
        model = str(self.ctx.workdir / MODEL) if status is JobStatus.SUCCEEDED else None
        return PollResult(status=status, backend_status=final.status, events=self.take(), model=model,
                          actual_cost=self.state.actual_cost, error=final.error)  # fmt: skip
