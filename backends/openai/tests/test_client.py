"""Client construction, error mapping and the backend class driven directly with a hand-built JobContext."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import httpx
import openai
import pytest
from ftkit_openai import OpenAIConfig, OpenAIPredictor
from ftkit_openai import backend as backend_module
from ftkit_openai.backend import OpenAIBackend
from ftkit_openai.client import map_vendor_errors, retry_after, scrub
from ftkit_openai.emulator import EmulatorServer
from openai_testdata import TEST_KEY, write_classification

from ftkit import FineTuneJob, JobSpec, JobStatus
from ftkit.backend import JobContext
from ftkit.errors import APIError, AuthenticationError


def _status_error(status: int, headers: dict[str, str], body: dict) -> openai.APIStatusError:
    import httpx2

    request = httpx2.Request("GET", "http://127.0.0.1/v1/x")
    response = httpx2.Response(status, headers=headers, json={"error": body}, request=request)
    return openai.OpenAI(api_key="sk-x", base_url="http://127.0.0.1/v1")._make_status_error_from_response(response)


def test_retry_after_forms() -> None:
    assert retry_after(_status_error(429, {"retry-after-ms": "250"}, {})) == 0.25
    assert retry_after(_status_error(429, {"retry-after": "3"}, {})) == 3.0
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after(_status_error(429, {"retry-after": date}, {})) <= 31  # type: ignore[operator]
    assert retry_after(_status_error(429, {}, {})) is None


def test_errors_are_mapped_and_scrubbed() -> None:
    body = {"message": f"bad key {TEST_KEY} and sk-abcdefghijklmnop", "type": "invalid_request_error",
            "param": None, "code": "invalid_api_key"}
    with pytest.raises(AuthenticationError) as err, map_vendor_errors(TEST_KEY):
        raise _status_error(401, {}, body)
    assert TEST_KEY not in str(err.value) and "sk-abcdefghijklmnop" not in str(err.value)
    with pytest.raises(APIError) as api_err, map_vendor_errors(TEST_KEY):
        raise _status_error(422, {}, {"message": "nope", "type": "x", "param": None, "code": "c"})
    assert api_err.value.status_code == 422 and api_err.value.code == "c"
    assert scrub("key sk-proj-ABCDEF123456 here") == "key sk-*** here"


def test_missing_key_is_an_authentication_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
        OpenAIPredictor("ft:gpt-4.1-mini-2025-04-14:o::x")


def test_base_url_option_beats_the_environment(tmp_path: Path, emulator: EmulatorServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    train = write_classification(tmp_path / "train.jsonl", 30, seed=71)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai",
                             options={"base_url": emulator.base_url}).start()
    assert job.wait(timeout=30, poll_interval=0.02) is JobStatus.SUCCEEDED
    assert job.record.options["base_url"] == emulator.base_url


def test_environment_base_url_is_used(emulator: EmulatorServer) -> None:
    def chats() -> int:
        log = httpx.get(emulator.url + "/_emulator/requests").json()["requests"]
        return sum(r["path"] == "/chat/completions" for r in log)

    before = chats()
    OpenAIPredictor("gpt-4.1-mini-2025-04-14").generate(["hi"])  # OPENAI_BASE_URL points at the emulator
    assert chats() == before + 1


def test_backend_directly_and_unknown_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             emulator: EmulatorServer) -> None:
    emulator.settings.status_seconds = 0.5
    be = OpenAIBackend()
    train = write_classification(tmp_path / "train.jsonl", 30, seed=72)
    spec = JobSpec(task="classification", train=train, model="gpt-4.1-nano-2025-04-14", labels=["billing", "outage",
                                                                                               "sales"])
    config = be.parse_config({})
    be.check(spec, config)
    ctx = JobContext(id="ftk-direct-1", spec=spec, config=config, workdir=tmp_path / "job")
    ctx.workdir.mkdir()
    assert be.estimate(ctx).usd > 0  # type: ignore[union-attr]
    ctx.backend_job_id = be.submit(ctx)
    assert (ctx.workdir / "train.chat.jsonl").exists()  # classification converted to chat before upload
    # A status missing from the table: an error event, the last known status kept.
    table = {k: v for k, v in backend_module.STATUS_TABLE.items() if k != "validating_files"}
    monkeypatch.setattr(backend_module, "STATUS_TABLE", table)
    first = be.poll(ctx)
    assert first.status is JobStatus.QUEUED and first.backend_status == "validating_files"
    assert any(e.level == "error" and "unknown OpenAI job status" in e.message for e in first.events)
    monkeypatch.setattr(backend_module, "STATUS_TABLE", {**table, "validating_files": JobStatus.VALIDATING})
    while (result := be.poll(ctx)).status is not JobStatus.SUCCEEDED:
        time.sleep(0.02)
    assert result.model and result.actual_cost is not None
    predictor = be.load_model(ctx)
    assert predictor.classify(["charged twice on my card invoice"])[0].label == "billing"


def test_config_is_strict() -> None:
    from ftkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[openai\] n_epochs"):
        OpenAIBackend().parse_config({"n_epochs": 3})
    assert OpenAIConfig(api_key="sk-x").model_dump(mode="json")["api_key"] == "**********"


def test_list_remote_jobs(tmp_path: Path) -> None:
    train = write_classification(tmp_path / "train.jsonl", 30, seed=73)
    job = FineTuneJob.create(JobSpec(task="classification", train=train), backend="openai").start()
    be = OpenAIBackend()
    listed = be.list_remote_jobs(be.parse_config({}), limit=5)
    assert listed[0]["id"] == job.backend_job_id and listed[0]["metadata"] == {"ftkit_job_id": job.id}
    assert len(listed) <= 5
    job.cancel()


def test_network_guard_refuses_real_hosts() -> None:
    with pytest.raises(RuntimeError, match="network guard"):
        openai.OpenAI(base_url="https://api.openai.com/v1", api_key="sk-x", max_retries=0).models.list()
