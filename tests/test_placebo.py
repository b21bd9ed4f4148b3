"""Placebo runs: the stratified label permutation, the twin job and its record, the report's side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

import ftkit
from ftkit import FineTuneJob, JobSpec, JobStatus, register_backend
from ftkit.data.permute import permute_file, permute_labels
from ftkit.errors import ConfigError
from ftkit.evaluate.power import binomial_min_detectable
from ftkit.testing import FakeBackend
from tests.helpers import chat, spam_rows, write_jsonl

register_backend(FakeBackend)
FAST = {"steps": 2, "seconds_per_step": 0.0}


def read(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_permutation_is_stratified(seed: int) -> None:
    labels = ["a"] * 61 + ["b"] * 29 + ["c"] * 10
    placebo, table = permute_labels(labels, seed)
    assert Counter(placebo) == Counter(labels)  # the label counts are kept exactly
    n = len(labels)
    counts = Counter(labels)
    for true, row in table.items():
        assert sum(row.values()) == counts[true]
        for new, k in row.items():
            # Within every true class, each placebo label in proportion to its count, to within one example.
            assert abs(k - counts[true] * counts[new] / n) < 1
    pairs = Counter(zip(labels, placebo, strict=True))
    assert all(table[t][p] == pairs[(t, p)] for t in table for p in table[t])
    assert permute_labels(labels, seed)[0] == placebo  # seeded
    assert permute_labels(labels, seed + 100)[0] != placebo
    assert permute_labels(labels, seed, stream=1)[0] != placebo


def test_permute_file_changes_only_labels_and_leaves_the_source(tmp_path: Path) -> None:
    rows = [{"id": i, "text": r["text"], "label": r["label"], "metadata": {"k": i}}
            for i, r in enumerate(spam_rows(40))]
    src = write_jsonl(tmp_path / "train.jsonl", rows)
    before = src.read_bytes()
    record = permute_file(src, tmp_path / "out" / "train.jsonl", seed=3)
    assert src.read_bytes() == before
    out = read(tmp_path / "out" / "train.jsonl")
    assert [{k: v for k, v in r.items() if k != "label"} for r in out] == [
        {k: v for k, v in r.items() if k != "label"} for r in rows]
    assert record.changed == sum(a["label"] != b["label"] for a, b in zip(rows, out, strict=True)) == 20
    assert record.crosstab == {"ham": {"ham": 10, "spam": 10}, "spam": {"ham": 10, "spam": 10}}
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written atomically, nothing left behind


def make_job(tmp_path: Path, n_train: int = 160) -> FineTuneJob:
    rows = spam_rows(n_train + 40)
    train = write_jsonl(tmp_path / "train.jsonl", rows[:n_train])
    valid = write_jsonl(tmp_path / "valid.jsonl", rows[n_train:])
    spec = JobSpec(task="classification", train=train, validation=valid,
                   hyperparameters=ftkit.Hyperparameters(seed=5))
    return FineTuneJob.create(spec, backend="fake", options=FAST | {"usd_per_step": 0.002})


def test_placebo_twin_is_recorded(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    twin = job.placebo()
    info = twin.record.manifest["placebo"]
    assert info["of"] == job.id and info["seed"] == 5 and info["method"] == "stratified label permutation"
    assert info["train"]["crosstab"] == {"ham": {"ham": 40, "spam": 40}, "spam": {"ham": 40, "spam": 40}}
    assert info["validation"]["examples"] == 40 and info["validation"]["stream"] == 1
    folder = job.workdir / "placebo" / "seed-5"
    assert twin.spec.train == folder / "train.jsonl" and twin.spec.validation == folder / "validation.jsonl"
    assert json.loads((folder / "permutation.json").read_text()) == info
    # Same recipe: spec (but the data), backend, options and training seed.
    same = {"train", "validation"}
    assert twin.spec.model_dump(exclude=same) == job.spec.model_dump(exclude=same)
    assert twin.backend_name == "fake" and twin.record.options == job.record.options
    assert twin.record.manifest["data"]["train"]["path"] == str(folder / "train.jsonl")
    assert any(e.key == "placebo" for e in twin.events())
    assert twin.status is JobStatus.CREATED
    # Another seed, another permutation; a placebo of a placebo is refused.
    other = job.placebo(seed=9)
    assert read(other.spec.train) != read(twin.spec.train)
    with pytest.raises(ConfigError, match="itself a placebo run"):
        twin.placebo()


def test_placebo_needs_classification(tmp_path: Path) -> None:
    from ftkit.placebo import create_placebo

    train = write_jsonl(tmp_path / "chat.jsonl", [chat(f"q{i}") for i in range(12)])
    job = make_job(tmp_path)
    record = job.record.model_copy(update={"spec": {**job.record.spec, "task": "chat", "train": str(train)}})
    chat_job = FineTuneJob(record, job.store)
    with pytest.raises(ConfigError, match="needs a classification job"):
        create_placebo(chat_job, seed=None, options={}, store=job.store)


def test_report_sets_real_placebo_and_majority_side_by_side(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    twin = job.placebo()
    for j in (job, twin):
        j.start()
        assert j.wait(timeout=30) is JobStatus.SUCCEEDED
    test = write_jsonl(tmp_path / "test.jsonl", spam_rows(400)[200:])
    report = ftkit.evaluate(job, test, bootstrap=0)
    pl = report.placebo
    assert pl is not None and pl["job"]["id"] == twin.id and pl["job"]["seed"] == 5
    rows = {r["model"]: r for r in pl["rows"]}
    assert list(rows) == ["real", "placebo", "majority"]
    assert rows["real"]["accuracy"] == report.metrics["accuracy"] == 1.0
    assert rows["majority"]["accuracy"] == report.metrics["majority_rate"] == 0.5
    # Naive Bayes on labels independent of the texts learns nothing: it lands at the majority rate.
    assert abs(rows["placebo"]["accuracy"] - 0.5) <= 0.05
    assert pl["real_beats_placebo"] and pl["p_value_real_beats_placebo"] < 1e-10
    assert pl["real_only_right"] - pl["placebo_only_right"] == 200 * (1.0 - rows["placebo"]["accuracy"])
    page = report.to_html()
    assert "Real vs placebo vs majority class" in page and twin.id in page
    assert report.to_dict()["placebo"]["rows"][1]["name"] == twin.id
    # Power lines: what this 200-example test set detects against the majority rate.
    assert report.power is not None and report.power["n"] == 200
    assert report.power["min_detectable_gain"] == pytest.approx(binomial_min_detectable(200, 0.5))
    # placebo=False leaves it out; evaluating the twin itself does not look for a placebo of a placebo.
    assert ftkit.evaluate(job, test, bootstrap=0, placebo=False).placebo is None
    assert ftkit.evaluate(twin, test, bootstrap=0).placebo is None


def test_any_model_can_be_the_placebo(tmp_path: Path) -> None:
    """Saved predictions work too: a placebo scored elsewhere is set beside the model's own answers."""
    test = write_jsonl(tmp_path / "test.jsonl", spam_rows(40))
    truth = [r["label"] for r in spam_rows(40)]
    report = ftkit.evaluate([{"prediction": t} for t in truth], test, bootstrap=0,
                            placebo=[{"prediction": "ham"}] * 40)
    pl = report.placebo
    assert pl is not None and pl["job"] == {"id": None}
    assert [r["accuracy"] for r in pl["rows"]] == [1.0, 0.5, 0.5]
    assert (pl["real_only_right"], pl["placebo_only_right"]) == (20, 0) and pl["real_beats_placebo"]


def test_unfinished_placebo_is_noted(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    job.start()
    job.wait(timeout=30)
    twin = job.placebo()
    report = ftkit.evaluate(job, write_jsonl(tmp_path / "test.jsonl", spam_rows(20)), bootstrap=0)
    assert report.placebo is None and any(twin.id in n and "created" in n for n in report.notes)


def test_cli_train_placebo(tmp_path: Path) -> None:
    rows = spam_rows(120)
    write_jsonl(tmp_path / "train.jsonl", rows[:100])
    write_jsonl(tmp_path / "valid.jsonl", rows[100:])
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text('task = "classification"\ntrain = "train.jsonl"\nvalidation = "valid.jsonl"\nbackend = "fake"\n'
                   "[fake]\nsteps = 2\nseconds_per_step = 0.0\n")
    from tests.test_leakage import RUN

    r = subprocess.run([sys.executable, "-c", RUN, "train", str(cfg), "--placebo"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert r.returncode == 0, r.stderr
    jobs = FineTuneJob.list()
    assert len(jobs) == 2
    twin, real = jobs  # newest first
    assert twin.record.manifest["placebo"]["of"] == real.id
    assert {j.status for j in jobs} == {JobStatus.SUCCEEDED}
    assert f"placebo {twin.id} of {real.id}" in r.stdout and "50 of 100 training labels changed" in r.stdout
