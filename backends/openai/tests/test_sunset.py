"""OpenAI's cut-off: create refuses plainly after 2027-01-06; existing models keep working."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openai
import pytest
from ftkit_openai import sunset
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import write_chat, write_classification

from ftkit import FineTuneJob, JobSpec, JobStatus
from ftkit.errors import BackendUnavailableError


def test_dates() -> None:
    assert dt.date(2027, 1, 6) == sunset.FINE_TUNING_CUTOFF
    assert not sunset.creation_closed(dt.date(2027, 1, 5))
    assert sunset.creation_closed(dt.date(2027, 1, 6))


def test_create_after_the_cutoff_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTKIT_TODAY", "2027-01-07")
    train = write_classification(tmp_path / "train.jsonl", 20, seed=1)
    with pytest.raises(BackendUnavailableError) as err:
        FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai")
    msg = str(err.value)
    assert "stopped accepting new fine-tuning jobs on 2027-01-06" in msg and "today is 2027-01-07" in msg
    assert "backend='hf'" in msg and "backend='remote'" in msg and "attach" in msg


def test_config_today_overrides(tmp_path: Path) -> None:
    train = write_classification(tmp_path / "train.jsonl", 20, seed=1)
    with pytest.raises(BackendUnavailableError, match="2027-01-06"):
        FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai",
                           options={"today": "2027-02-01"})


def test_existing_models_keep_working_after_the_cutoff(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        emulator: EmulatorServer) -> None:
    client = openai.OpenAI()
    path = write_chat(tmp_path / "chat.jsonl", 12, seed=2)
    f = client.files.create(file=("chat.jsonl", path.read_bytes()), purpose="fine-tune")
    remote = client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=f.id)
    monkeypatch.setenv("FTKIT_TODAY", "2027-03-01")
    job = FineTuneJob.attach(remote.id, backend="openai")
    assert job.wait(timeout=30, poll_interval=0.02) is JobStatus.SUCCEEDED
    assert job.model().generate(["refund invoice card"], max_new_tokens=3) == ["billing"]


@pytest.mark.parametrize(("status", "code", "message", "expected"), [
    (400, "fine_tuning_unavailable", "whatever", True),
    (403, None, "Fine-tuning is no longer available to your organization.", True),
    (400, None, "Invalid value for n_epochs", False),
    (429, None, "fine-tuning no longer ... rate", False),
])
def test_refusal_detection(status: int, code: str | None, message: str, expected: bool) -> None:
    assert sunset.is_sunset_refusal(status, code, message) is expected
