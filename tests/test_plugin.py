"""The two-file example plugin in examples/custom_backend, installed and found through entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit import FineTuneJob, JobSpec, JobStatus, installed_backends
from ftkit.testing import BackendConformance
from tests.helpers import spam_rows, write_jsonl

pytestmark = pytest.mark.skipif("tfidf" not in installed_backends(),
                                reason="pip install -e examples/custom_backend (make install-dev does)")


class TestTfidfConformance(BackendConformance):
    backend = "tfidf"

    def make_spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(task="classification", train=write_jsonl(tmp_path / "train.jsonl", spam_rows()))

    def test_cancel(self, tmp_path: Path) -> None:
        pytest.skip("tfidf trains inside submit(): there is never a running job to cancel")


def test_discovered_by_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "ftkit.cli", "backends", "--json"], capture_output=True, text=True,
                         check=True).stdout
    row = next(r for r in json.loads(out) if r["name"] == "tfidf")
    assert row["distribution"] == "ftkit-tfidf" and row["version"] == "0.1.0"


def test_learns_the_task(tmp_path: Path) -> None:
    job = FineTuneJob.create(JobSpec(task="classification", train=write_jsonl(tmp_path / "t.jsonl", spam_rows())),
                             backend="tfidf")
    job.start()
    assert job.wait(timeout=60) is JobStatus.SUCCEEDED
    got = job.model().classify(["claim your free cash prize now", "lunch with the team tomorrow"])
    assert [c.label for c in got] == ["spam", "ham"]
