"""Placebo runs: the same job trained on permuted labels, to show the real model learnt something.

A placebo job is an ordinary job created through :meth:`FineTuneJob.create`, on the same backend
with the same options, spec and training seed; only its data differ. Its training (and validation)
file is the original with the labels permuted by :func:`ftkit.data.permute.permute_file`, written
atomically into the original job's folder (``placebo/seed-N/``). The placebo job's manifest records
``placebo``: the original job's id, the permutation seed and, per file, the label cross-table.

Order of writes: the permuted files (and ``permutation.json`` beside them), then the job, then its
manifest entry. A crash before the last step leaves a job that still trains on permuted data, and the
folder says which permutation it was.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ftkit.atomic import atomic_write_text
from ftkit.data.permute import permute_file
from ftkit.errors import ConfigError, FtkitError
from ftkit.events import Event, JobStatus

if TYPE_CHECKING:
    from ftkit.job import FineTuneJob
    from ftkit.store import JobStore


def create_placebo(job: FineTuneJob, *, seed: int | None, options: dict[str, Any], store: JobStore) -> FineTuneJob:
    """Create (not start) the placebo twin of a classification job.

    Args:
        job: the real job.
        seed: the permutation seed; by default the job's training seed.
        options: the backend options to create the twin with (the job's own).
        store: the registry the job lives in.

    Raises:
        ConfigError: the job is not a classification job, or is itself a placebo run.
        DatasetError: a data file cannot be permuted (a line without a label).
    """
    from ftkit.job import FineTuneJob

    spec = job.spec
    if spec.task != "classification":
        raise ConfigError(f"a placebo run permutes labels, so it needs a classification job; {job.id} is {spec.task}")
    if "placebo" in job.record.manifest:
        raise ConfigError(f"job {job.id} is itself a placebo run (of {job.record.manifest['placebo'].get('of')})")
    seed = spec.hyperparameters.seed if seed is None else seed
    if seed < 0:
        raise ConfigError(f"the placebo seed must be 0 or more, not {seed}")
    folder = job.workdir / "placebo" / f"seed-{seed}"
    train = permute_file(spec.train, folder / "train.jsonl", seed, stream=0)
    record: dict[str, Any] = {
        "of": job.id,
        "seed": seed,
        "method": "stratified label permutation",
        "train": train.model_dump(),
    }
    updates: dict[str, Any] = {"train": folder / "train.jsonl"}
    if spec.validation is not None:
        # Permuted too: early stopping or checkpoint choice on real labels would hand the placebo real signal.
        record["validation"] = permute_file(spec.validation, folder / "validation.jsonl", seed, stream=1).model_dump()
        updates["validation"] = folder / "validation.jsonl"
    atomic_write_text(folder / "permutation.json", json.dumps(record, indent=2))
    twin = FineTuneJob.create(spec.model_copy(update=updates), backend=job.backend_name, options=options, store=store)
    store.update(twin.id, manifest=twin.record.manifest | {"placebo": record})
    store.add_events(
        twin.id,
        [
            Event(
                message=f"placebo of {job.id}: labels permuted (stratified, seed {seed}, "
                f"{train.changed} of {train.examples} training labels changed)",
                data={"of": job.id, "seed": seed},
                key="placebo",
            )
        ],
    )
    twin.refresh()  # picks the manifest entry up from the registry
    return twin


def placebos_of(job: FineTuneJob, *, store: JobStore, limit: int = 1000) -> list[FineTuneJob]:
    """The placebo jobs of ``job`` in the registry, newest first."""
    from ftkit.job import FineTuneJob

    return [
        FineTuneJob(r, store)
        for r in store.list(limit=limit)
        if isinstance(r.manifest.get("placebo"), dict) and r.manifest["placebo"].get("of") == job.id
    ]


def succeeded_placebo(job: FineTuneJob, *, store: JobStore) -> tuple[FineTuneJob | None, list[str]]:
    """The newest succeeded placebo of ``job``, and notes about any that are not ready."""
    notes = []
    for twin in placebos_of(job, store=store):
        if not twin.status.is_terminal:
            try:
                twin.refresh()
            except FtkitError as e:
                notes.append(f"placebo job {twin.id} could not be looked at: {e}")
                continue
        if twin.status is JobStatus.SUCCEEDED:
            return twin, notes
        notes.append(f"placebo job {twin.id} is {twin.status.value}; evaluate again once it has succeeded")
    return None, notes
