"""The one persisted state of a remote run (``ctx.state["remote"]``), typed.

Every step of a run (provision, ship, follow, teardown) reads and writes this model, and the backend
stores it in the job registry after each call, so a later process — ``ftkit status`` after the
laptop slept, ``resume``/collect after a crash — reads the same fields the crashed one wrote.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftkit.backend import ActualCost
from ftkit.events import Event
from ftkit_remote.providers import SshEndpoint
from ftkit_remote.trainer import EventCursor

Phase = Literal["creating", "provisioning", "running", "destroying", "done"]


class Endpoint(BaseModel):
    """Where the machine answers SSH."""

    host: str
    port: int
    user: str

    def ssh(self) -> SshEndpoint:
        """As the SSH layer takes it."""
        return SshEndpoint(self.host, self.port, self.user)


class Outcome(BaseModel):
    """How the run ended (a worker status, or ``failed`` with the reason the run itself gives)."""

    status: str
    error: str | None = None


class RunState(BaseModel):
    """What one remote run knows about itself, persisted after every backend call."""

    model_config = ConfigDict(extra="ignore")  # a field an older ftkit wrote and this one dropped is not an error

    phase: Phase | None = Field(default=None, description="None before submit; then creating → ... → done.")
    label: str | None = Field(default=None, description="The instance label (``ftkit-<job id>``).")
    deadline: float | None = Field(default=None, description="Unix time at which the machine is destroyed.")
    instance_id: str | None = None
    created_at: float | None = Field(default=None, description="When the create call returned (billing start).")
    price_per_hour: float | None = None
    offer: dict[str, Any] | None = Field(default=None, description="The offer rented.")
    estimate_offer: dict[str, Any] | None = Field(default=None, description="The offer the estimate priced.")
    endpoint: Endpoint | None = None
    remote_job: str | None = Field(default=None, description="The job folder on the machine.")
    events: EventCursor = Field(default_factory=EventCursor, description="How far events.jsonl has been read.")
    event_seq: int = Field(default=0, description="Number of the run's own last event (its key).")
    pending_events: list[Event] = Field(default_factory=list, description="Events of submit, for the first poll.")
    timings: dict[str, float] = Field(default_factory=dict)
    final: Outcome | None = None
    final_reason: str | None = Field(default=None, description="Why the teardown started (resumed by a poll).")
    actual_cost: ActualCost | None = None
    cancel_requested: bool = False
    memory_need: dict[str, Any] | None = Field(
        default=None, description="The memory plan's inputs, computed once ({}: nothing to plan)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_older_layout(cls, data: Any) -> Any:
        """A run persisted by an ftkit before this model kept its events cursor as two flat keys."""
        if isinstance(data, dict) and "events_offset" in data and "events" not in data:
            data = dict(data)
            data["events"] = {"offset": data.pop("events_offset"), "line": data.pop("events_line", 0)}
        return data
