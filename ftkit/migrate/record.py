"""Recording a hosted model's answers before it disappears: a *recorded model* in ftkit's registry.

A recording is the job's model run once on a test file, kept for good in the job's folder::

    $FTKIT_HOME/jobs/<ftkit job id>/recorded/<sha256 of the test file, 16 hex>/
        predictions.jsonl   {"id"?, "prediction", "probabilities"?, "raw"} per example, in test-file order
        recording.json      model id, date, test file and its hash, token usage and cost, labels, prompt
    $FTKIT_HOME/jobs/<ftkit job id>/recorded/train.jsonl, validation.jsonl   the job's data, copied

and listed in the job's manifest under ``recorded``. :func:`ftkit.evaluate` and :func:`ftkit.compare`
use a job's recording on the same test file (same content hash) instead of calling its model, so
a recorded model stays a member of every comparison after the service has shut it down.
Recording again on the same file returns the stored recording without a single request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field

from ftkit.atomic import atomic_write_bytes, atomic_write_text
from ftkit.errors import APIError, EvaluationError, JobNotFoundError
from ftkit.evaluate.predictions import Reference, load_reference
from ftkit.predictor import Classification

MANIFEST_KEY = "recorded"


class Recording(BaseModel):
    """One recorded run of a job's model on a test file.

    Attributes:
        job_id: ftkit's id of the job whose model answered.
        model: the model that answered (e.g. ``ft:gpt-4.1-mini-...``).
        test_file: the test file as given.
        test_sha256: its content hash; a recording is found again by it.
        task: ``classification`` or ``generation``.
        n: examples answered.
        labels: the label vocabulary asked for (classification).
        preamble: the system prompt the model was asked under.
        recorded_at: when (UTC, ISO).
        usage: requests, prompt and completion tokens and dollars, where the Predictor counts them.
        folder: where the predictions live.
        data_files: copies of the job's training and validation files kept beside it.
    """

    job_id: str
    model: str | None
    test_file: str
    test_sha256: str
    task: str
    n: int
    labels: list[str] | None = None
    preamble: str | None = None
    recorded_at: str
    usage: dict[str, Any] = Field(default_factory=dict)
    folder: str
    data_files: dict[str, str] = Field(default_factory=dict)

    @property
    def predictions(self) -> Path:
        """The predictions JSONL file."""
        return Path(self.folder) / "predictions.jsonl"


def attach_once(backend_job_id: str, backend: str, *, options: dict[str, Any] | None = None, store: Any = None) -> Any:
    """The registry's attached job for this hosted job id, attaching it only the first time.

    Recording and migrating then share one registry job (and its recordings) per hosted job.
    """
    from ftkit.job import FineTuneJob
    from ftkit.store import JobStore

    store = store or JobStore()
    for rec in store.list(limit=10_000, backend=backend):
        if rec.backend_job_id == backend_job_id and (rec.manifest or {}).get("attached"):
            return FineTuneJob.get(rec.id, store=store)
    try:
        return FineTuneJob.attach(backend_job_id, backend, options=options, store=store)
    except APIError as e:
        if e.status_code == 404:
            raise JobNotFoundError(f"no fine-tuning job {backend_job_id!r} on this {backend} account") from None
        raise


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def recordings(job: Any) -> list[Recording]:
    """Every recording of a job (from its manifest), oldest first."""
    stored = (job.record.manifest or {}).get(MANIFEST_KEY) or {}
    return [Recording.model_validate(v) for v in stored.values()]


def find_recording(job: Any, data: str | Path) -> Recording | None:
    """The job's recording on this test file (by content hash), or None.

    Raises:
        EvaluationError: the recording is listed but its predictions file is gone.
    """
    path = Path(data).expanduser()
    if not path.is_file():
        return None
    sha = file_sha256(path)
    for rec in recordings(job):
        if rec.test_sha256 == sha:
            if not rec.predictions.is_file():
                raise EvaluationError(
                    f"job {rec.job_id}: the recording on {rec.test_file} is missing its predictions "
                    f"({rec.predictions}); record it again while the model still answers"
                )
            return rec
    return None


def check_labels(ref: Reference, labels: list[str] | None) -> None:
    """Refuse a classification test file with labels the model was not trained on (one line naming them)."""
    if ref.task != "classification" or not labels:
        return
    unknown = sorted(set(ref.targets) - set(labels))
    if unknown:
        raise EvaluationError(
            f"{ref.source}: label(s) {', '.join(map(repr, unknown))} are not among the model's training labels "
            f"({', '.join(labels)}); the test file must use the labels the model was trained on"
        )


def _lines(ref: Reference, answers: list[Any]) -> bytes:
    with_ids = all(i is not None for i in ref.ids)
    out = []
    for i, a in enumerate(answers):
        row: dict[str, Any] = {}
        if with_ids:
            row["id"] = ref.ids[i]
        if isinstance(a, Classification):
            row |= {"prediction": a.label, "probabilities": dict(a.probabilities) or None, "raw": a.raw}
            if a.unparseable_mass:
                row["unparseable_mass"] = a.unparseable_mass
        else:
            row |= {"prediction": str(a), "raw": str(a)}
        out.append(orjson.dumps({k: v for k, v in row.items() if v is not None}) + b"\n")
    return b"".join(out)


def record_model(job: Any, test: str | Path, *, force: bool = False) -> Recording:
    """Run a job's model on a test file once and keep its answers as a recorded model.

    The answers (label, per-label probabilities, raw text), the model id, the date and the token
    usage are written to the job's folder, the job's training and validation files are copied
    beside them, and the job's manifest lists the recording. Idempotent: a recording on a file with
    the same content is returned as it is (``force`` records again).

    Args:
        job: a :class:`~ftkit.job.FineTuneJob` whose model answers (an attached OpenAI job, say).
        test: the labelled test file (classification ``text``/``label``, or chat for generation).
        force: record again even if a recording on this file exists.

    Raises:
        EvaluationError: the test file's task or labels do not fit the model, or the model cannot answer.
    """
    test_path = Path(test).expanduser()
    ref = load_reference(test_path)
    sha = file_sha256(test_path)
    if not force:
        existing = find_recording(job, test_path)
        if existing is not None:
            return existing
    spec = job.spec
    if spec.task == "classification" and ref.task != "classification":
        raise EvaluationError(
            f"{test_path}: a chat file, but the model is a classifier; give text/label lines "
            "(ftkit.migrate.recover.chat_to_classification converts a classification-shaped chat file)"
        )
    labels = list(spec.labels) if spec.labels else None
    check_labels(ref, labels)
    predictor = job.model()
    if ref.task == "classification":
        vocab = labels or ref.label_set()
        answers: list[Any] = list(predictor.classify(ref.texts, labels=vocab))
    else:
        answers = [str(x) for x in predictor.generate(ref.prompts)]
    if len(answers) != len(ref):
        raise EvaluationError(f"the model returned {len(answers)} answers for {len(ref)} examples")

    folder = job.workdir / "recorded" / sha[:16]
    atomic_write_bytes(folder / "predictions.jsonl", _lines(ref, answers))
    data_files: dict[str, str] = {}
    for field in ("train", "validation"):
        src = getattr(spec, field)
        if src is not None and Path(src).is_file():
            dest = job.workdir / "recorded" / f"{field}.jsonl"
            if not dest.exists():
                tmp = dest.with_suffix(".tmp")
                shutil.copyfile(src, tmp)
                tmp.replace(dest)
            data_files[field] = str(dest)
    usage = dict(getattr(predictor, "usage", None) or {})
    rec = Recording(
        job_id=job.id,
        model=job.record.model or spec.model,
        test_file=str(test_path),
        test_sha256=sha,
        task=ref.task,
        n=len(ref),
        labels=labels if ref.task == "classification" else None,
        preamble=getattr(predictor, "preamble", None),
        recorded_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        usage=usage,
        folder=str(folder),
        data_files=data_files,
    )
    atomic_write_text(folder / "recording.json", rec.model_dump_json(indent=2))
    # Re-read the record: another process may have changed the manifest since this handle was made.
    current = job._store.get(job.id).manifest or {}
    stored = dict(current.get(MANIFEST_KEY) or {})
    stored[sha] = rec.model_dump(mode="json")
    job._store.update(job.id, manifest=current | {MANIFEST_KEY: stored})
    job._record = job._store.get(job.id)
    return rec
