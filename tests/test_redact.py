"""Secrets are masked by key, by shape and by value: in the registry, events, errors and --json output."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftkit import Event, JobRecord, JobStore

MASK = "<redacted>"

ENV_SECRETS = {
    "OPENAI_API_KEY": "sk-proj-ENVSECRET-0123456789abcdef",
    "VAST_API_KEY": "vast-ENVSECRET-fedcba9876543210",
    "RUNPOD_API_KEY": "rpa_ENVSECRET_0123456789",
    "LAMBDA_API_KEY": "secret_lambda_ENVSECRET_42",
    "HF_TOKEN": "hf_ENVSECRETabcdefghijklmnop",
    "MY_SERVICE_SECRET": "svc-ENVSECRET-31415926",
}


@pytest.fixture
def env_secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in ENV_SECRETS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a TOKEN-ish name that is no secret
    monkeypatch.setenv("GITHUB_TOKEN", "short")  # too short to mask safely
    return ENV_SECRETS


def test_shapes_are_masked_and_the_rest_kept() -> None:
    from ftkit.redact import redact_text

    text = (
        "GET https://alice:hunter2pass@pypi.example.com/simple/torch/ failed; "
        "retry https://api.example.com/v1/jobs?api_key=K123456789&page=2&token=T987654321#top "
        "with header Authorization: Bearer abcdefghijklmnop"
    )
    assert redact_text(text) == (
        f"GET https://{MASK}@pypi.example.com/simple/torch/ failed; "
        f"retry https://api.example.com/v1/jobs?api_key={MASK}&page=2&token={MASK}#top "
        f"with header Authorization: Bearer {MASK}"
    )
    # Not secrets: plain URLs, ports, e-mail addresses, token counts.
    plain = "see https://example.com:8443/a?page=2, git+ssh://git@github.com/o/r or a@b.org; billed_tokens=1234"
    assert redact_text(plain) == plain


def test_values_of_secret_environment_variables_are_masked(env_secrets: dict[str, str]) -> None:
    from ftkit.redact import redact_text

    for name, value in env_secrets.items():
        assert redact_text(f"vendor said: invalid key {value}!") == f"vendor said: invalid key {MASK}!", name
    assert redact_text("parallelism false, token short") == "parallelism false, token short"


def test_a_value_seen_under_a_secret_key_is_masked_everywhere_after() -> None:
    from ftkit.redact import redact, redact_text

    option_key = "opt-key-SEENONCE-5555555555"
    stored = redact({"api_key": option_key, "base_url": "https://proxy.local/v1", "nested": [{"note": option_key}]})
    assert stored == {"api_key": MASK, "base_url": "https://proxy.local/v1", "nested": [{"note": MASK}]}
    # Later, in another structure or a plain message, the same value is still masked.
    assert redact_text(f"401: key {option_key} refused") == f"401: key {MASK} refused"
    assert redact({"billed_tokens": 12, "key_path": "/k"}) == {"billed_tokens": 12, "key_path": "/k"}


def test_the_registry_never_holds_a_secret(tmp_path: Path, env_secrets: dict[str, str]) -> None:
    store = JobStore(tmp_path / "home")
    url_secret, query_secret = "urlpass-77777777", "querytok-88888888"
    store.insert(
        JobRecord(
            id="ftk-1", backend="remote", spec={"task": "chat"},
            options={"provider_options": {"base_url": f"https://user:{url_secret}@gpu.example.com/api"}},
            manifest={"data": {"train": {"path": "/data/t.jsonl"}}},
        )
    )  # fmt: skip
    store.update(
        "ftk-1",
        error=f"POST https://gpu.example.com/api?token={query_secret} got 401 for key {env_secrets['VAST_API_KEY']}",
        backend_status=f"failed (auth {env_secrets['RUNPOD_API_KEY']})",
    )
    store.add_events(
        "ftk-1",
        [
            Event(level="error", message=f"start failed: {env_secrets['OPENAI_API_KEY']} refused", key="e1"),
            Event(message="fetched", data={"url": f"https://x:{url_secret}@h/f", "hf": env_secrets["HF_TOKEN"]}),
        ],
    )
    with sqlite3.connect(store.path) as db:
        db.execute("PRAGMA wal_checkpoint(FULL)")
    raw = b"".join(p.read_bytes() for p in (tmp_path / "home").rglob("*") if p.is_file())
    for secret in [url_secret, query_secret, *env_secrets.values()]:
        assert secret.encode() not in raw, secret
    record = store.get("ftk-1")
    assert record.error == f"POST https://gpu.example.com/api?token={MASK} got 401 for key {MASK}"
    assert next(e.message for _, e in store.events("ftk-1")) == f"start failed: {MASK} refused"


def test_the_command_line_masks_errors_and_json(tmp_path: Path, env_secrets: dict[str, str]) -> None:
    from ftkit.cli import app

    home = tmp_path / "home"
    key = env_secrets["VAST_API_KEY"]
    # A key pasted where a job id belongs comes back in the error line masked.
    r = CliRunner().invoke(app, ["status", key], env={"FTKIT_HOME": str(home)})
    assert r.exit_code == 2 and key not in r.stderr and f"no job '{MASK}'" in r.stderr
    # A registry written before redaction by value: --json output masks what it still holds.
    JobStore(home)
    with sqlite3.connect(home / "jobs.sqlite") as db:
        db.execute(
            "INSERT INTO jobs (id, backend, status, created_at, updated_at, spec, options, state, manifest, error) "
            "VALUES ('ftk-old', 'openai', 'failed', 0, 0, '{}', '{}', '{}', '{}', ?)",
            (f"401 from https://u:{key}@api.example.com",),
        )
    r = CliRunner().invoke(app, ["status", "ftk-old", "--json"], env={"FTKIT_HOME": str(home)})
    assert r.exit_code == 0, r.output
    assert key not in r.stdout and json.loads(r.stdout)["error"] == f"401 from https://{MASK}@api.example.com"


def test_ftkit_errors_are_masked_when_raised(env_secrets: dict[str, str]) -> None:
    from ftkit.errors import APIError, AuthenticationError

    key = env_secrets["LAMBDA_API_KEY"]
    err = APIError(f"401 from https://cloud.example.com/api/v1?api_key={key}: key {key} is invalid", status_code=401)
    assert key not in str(err) and err.status_code == 401
    assert str(AuthenticationError(f"https://u:{key}@h refused")) == f"https://{MASK}@h refused"
