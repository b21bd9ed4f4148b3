"""The remote run's one persisted state: what a crashed process saved is what the next one reads."""

from __future__ import annotations

import json

from ftkit_remote.state import RunState

from ftkit.events import Event


def test_state_round_trips_through_the_registry_json() -> None:
    st = RunState(phase="running", label="ftkit-j", deadline=1e9, instance_id="42", created_at=1.0,
                  price_per_hour=0.25, endpoint={"host": "127.0.0.1", "port": 2222, "user": "root"},
                  remote_job="ftkit-jobs/j", events={"offset": 120, "line": 3}, event_seq=5,
                  pending_events=[Event(message="rented", key="remote-1")],
                  final={"status": "succeeded"}, actual_cost={"usd": 0.01, "hours": 0.04})  # fmt: skip
    stored = json.loads(json.dumps(st.model_dump(mode="json", exclude_defaults=True)))  # as SQLite keeps it
    again = RunState.model_validate(stored)
    assert again == st and again.endpoint is not None and again.endpoint.ssh().port == 2222


def test_state_written_by_the_dict_layout_is_read() -> None:
    """A job started before the typed state (17 string keys, the events cursor as two) is followed on."""
    old = {"label": "ftkit-j", "deadline": 1e9, "phase": "running", "events_offset": 77, "events_line": 2,
           "instance_id": "9", "endpoint": {"host": "h", "port": 22, "user": "u"}, "remote_job": "ftkit-jobs/j",
           "pending_events": [{"message": "rented", "key": "remote-1"}], "event_seq": 1, "created_at": 5.0,
           "price_per_hour": 0.5, "offer": {"offer_id": "o"}, "timings": {"ready_s": 1.0}}  # fmt: skip
    st = RunState.model_validate(old)
    assert (st.events.offset, st.events.line, st.phase, st.instance_id) == (77, 2, "running", "9")
    assert st.pending_events[0].message == "rented"
