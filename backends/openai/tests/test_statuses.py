"""The status table covers every status OpenAI can send."""

from __future__ import annotations

from ftkit_openai.emulator.conformance import SPEC_PATH
from ftkit_openai.statuses import STATUS_TABLE

from ftkit.events import JobStatus


def _spec_statuses() -> list[str]:
    import yaml

    spec = yaml.safe_load(SPEC_PATH.read_text())
    return list(spec["components"]["schemas"]["FineTuningJob"]["properties"]["status"]["enum"])


def test_table_is_exhaustive_against_the_spec_enum_plus_paused() -> None:
    vendor = set(_spec_statuses()) | {"paused"}  # paused: sent by the server, missing from the spec enum
    assert set(STATUS_TABLE) == vendor


def test_every_ftkit_status_but_created_is_reachable() -> None:
    assert set(STATUS_TABLE.values()) == set(JobStatus) - {JobStatus.CREATED}


def test_terminal_statuses_map_to_terminal() -> None:
    for vendor in ("succeeded", "failed", "cancelled"):
        assert STATUS_TABLE[vendor].is_terminal
    for vendor in ("validating_files", "queued", "running", "paused"):
        assert not STATUS_TABLE[vendor].is_terminal
