"""Faults injected in the emulator, seen through the real openai client and ftkit's retry policy."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from ftkit_openai import OpenAIConfig, OpenAIPredictor
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import CHAT_SYSTEM_PROMPT, LABELS, TEST_KEY, write_chat, write_classification

from ftkit import FineTuneJob, JobSpec, JobStatus
from ftkit.errors import (
    APIError,
    AuthenticationError,
    BackendUnavailableError,
    JobTimeoutError,
    QuotaExceededError,
    RateLimitError,
)

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def model_name(tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorServer) -> str:
    """A fine-tuned model made once through the raw client."""
    client = openai.OpenAI(base_url=emulator.base_url, api_key=TEST_KEY)
    path = write_chat(tmp_path_factory.mktemp("faults") / "chat.jsonl", 15, seed=12)
    f = client.files.create(file=("chat.jsonl", path.read_bytes()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=f.id)
    while job.status != "succeeded":
        time.sleep(0.05)
        job = client.fine_tuning.jobs.retrieve(job.id)
    return str(job.fine_tuned_model)


def _chat_requests(emulator: EmulatorServer, since: float) -> list[dict]:
    return [r for r in emulator.requests() if r["path"] == "/chat/completions" and r["time"] >= since]


def _predictor(model: str, **options: object) -> OpenAIPredictor:
    # The models here are trained on write_chat files: their system prompt is the one to classify under.
    return OpenAIPredictor(model, OpenAIConfig(**options), labels=LABELS,  # type: ignore[arg-type]
                           preamble=CHAT_SYSTEM_PROMPT)


def test_429_with_retry_after_is_honoured(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("rate_limit", CHAT, count=2, retry_after=0.3)
    t0 = time.time()
    out = _predictor(model_name).classify(["invoice refund please"])
    assert out[0].label == "billing"
    reqs = _chat_requests(emulator, t0)
    assert len(reqs) == 3
    assert reqs[1]["time"] - reqs[0]["time"] >= 0.29 and reqs[2]["time"] - reqs[1]["time"] >= 0.29


def test_429_with_retry_after_ms(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("rate_limit", CHAT, count=1, retry_after_ms=150)
    t0 = time.time()
    assert _predictor(model_name).generate(["crash error"], max_new_tokens=3) == ["outage"]
    reqs = _chat_requests(emulator, t0)
    assert len(reqs) == 2 and reqs[1]["time"] - reqs[0]["time"] >= 0.14


def test_429_without_retry_after_backs_off(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("rate_limit", CHAT, count=1)
    t0 = time.time()
    assert _predictor(model_name).generate(["crash error"], max_new_tokens=3) == ["outage"]
    reqs = _chat_requests(emulator, t0)
    assert len(reqs) == 2 and reqs[1]["time"] - reqs[0]["time"] >= 0.3  # exponential backoff, ~0.375..0.5 s


def test_429_exhausting_retries_raises_rate_limit_error(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("rate_limit", CHAT, count=5, retry_after_ms=10)
    t0 = time.time()
    with pytest.raises(RateLimitError, match="429"):
        _predictor(model_name, max_retries=2).generate(["x"])
    assert len(_chat_requests(emulator, t0)) == 3


def test_retry_after_longer_than_allowed_fails_at_once(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("rate_limit", CHAT, count=1, retry_after=300)
    t0 = time.time()
    with pytest.raises(RateLimitError, match="wait 300 s"):
        _predictor(model_name, max_retry_wait=60).generate(["x"])
    assert len(_chat_requests(emulator, t0)) == 1


def test_insufficient_quota_stops_at_once(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("insufficient_quota", CHAT, count=3)
    t0 = time.time()
    with pytest.raises(QuotaExceededError, match=r"insufficient_quota.*billing"):
        _predictor(model_name).classify(["invoice"])
    assert len(_chat_requests(emulator, t0)) == 1


def test_auth_error_stops_at_once_without_the_key(emulator: EmulatorServer, model_name: str) -> None:
    emulator.settings.api_key = "sk-the-only-valid-key-0000"
    t0 = time.time()
    with pytest.raises(AuthenticationError) as err:
        _predictor(model_name).generate(["hello"])
    emulator.settings.api_key = None
    assert len(_chat_requests(emulator, t0)) == 1
    assert TEST_KEY not in str(err.value) and "OPENAI_API_KEY" in str(err.value)


def test_server_errors_are_retried(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("server_error", CHAT, count=2, status=503)
    t0 = time.time()
    assert _predictor(model_name).generate(["quote demo"], max_new_tokens=3) == ["sales"]
    assert len(_chat_requests(emulator, t0)) == 3


def test_persistent_500_becomes_api_error(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("server_error", CHAT, count=10)
    t0 = time.time()
    with pytest.raises(APIError, match="HTTP 500") as err:
        _predictor(model_name, max_retries=1).generate(["quote"])
    assert err.value.status_code == 500
    assert len(_chat_requests(emulator, t0)) == 2


def test_dropped_connection_is_retried(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("drop", CHAT, count=1)
    t0 = time.time()
    assert _predictor(model_name).generate(["invoice payment"], max_new_tokens=3) == ["billing"]
    assert len(_chat_requests(emulator, t0)) == 2


def test_dropped_connections_exhausting_retries(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("drop", CHAT, count=5)
    with pytest.raises(APIError, match="cannot reach the OpenAI API"):
        _predictor(model_name, max_retries=1).generate(["invoice"])


def test_concurrent_classify_under_rate_limits(emulator: EmulatorServer, model_name: str) -> None:
    emulator.inject("rate_limit", CHAT, count=4, retry_after_ms=50)  # fewer than one call's 5 attempts
    texts = ["invoice refund", "crash offline", "demo pricing"] * 6
    out = _predictor(model_name, max_concurrency=6).classify(texts)
    assert [c.label for c in out] == ["billing", "outage", "sales"] * 6


def test_logprobs_refused_falls_back_to_parsing(tmp_path: Path, emulator: EmulatorServer) -> None:
    client = openai.OpenAI()
    path = write_chat(tmp_path / "o4.jsonl", 12, seed=13)
    f = client.files.create(file=("o4.jsonl", path.read_bytes()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="o4-mini-2025-04-16", training_file=f.id)
    while job.status != "succeeded":
        time.sleep(0.05)
        job = client.fine_tuning.jobs.retrieve(job.id)
    out = _predictor(str(job.fine_tuned_model)).classify(["refund invoice", "login timeout", "hello"])
    assert [c.label for c in out][:2] == ["billing", "outage"]
    assert all(sum(c.probabilities.values()) == pytest.approx(1.0) for c in out)
    assert out[0].probabilities["billing"] == 1.0 and out[0].unparseable_mass == 0.0
    with pytest.raises(APIError, match="not allowed to request logprobs"):
        _predictor(str(job.fine_tuned_model), classify_mode="logprobs").classify(["refund"])


def test_unparseable_answers(model_name: str) -> None:
    # Labels the model never learned: its answers parse as none of them.
    out = _predictor(model_name, classify_mode="parse").classify(["invoice"], labels=["yes", "no"])
    assert out[0].label == "UNPARSEABLE" and out[0].unparseable_mass == 1.0
    assert out[0].probabilities == {"yes": 0.5, "no": 0.5}


def test_slow_queue(tmp_path: Path, emulator: EmulatorServer) -> None:
    emulator.settings.queue_seconds = 1.5
    train = write_classification(tmp_path / "train.jsonl", 30, seed=14)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai").start()
    with pytest.raises(JobTimeoutError):
        job.wait(timeout=0.6, poll_interval=0.05)
    assert job.status is JobStatus.QUEUED
    assert job.wait(timeout=30, poll_interval=0.05) is JobStatus.SUCCEEDED


def test_transient_errors_while_following_a_job(tmp_path: Path, emulator: EmulatorServer) -> None:
    train = write_classification(tmp_path / "train.jsonl", 30, seed=15)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai").start()
    # Four failures in a row: within one call's 5 attempts (max_retries=4).
    emulator.inject("rate_limit", "/v1/fine_tuning/jobs", count=2, retry_after_ms=20)
    emulator.inject("server_error", "/v1/fine_tuning/jobs", count=1)
    emulator.inject("drop", "/v1/fine_tuning/jobs", count=1)
    assert job.wait(timeout=60, poll_interval=0.02) is JobStatus.SUCCEEDED
    steps = [m["step"] for m in job.metrics()]
    assert steps == sorted(set(steps)), "no event lost or duplicated across retries"


def test_org_no_longer_eligible(tmp_path: Path, emulator: EmulatorServer) -> None:
    train = write_classification(tmp_path / "train.jsonl", 30, seed=16)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai")
    emulator.inject("ineligible", "/v1/fine_tuning/jobs", method="POST")
    with pytest.raises(BackendUnavailableError) as err:
        job.start()
    msg = str(err.value)
    assert "2027-01-06" in msg and "backend='hf'" in msg and "remote" in msg
    assert job.status is JobStatus.FAILED
