"""Every object the emulator returns validates against the trimmed OpenAPI spec.

The emulator checks each JSON answer itself (``validate_responses``) and keeps the violations;
these tests drive every route with the real openai client, then assert none were recorded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest
from ftkit_openai.emulator import EmulatorServer
from ftkit_openai.emulator.conformance import check_response, violations
from openai_testdata import TEST_KEY, write_chat, write_preference

JOB = "#/components/schemas/FineTuningJob"


def _wait(client: openai.OpenAI, job_id: str) -> openai.types.fine_tuning.FineTuningJob:
    job = client.fine_tuning.jobs.retrieve(job_id)
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.03)
        job = client.fine_tuning.jobs.retrieve(job_id)
    return job


@pytest.mark.parametrize("healthy_error_null", [True, False])
def test_every_route_conforms(tmp_path: Path, emulator: EmulatorServer, healthy_error_null: bool) -> None:
    emulator.settings.healthy_error_null = healthy_error_null
    before = len(emulator.violations())
    client = openai.OpenAI()
    chat = client.files.create(file=("c.jsonl", write_chat(tmp_path / "c.jsonl", 12, 51).read_bytes()),
                               purpose="fine-tune")
    val = client.files.create(file=("v.jsonl", write_chat(tmp_path / "v.jsonl", 6, 52).read_bytes()),
                              purpose="fine-tune")
    pref = client.files.create(file=("p.jsonl", write_preference(tmp_path / "p.jsonl", 12, 53).read_bytes()),
                               purpose="fine-tune")
    tiny = client.files.create(file=("t.jsonl", write_chat(tmp_path / "t.jsonl", 3, 54).read_bytes()),
                               purpose="fine-tune")
    client.files.retrieve(chat.id)
    assert {f.id for f in client.files.list(purpose="fine-tune")} >= {chat.id, val.id, pref.id}
    client.files.list(limit=1)

    sft = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=chat.id,
                                         validation_file=val.id, suffix="conf", seed=3, metadata={"k": "v"})
    dpo = client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=pref.id,
                                         method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}})
    failed = client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=tiny.id)
    other = client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=chat.id)
    client.fine_tuning.jobs.cancel(other.id)
    done = _wait(client, sft.id)
    assert done.status == "succeeded" and done.trained_tokens and done.fine_tuned_model.endswith(
        done.fine_tuned_model.split(":")[-1])
    assert _wait(client, dpo.id).status == "succeeded"
    bad = _wait(client, failed.id)
    assert bad.status == "failed" and bad.error.code == "invalid_n_examples" and bad.error.param == "training_file"

    # Pagination: newest first, `after` exclusive, has_more.
    pages = list(client.fine_tuning.jobs.list_events(sft.id, limit=3).iter_pages())
    ids = [e.id for p in pages for e in p.data]
    assert len(ids) == len(set(ids)) > 3
    assert pages[0].data[0].message == "The job has successfully completed"
    tagged = list(client.fine_tuning.jobs.list(metadata={"k": "v"}))
    assert tagged[0].id == sft.id and all(j.metadata == {"k": "v"} for j in tagged)
    ckpts = client.fine_tuning.jobs.checkpoints.list(sft.id)
    assert [c.step_number for c in ckpts.data] == sorted((c.step_number for c in ckpts.data), reverse=True)
    assert ckpts.data[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model + ":ckpt-step-")
    client.files.content(done.result_files[0]).read()
    client.models.retrieve(done.fine_tuned_model)

    # Pause / resume on a slow job.
    emulator.settings.step_seconds = 0.5
    slow = client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=chat.id)
    while client.fine_tuning.jobs.retrieve(slow.id).status != "running":
        time.sleep(0.03)
    assert client.fine_tuning.jobs.pause(slow.id).status == "paused"
    assert client.fine_tuning.jobs.resume(slow.id).status == "queued"
    client.fine_tuning.jobs.cancel(slow.id)

    # Chat completions with logprobs, on the model and on a checkpoint.
    for model in (done.fine_tuned_model, ckpts.data[0].fine_tuned_model_checkpoint):
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "refund invoice"}],
                                           logprobs=True, top_logprobs=3, max_completion_tokens=2)
        assert r.choices[0].logprobs.content[0].top_logprobs

    # Batches.
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": done.fine_tuned_model, "messages": [{"role": "user", "content": "crash"}]}}
    bfile = client.files.create(file=("b.jsonl", json.dumps(line).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=bfile.id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status != "completed":
        time.sleep(0.03)
        batch = client.batches.retrieve(batch.id)
    assert batch.request_counts.completed == 1
    client.batches.list()
    b2 = client.batches.create(input_file_id=bfile.id, endpoint="/v1/chat/completions", completion_window="24h")
    client.batches.cancel(b2.id)
    client.files.delete(bfile.id)

    # Error answers use the Error envelope.
    for call in (lambda: client.fine_tuning.jobs.retrieve("ftjob-missing"),
                 lambda: client.files.retrieve("file-missing"),
                 lambda: client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=chat.id,
                                                        hyperparameters={"n_epochs": 99}),
                 lambda: client.chat.completions.create(model="ft:nope:x::y", messages=[{"role": "user",
                                                                                          "content": "x"}])):
        with pytest.raises(openai.APIStatusError):
            call()
    assert emulator.violations()[before:] == []


def test_validator_catches_bad_objects() -> None:
    good = {"object": "fine_tuning.job", "id": "ftjob-1", "model": "m", "created_at": 1, "finished_at": None,
            "fine_tuned_model": None, "organization_id": "org", "result_files": [], "status": "paused",
            "validation_file": None, "training_file": "file-1", "hyperparameters": {"n_epochs": "auto"},
            "trained_tokens": None, "error": None, "seed": 1}
    assert violations(JOB, good) == []
    assert violations(JOB, {**good, "status": "exploded"})
    assert violations(JOB, {k: v for k, v in good.items() if k != "seed"})
    assert violations(JOB, {**good, "hyperparameters": {"n_epochs": 0}})
    # nullable: true (3.0 style) is read as "null allowed".
    request = "#/components/schemas/CreateFineTuningJobRequest"
    assert violations(request, {"model": "m", "training_file": "f", "suffix": None, "validation_file": None}) == []
    assert check_response("GET", "/fine_tuning/jobs", 200, {"object": "list", "data": [good]}) != []
    assert check_response("GET", "/files/x", 404, {"error": {"message": "m", "type": "t", "param": None,
                                                             "code": None}}) == []


def test_error_shape_and_request_id(emulator: EmulatorServer) -> None:
    r = httpx.get(emulator.base_url + "/fine_tuning/jobs/ftjob-nope", headers={"Authorization": f"Bearer {TEST_KEY}"})
    assert r.status_code == 404 and r.headers["x-request-id"].startswith("req_")
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(emulator.base_url + "/files")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
