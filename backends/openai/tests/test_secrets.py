"""The API key never reaches the registry, the events, the job folder, errors or logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import TEST_KEY, write_classification

from ftkit import FineTuneJob, JobSpec, JobStatus
from ftkit.errors import AuthenticationError

OPTION_KEY = "sk-option-FTKITSECRET-fedcba9876543210"


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_key_is_never_stored_or_logged(tmp_path: Path, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_LOG", "debug")
    train = write_classification(tmp_path / "train.jsonl", 30, seed=31)
    spec = JobSpec(task="classification", train=train)

    # A key given as an option is used, and stored masked.
    emulator.settings.api_key = OPTION_KEY
    job = FineTuneJob.create(spec, backend="openai", options={"api_key": OPTION_KEY}).start()
    assert job.record.options.get("api_key") in (None, "<redacted>", "**********")
    emulator.settings.api_key = None
    assert job.wait(timeout=30, poll_interval=0.02) is JobStatus.SUCCEEDED
    job.model().classify(["invoice refund"])

    # A refused key: the error names the problem but not the key.
    emulator.settings.api_key = "sk-the-only-valid-key-0000"
    failing = FineTuneJob.create(spec, backend="openai")
    with pytest.raises(AuthenticationError) as err:
        failing.start()
    emulator.settings.api_key = None
    assert failing.status is JobStatus.FAILED and failing.record.error

    home = Path(tmp_path / "home")
    stored = _all_bytes(home)  # jobs.sqlite, its -wal/-shm files and every job folder
    assert b"jobs.sqlite" not in stored and len(stored) > 0
    for key in (TEST_KEY, OPTION_KEY):
        assert key.encode() not in stored
        assert key not in str(err.value)
        assert key not in caplog.text
        for j in (job, failing):
            assert all(key not in e.message and key not in str(e.data) for e in j.events())
            assert key not in j.record.model_dump_json()
