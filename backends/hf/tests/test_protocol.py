"""The worker protocol (ftkit_hf.protocol): offset reads past torn lines, a typed spec.json, one status table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftkit_hf.backend import stage_job
from ftkit_hf.config import HFConfig
from ftkit_hf.protocol import TERMINAL, EventCursor, JobFiles, WorkerJob, WorkerStatus, parse_events, parse_status

from ftkit.errors import ConfigError
from ftkit.events import JobStatus
from ftkit.spec import JobSpec


def test_events_read_from_an_offset_leave_a_torn_line_for_the_next_read(tmp_path: Path) -> None:
    files = JobFiles(tmp_path)
    files.append_event("message", "one")
    files.append_event("metrics", "", step=1, train_loss=2.5)
    whole = files.events.read_bytes()
    files.events.write_bytes(whole + b'{"kind": "message", "mess')  # the worker is mid-write

    first, cursor = files.read_events(EventCursor())
    assert [e.message for e in first] == ["one", ""] and first[1].data == {"step": 1, "train_loss": 2.5}
    assert cursor == EventCursor(offset=len(whole), line=2)
    assert files.read_events(cursor) == ([], cursor)  # still torn: nothing read, nothing skipped

    with files.events.open("ab") as f:
        f.write(b'age": "three"}\nnot json\n')
    second, after = files.read_events(cursor)
    assert [(e.key, e.level, e.message) for e in second] == [
        ("line-3", "info", "three"),
        ("line-4", "warning", "unreadable event line 4"),
    ]
    assert after.offset == files.events.stat().st_size and after.line == 4


def test_parse_events_of_a_chunk_matches_the_file_reader(tmp_path: Path) -> None:
    """The remote backend parses bytes read over SFTP; the same bytes give the same events as the local read."""
    files = JobFiles(tmp_path)
    for i in range(3):
        files.append_event("metrics", step=i)
    local, c1 = files.read_events(EventCursor())
    remote, c2 = parse_events(files.events.read_bytes(), EventCursor())
    assert c1 == c2 and [e.model_dump(exclude={"time"}) for e in local] == [
        e.model_dump(exclude={"time"}) for e in remote
    ]


def test_every_worker_status_maps_to_a_job_status() -> None:
    assert {s.job_status for s in WorkerStatus} == {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED,
                                                    JobStatus.FAILED, JobStatus.CANCELLED}  # fmt: skip
    assert {"succeeded", "failed", "cancelled"} == TERMINAL
    assert WorkerStatus.parse("paused") is None and WorkerStatus.parse("running") is WorkerStatus.RUNNING


def test_status_caught_mid_write_reads_as_none() -> None:
    assert parse_status(b'{"status": "runn') is None and parse_status(b"") is None
    assert parse_status(b'{"status": "running", "step": 3}') == {"status": "running", "step": 3}


def _train(tmp_path: Path) -> Path:
    rows = [{"text": f"message {i} {'win cash' if i % 2 else 'see you'}", "label": "spam" if i % 2 else "ham"}
            for i in range(12)]  # fmt: skip
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return train


@pytest.mark.parametrize("portable", [False, True])
def test_stage_job_writes_a_spec_the_worker_reads(tmp_path: Path, portable: bool) -> None:
    spec = JobSpec(task="classification", model="smollm2-135m", train=_train(tmp_path), labels=["ham", "spam"])
    staged = stage_job("ftk-1", spec, HFConfig(carve_validation=False), tmp_path / "job", portable=portable)
    job = JobFiles(tmp_path / "job").read_job()
    assert job == staged.job and job.labels == ["ham", "spam"] and job.head == "generative"
    if portable:  # shipped: paths relative to the folder, the base model in base_model/
        assert (job.train, job.model_path) == ("data/train.jsonl", "base_model")
    else:
        assert Path(job.train) == (tmp_path / "job" / "data" / "train.jsonl").resolve()
        assert Path(job.model_path) == staged.model_dir
    assert (tmp_path / "job" / job.train).read_bytes() == spec.train.read_bytes()


def test_a_spec_that_breaks_the_protocol_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    good = WorkerJob(job_id="j", task="chat", model="m", model_path="base_model", model_kind="causal",
                     head="generative", max_length=64, train="data/train.jsonl",
                     hyperparameters={}, config={})  # fmt: skip
    files = JobFiles(tmp_path)
    files.spec.write_text(json.dumps(good.model_dump() | {"max_lenght": 64}))
    with pytest.raises(ConfigError, match=r"spec\.json: max_lenght: Extra inputs"):
        files.read_job()
    files.write_job(good)
    assert files.read_job() == good
