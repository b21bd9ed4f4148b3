"""FineTuneJob and the registry: lifecycle, persistence across processes, secrets, missing backends."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import ClassVar

import pytest

from ftkit import (
    BackendNotFoundError,
    ConfigError,
    DatasetError,
    FineTuneJob,
    JobFailedError,
    JobSpec,
    JobStatus,
    JobStore,
    JobTimeoutError,
    register_backend,
)
from ftkit.backend import BackendConfig, _extra_backends, load_backend_class
from ftkit.predictor import Predictor
from ftkit.testing import BackendConformance, FakeBackend
from tests.helpers import spam_rows, write_jsonl

register_backend(FakeBackend)


def make_spec(tmp_path: Path, **kw: object) -> JobSpec:
    train = write_jsonl(tmp_path / "train.jsonl", spam_rows())
    return JobSpec(task="classification", train=train, **kw)  # type: ignore[arg-type]


class TestFakeBackendConformance(BackendConformance):
    backend = "fake"
    options: ClassVar[dict[str, object]] = {"steps": 3, "seconds_per_step": 0.01}

    def make_spec(self, tmp_path: Path) -> JobSpec:
        return make_spec(tmp_path)


def test_create_records_before_spending(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake")
    assert job.status is JobStatus.CREATED and job.backend_job_id is None
    rec = JobStore().get(job.id)
    assert rec.spec["labels"] == ["ham", "spam"]  # inferred from the data
    assert rec.estimated_cost and rec.estimated_cost["usd"] > 0
    assert rec.manifest["data"]["train"]["sha256"] and rec.manifest["seed"] == 0
    assert "ftkit" in rec.manifest["libraries"]


def test_wait_events_metrics_and_actual_cost(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"steps": 4, "seconds_per_step": 0.01})
    job.start()
    assert job.wait(progress=True, timeout=30) is JobStatus.SUCCEEDED
    steps = [m["step"] for m in job.metrics()]
    assert steps == [1, 2, 3, 4]
    kinds = {e.kind for e in job.events()}
    assert kinds >= {"message", "metrics", "cost"}
    assert job.record.actual_cost == {"usd": 0.004, "hours": None, "billed_tokens": None, "source": "simulated steps"}
    job.refresh()  # polling again after the end stores nothing twice
    assert [m["step"] for m in job.metrics()] == [1, 2, 3, 4]


def test_failed_job_raises_with_reason(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"steps": 5, "fail_at_step": 2,
                                                                           "seconds_per_step": 0.01})
    job.start()
    with pytest.raises(JobFailedError, match="simulated failure"):
        job.wait(timeout=30)
    assert FineTuneJob.get(job.id).status is JobStatus.FAILED


def test_wait_timeout(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"steps": 100, "seconds_per_step": 1})
    job.start()
    with pytest.raises(JobTimeoutError):
        job.wait(timeout=0.05)


def test_max_cost_guard(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds max_cost"):
        FineTuneJob.create(make_spec(tmp_path, max_cost=0.001), backend="fake", options={"steps": 10})
    assert JobStore().list() == []  # refused jobs are not recorded


def test_invalid_data_is_refused_with_file_and_line(tmp_path: Path) -> None:
    rows = [*spam_rows(), {"text": "", "label": "spam"}]
    spec = JobSpec(task="classification", train=write_jsonl(tmp_path / "bad.jsonl", rows), labels=["ham", "spam"])
    with pytest.raises(DatasetError) as e:
        FineTuneJob.create(spec, backend="fake")
    assert f"{tmp_path / 'bad.jsonl'}:41: invalid_text" in str(e.value)
    assert e.value.report is not None


def test_labels_outside_vocabulary_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown_label"):
        FineTuneJob.create(make_spec(tmp_path, labels=["ham", "eggs"]), backend="fake")


def test_unknown_backend_lists_installed_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(BackendNotFoundError) as e:
        FineTuneJob.create(make_spec(tmp_path), backend="fkae")
    assert "fake" in str(e.value) and "did you mean 'fake'" in str(e.value)


def test_saved_job_outlives_its_backend(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"seconds_per_step": 0.01, "steps": 2})
    job.start()
    job.wait(timeout=30)
    del _extra_backends["fake"]
    load_backend_class.cache_clear()
    try:
        again = FineTuneJob.get(job.id)
        assert again.status is JobStatus.SUCCEEDED and len(again.metrics()) == 2
        with pytest.raises(BackendNotFoundError, match="was run by backend 'fake'"):
            again.model()
    finally:
        register_backend(FakeBackend)


def test_secrets_never_reach_the_registry(tmp_path: Path) -> None:
    store = JobStore()
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", store=store)
    store.update(job.id, state={"api_key": "sk-SECRET", "nested": {"access_token": "tok-SECRET"}, "key_path": "k"})
    data = store.path.read_bytes() + b"".join(p.read_bytes() for p in store.root.glob("jobs.sqlite*"))
    assert b"SECRET" not in data
    assert store.get(job.id).state["key_path"] == "k"


CHILD = textwrap.dedent(
    """
    import sys, time
    import ftkit
    from ftkit.testing import FakeBackend
    ftkit.register_backend(FakeBackend)
    job = ftkit.FineTuneJob.get(sys.argv[1])
    if sys.argv[2] == "cancel":
        print(job.cancel().value)
    else:
        print(job.wait(timeout=60).value, len(job.metrics()))
    """
)


def test_registry_shared_by_two_processes(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"steps": 20, "seconds_per_step": 0.05})
    job.start()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, job.id, "wait"], env=env, stdout=subprocess.PIPE,
                             text=True)
    status = job.wait(timeout=60)  # both processes poll and write the same job at once
    out, _ = child.communicate(timeout=60)
    assert status is JobStatus.SUCCEEDED and out.split() == ["succeeded", "20"]
    assert [m["step"] for m in FineTuneJob.get(job.id).metrics()] == list(range(1, 21))


def test_cancel_from_another_process(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"steps": 1000, "seconds_per_step": 1})
    job.start()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD, job.id, "cancel"], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "cancelled"
    time.sleep(0.05)
    assert job.refresh() is JobStatus.CANCELLED


def test_job_id_prefix_lookup(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake")
    assert FineTuneJob.get(job.id[:-2]).id == job.id
    assert [j.id for j in FineTuneJob.list()] == [job.id]


def test_wait_rides_out_transient_poll_failures(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake",
                             options={"steps": 2, "seconds_per_step": 0.01, "failed_polls": 2})
    job.start()
    assert job.wait(timeout=30, poll_interval=0.01) is JobStatus.SUCCEEDED
    assert sum(e.level == "warning" and "poll failed" in e.message for e in job.events()) == 2


def test_wait_gives_up_after_three_failed_polls(tmp_path: Path) -> None:
    from ftkit import APIError

    job = FineTuneJob.create(make_spec(tmp_path), backend="fake", options={"steps": 2, "failed_polls": 5})
    job.start()
    with pytest.raises(APIError, match="simulated 503"):
        job.wait(timeout=30, poll_interval=0.01)


class _ZeroShotFake(FakeBackend):
    """A fake whose base model knows only the words of the labels (a zero-shot stand-in)."""

    name: ClassVar[str] = "fake-zero-shot"

    def base_model(self, model: str | None, config: BackendConfig) -> Predictor:
        from ftkit.testing import FakePredictor

        return FakePredictor(["ham", "spam offer"], ["ham", "spam"], ["ham", "spam"])


def test_base_model_is_the_zero_shot_baseline_with_the_spec_labels(tmp_path: Path) -> None:
    register_backend(_ZeroShotFake)
    job = FineTuneJob.create(make_spec(tmp_path, labels=["spam", "ham"]), backend="fake-zero-shot")
    base = job.base_model()
    assert base.labels == ["spam", "ham"]
    [c] = base.classify(["a spam offer"])
    assert c.label == "spam" and set(c.probabilities) == {"spam", "ham"}


def test_base_model_of_a_backend_without_one_is_a_clear_error(tmp_path: Path) -> None:
    job = FineTuneJob.create(make_spec(tmp_path), backend="fake")
    with pytest.raises(ConfigError, match="cannot serve base models"):
        job.base_model()
