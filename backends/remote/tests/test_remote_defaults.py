"""The remote job folder carries the training settings ftkit-hf chose from the data, and the carved validation."""

from __future__ import annotations

import json
from pathlib import Path

from ftkit_hf.config import HFConfig
from ftkit_remote.jobfolder import stage_job_folder

from ftkit.backend import JobContext
from ftkit.spec import JobSpec


def test_stage_carries_the_plan_and_the_carved_split(tmp_path: Path) -> None:
    rows = [{"text": f"message number {i} {'win cash' if i % 4 == 0 else 'see you'}",
             "label": "spam" if i % 4 == 0 else "ham"} for i in range(100)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = JobSpec(task="classification", model="smollm2-135m", train=train, labels=["ham", "spam"])
    ctx = JobContext(id="ftk-test", spec=spec, config=HFConfig(), workdir=tmp_path / "job")
    stage, _ = stage_job_folder(ctx, {}, custom_worker=False)
    shipped = json.loads((stage / "spec.json").read_text())
    plan = shipped["training"]
    assert plan["batch_size"] == 4 and plan["early_stopping_patience"] == 1
    carved = plan["validation"]["lines"]
    assert len(carved) == 12 and shipped["validation"] == "data/validation.jsonl"
    lines = train.read_text(encoding="utf-8").splitlines()
    assert (stage / "data" / "validation.jsonl").read_text().splitlines() == [lines[n - 1] for n in carved]
    assert len((stage / "data" / "train.jsonl").read_text().splitlines()) == 88
