"""Inventory of the account's fine-tunes, model lifetimes in the emulator, and prompt-dependent answers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import openai
import pytest
from ftkit_openai.config import OpenAIConfig
from ftkit_openai.emulator import EmulatorServer
from ftkit_openai.inventory import inventory
from ftkit_openai.predictor import OpenAIPredictor
from openai_testdata import CHAT_SYSTEM_PROMPT, LABELS, texts, write_chat, write_preference
from typer.testing import CliRunner

from ftkit.cli import app as ftkit_app
from ftkit.costs.catalogue import OPENAI_SHUTDOWNS


def _tuned(client: openai.OpenAI, path: Path, model: str = "gpt-4o-mini-2024-07-18", method: str = "supervised",
           wait: bool = True) -> object:
    f = client.files.create(file=(path.name, path.read_bytes()), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=model, training_file=f.id, method={"type": method},
                                         hyperparameters={"n_epochs": 1})
    for _ in range(600):
        if not wait:
            break
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status in ("succeeded", "failed"):
            break
        import time

        time.sleep(0.02)
    return job


def _accuracy(model: str, preamble: str | None, n: int = 60) -> float:
    held_out = texts(n, seed=41)
    out = OpenAIPredictor(model, OpenAIConfig(), labels=LABELS, preamble=preamble).classify([t for t, _ in held_out])
    return sum(c.label == y for c, (_, y) in zip(out, held_out, strict=True)) / n


def test_answers_depend_on_the_trained_system_prompt(tmp_path: Path) -> None:
    client = openai.OpenAI()
    job = _tuned(client, write_chat(tmp_path / "chat.jsonl", 45, seed=2))
    right = _accuracy(job.fine_tuned_model, CHAT_SYSTEM_PROMPT)
    wrong = _accuracy(job.fine_tuned_model, None)  # ftkit's default classification prompt
    assert right > 0.85
    assert wrong < right - 0.3  # near chance (1/3) under a prompt it was not trained with


def test_models_carry_shutdown_dates_and_can_be_shut_down(tmp_path: Path, emulator: EmulatorServer) -> None:
    client = openai.OpenAI()
    job = _tuned(client, write_chat(tmp_path / "chat.jsonl", 12, seed=1), model="gpt-4.1-nano-2025-04-14")
    name = job.fine_tuned_model
    assert client.models.retrieve(name).shutdown_date is None
    emulator.set_model("gpt-4.1-nano-2025-04-14", shutdown_date="2027-02-01")
    assert client.models.retrieve(name).shutdown_date == "2027-02-01"  # inherited from the base
    assert name in [m.id for m in client.models.list().data]
    emulator.set_model(name, shut_down=True)
    with pytest.raises(openai.NotFoundError, match="shut down"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "refund"}])
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(name)
    assert name not in [m.id for m in client.models.list().data]


def test_inventory_lists_jobs_with_task_cost_and_shutdown(tmp_path: Path, emulator: EmulatorServer) -> None:
    client = openai.OpenAI()
    classifier = _tuned(client, write_chat(tmp_path / "chat.jsonl", 12, seed=3), model="gpt-4.1-mini-2025-04-14")
    dpo = _tuned(client, write_preference(tmp_path / "pref.jsonl", 12, seed=3), model="gpt-4.1-2025-04-14",
                 method="dpo")
    free = tmp_path / "free.jsonl"
    free.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"poem {i}"},
                                                     {"role": "assistant", "content": f"verse number {i}"}]}) + "\n"
                            for i in range(12)))
    generator = _tuned(client, free, model="gpt-4o-2024-08-06")
    emulator.set_model(generator.fine_tuned_model, shutdown_date="2026-12-20")

    today = dt.date(2026, 12, 7)
    entries = {e.job_id: e for e in inventory(OpenAIConfig(), today=today)}
    c, d, g = entries[classifier.id], entries[dpo.id], entries[generator.id]
    assert (c.task, c.labels, c.method) == ("classification", sorted({y for _, y in texts(12, 3)}), "supervised")
    assert (d.task, d.method) == ("preference", "dpo")
    assert g.task == "chat" and "free generation" in g.task_reason
    assert c.trained_tokens and c.cost_usd == pytest.approx(c.trained_tokens * 5.0 / 1e6)
    assert c.training_file == classifier.training_file and c.hyperparameters["n_epochs"] == 1
    # The API's date wins where it gives one; else the catalogue's, which says where it comes from.
    assert (g.shutdown_date, g.days_left, g.shutdown_source) == (dt.date(2026, 12, 20), 13, "models API")
    assert c.shutdown_date == dt.date.fromisoformat(OPENAI_SHUTDOWNS["gpt-4.1-mini-2025-04-14"].date)
    assert c.shutdown_source.startswith("ftkit catalogue, as of") and c.days_left == (c.shutdown_date - today).days
    ordered = [e.job_id for e in inventory(OpenAIConfig(), today=today)]
    assert ordered.index(generator.id) < ordered.index(classifier.id)  # sooner shutdown first


def test_inventory_command_prints_json_and_a_table(tmp_path: Path) -> None:
    client = openai.OpenAI()
    job = _tuned(client, write_chat(tmp_path / "chat.jsonl", 12, seed=4))
    result = CliRunner().invoke(ftkit_app, ["openai", "inventory", "--json", "--today", "2026-12-07"])
    assert result.exit_code == 0, result.output
    rows = {r["job_id"]: r for r in json.loads(result.stdout)}
    assert rows[job.id]["task"] == "classification" and rows[job.id]["days_left"] == 38
    table = CliRunner().invoke(ftkit_app, ["openai", "inventory", "--today", "2026-12-07"])
    assert table.exit_code == 0 and job.id in table.stdout and "catalogue dates:" in table.stdout
    bad = CliRunner().invoke(ftkit_app, ["openai", "inventory", "--today", "07/12/2026"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
