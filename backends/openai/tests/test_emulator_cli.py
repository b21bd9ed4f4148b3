"""``python -m ftkit_openai.emulator`` runs as a real server process that the openai client can use."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import openai
import pytest
from ftkit_openai.emulator import control
from openai_testdata import TEST_KEY, texts


@pytest.fixture
def served() -> Iterator[str]:
    fault = json.dumps({"kind": "rate_limit", "path": "/v1/files", "method": "GET", "count": 1,
                        "retry_after_ms": 10})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftkit_openai.emulator", "--port", "0", "--status-seconds", "0.05",
         "--step-seconds", "0.01", "--steps-per-epoch", "2", "--plain-results", "--validate", "--fault", fault],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "emulator on http://127.0.0.1:" in banner, proc.stderr.read() if proc.stderr else banner
        yield banner.strip().rsplit(" ", 1)[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_server_end_to_end(served: str) -> None:
    client = openai.OpenAI(base_url=served, api_key=TEST_KEY, max_retries=2)
    assert list(client.files.list()) == []  # the first answer was a 429 the client retried
    rows = [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": y}]}
            for t, y in texts(10, seed=61)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    f = client.files.create(file=("d.jsonl", data), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4.1-nano-2025-04-14", training_file=f.id,
                                         hyperparameters={"n_epochs": 2})
    while job.status not in ("succeeded", "failed"):
        time.sleep(0.03)
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded" and job.hyperparameters.n_epochs == 2
    csv = client.files.content(job.result_files[0]).text
    assert csv.splitlines()[0].startswith("step,train_loss") and len(csv.splitlines()) == 5  # plain, 4 steps
    assert control(served, "violations", method="GET") == {"violations": []}
    requests = control(served, "requests", method="GET")["requests"]
    assert [r["retry_count"] for r in requests if r["path"] == "/files"][:2] == ["0", "1"]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftkit_openai.emulator import EmulatorSettings

    monkeypatch.setenv("FTKIT_EMULATOR_STATUS_SECONDS", "0.25")
    monkeypatch.setenv("FTKIT_EMULATOR_RESULTS_BASE64", "false")
    s = EmulatorSettings.from_env(step_seconds=0.5)
    assert (s.status_seconds, s.results_base64, s.step_seconds) == (0.25, False, 0.5)


def test_bad_fault_rule_is_refused(emulator_url: str) -> None:
    import httpx

    r = httpx.post(emulator_url + "/_emulator/faults", json={"kind": "meteor"})
    assert r.status_code == 400 and "kind" in r.json()["detail"]


@pytest.fixture
def emulator_url(emulator) -> str:  # type: ignore[no-untyped-def]
    return str(emulator.url)
