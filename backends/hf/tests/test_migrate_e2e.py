"""The whole migration offline: an emulated OpenAI fine-tune is recorded, retrained locally on the real
SmolLM2-135M-Instruct (a few LoRA steps), compared; the run is killed mid-way and resumed without retraining;
after the hosted model is shut down, compare still works.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROMPT = "You triage SMS messages for a phone carrier. Reply with spam or ham only."


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"migrate ended before {what}: {proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout} s")


def test_migrate_end_to_end(spam_files, smollm2_dir, ftkit_home, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    openai = pytest.importorskip("openai")
    from ftkit_openai.emulator import EmulatorServer, EmulatorSettings

    from ftkit import FineTuneJob, JobStatus
    from ftkit.migrate import Migration

    rows = [json.loads(x) for x in spam_files["train"].read_text().splitlines()][:24]
    chat = tmp_path / "sms_chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "system", "content": PROMPT},
                                                     {"role": "user", "content": r["text"]},
                                                     {"role": "assistant", "content": r["label"]}]}) + "\n"
                            for r in rows))
    test = spam_files["test"]
    with EmulatorServer(EmulatorSettings(status_seconds=0.05, step_seconds=0.01, steps_per_epoch=4)) as emu:
        env = {"OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": "sk-test", "FTKIT_CACHE": str(tmp_path / "cache")}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        client = openai.OpenAI()
        f = client.files.create(file=(chat.name, chat.read_bytes()), purpose="fine-tune")
        hosted = client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=f.id,
                                                hyperparameters={"n_epochs": 1})
        _wait_for(lambda: client.fine_tuning.jobs.retrieve(hosted.id).status == "succeeded", 60, "hosted job")
        ft_model = client.fine_tuning.jobs.retrieve(hosted.id).fine_tuned_model

        # First run in another process, killed once the local training has started.
        args = ["migrate", hosted.id, "--test", str(test), "--backend", "hf", "--model", str(smollm2_dir),
                "-o", "device=cpu", "-o", "max_steps=6", "-o", "batch_tokens=256", "--yes"]
        proc = subprocess.Popen([sys.executable, "-c", "from ftkit.cli import main; main()", *args],
                                env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        state_path = ftkit_home / "migrations" / hosted.id / "migration.json"

        def training_started() -> bool:
            if not state_path.is_file():
                return False
            job_id = json.loads(state_path.read_text()).get("retrain_job")
            return bool(job_id) and (ftkit_home / "jobs" / job_id / "events.jsonl").is_file()

        _wait_for(training_started, 300, "local training", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        state = json.loads(state_path.read_text())
        assert state["report_json"] is None  # killed mid-way: no report yet
        chats = sum(1 for r in emu.requests() if r["path"].endswith("/chat/completions"))
        assert chats == 16  # the hosted model answered every test example once

        # Run again in this process: it follows the same training job and records nothing twice.
        result = Migration(hosted.id, test, "hf", str(smollm2_dir),
                           options={"device": "cpu", "max_steps": 6, "batch_tokens": 256}).run(poll_interval=0.2)
        assert result.finished
        assert result.state.retrain_job == state["retrain_job"]
        assert sum(1 for r in emu.requests() if r["path"].endswith("/chat/completions")) == chats
        hf_jobs = FineTuneJob.list(backend="hf")
        assert [j.id for j in hf_jobs] == [state["retrain_job"]] and hf_jobs[0].status is JobStatus.SUCCEEDED
        events = (ftkit_home / "jobs" / state["retrain_job"] / "events.jsonl").read_text()
        assert events.count("worker started") == 1  # trained once
        retrained = FineTuneJob.get(state["retrain_job"])
        mapping = {m["setting"]: m for m in retrained.record.manifest["migration"]["mapping"]}
        assert mapping["system prompt"]["local"] == PROMPT and retrained.spec.preamble == PROMPT
        assert mapping["batch size"]["local"] is None and retrained.spec.hyperparameters.batch_size is None

        # The report's verdict matches its numbers.
        report = json.loads(Path(result.state.report_json).read_text())
        ni = report["pairs"][0]["noninferiority"]
        metrics = report["reports"]
        assert ni["reference"] == ft_model
        assert ni["accuracy_reference"] == metrics[ft_model]["metrics"]["accuracy"]
        assert ni["accuracy_new"] == metrics[ni["new"]]["metrics"]["accuracy"]
        assert ni["shown"] == (ni["p_value"] < ni["alpha"])
        assert report["verdicts"] == [ni["verdict"]] == [result.message]
        if ni["shown"]:
            assert result.message.startswith(f"{ni['new']} is not worse than {ft_model}")
        elif ni["difference"] <= -ni["margin"]:
            assert result.message.startswith(f"{ni['new']} is worse than {ft_model}")
        else:
            assert result.message.startswith("cannot show") and f"about {ni['n_needed']} examples" in result.message

        # Shut the hosted model down: compare still works from the recording.
        emu.set_model(ft_model, shut_down=True)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=ft_model, messages=[{"role": "user", "content": "hi"}])
        from typer.testing import CliRunner

        from ftkit.cli import app

        out = CliRunner().invoke(app, ["compare", result.state.attached_job, result.state.retrain_job,
                                       "--data", str(test), "--bootstrap", "0", "--json"])
        assert out.exit_code == 0, out.output
        again = json.loads(out.stdout)
        assert again["pairs"][0]["noninferiority"]["p_value"] == pytest.approx(ni["p_value"])
