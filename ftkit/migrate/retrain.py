"""Retraining a hosted fine-tune on an open model: the equivalent JobSpec, and what was mapped how.

From an attached job (an OpenAI fine-tune followed through :meth:`ftkit.FineTuneJob.attach`) the
retraining spec keeps what defines the model and leaves what only suits the vendor's machinery:

* **data**: the same training and validation files (the attached job downloaded them);
* **task, labels, prompt**: for a classifier, the labels and the exact system prompt recovered
  from the chat data (:mod:`ftkit.migrate.recover`), so training and scoring use the prompt the
  user trained with; free chat stays chat;
* **epochs**: carried over (the vendor's resolved value);
* **batch size**: *not* copied. OpenAI resolves "auto" to tiny batches for small files (1 for a
  few hundred examples), sized for its own infrastructure; copied, it makes hundreds of optimizer
  steps per epoch on a laptop (602 steps, 31 minutes instead of 2 in one trial). Local backends
  batch by tokens instead (hf: ``batch_tokens`` real tokens per step, at most
  ``max_batch_examples`` examples);
* **learning-rate multiplier**: *not* copied. It scales OpenAI's undisclosed base rate for its
  own model; it means nothing for a LoRA on another model. The backend's documented default is used
  (hf: 2e-4 for LoRA, 2e-5 for full fine-tuning) unless the user sets one;
* **seed**: carried over;
* **model**: the open model the user picks, else the backend's default.

A DPO fine-tune (``method.dpo``) becomes a ``preference`` job on a backend that trains preferences
(hf, remote): **beta** is carried over into the backend's ``dpo_beta`` option (OpenAI's "auto" is the
backend's default, 0.1, the value the DPO paper and TRL use) by :func:`retrain_options`, **epochs** are
carried over, and the **learning-rate multiplier** is not copied, as above (LoRA on SmolLM2-135M needed
an absolute 5e-4, docs/backends/hf.md). A backend without preference tuning gets a clear error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ftkit.backend import get_backend
from ftkit.errors import ConfigError
from ftkit.spec import Hyperparameters, JobSpec

DPO_NOT_YET = (
    "this is a DPO (preference) fine-tune: retraining it needs preference tuning, which ftkit's "
    "{backend} backend does not have; use --backend hf or remote"
)
# hf's dpo_beta default: what a hosted "auto" beta becomes.
DPO_BETA_DEFAULT = 0.1


class MappingRow(BaseModel):
    """How one setting of the hosted job became one of the retraining job."""

    setting: str
    hosted: Any = None
    local: Any = None
    why: str


def _openai_hyperparameters(job: Any) -> dict[str, Any]:
    manifest = job.record.manifest or {}
    return dict(((manifest.get("openai") or {}).get("hyperparameters")) or {})


def _hosted_beta(job: Any) -> float | None:
    beta = _openai_hyperparameters(job).get("beta")
    return float(beta) if isinstance(beta, int | float) and not isinstance(beta, bool) else None


def retrain_options(job: Any, backend: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The retraining backend's options: the user's ``options`` plus the hosted job's settings they leave open.

    For a DPO fine-tune that is its resolved ``beta`` as ``dpo_beta`` (hf), or inside ``hf`` (remote, which
    runs the hf trainer on the rented machine); "auto" or unknown leaves the backend's default (0.1). What the
    user set wins.
    """
    merged = dict(options or {})
    beta = _hosted_beta(job) if job.spec.task == "preference" else None
    if beta is not None and backend == "remote":
        merged["hf"] = {"dpo_beta": beta, **(merged.get("hf") or {})}
    elif beta is not None:
        merged.setdefault("dpo_beta", beta)
    return merged


def retrain_spec(
    job: Any, backend: str, model: str | None = None, *, learning_rate: float | None = None
) -> tuple[JobSpec, list[MappingRow]]:
    """The JobSpec that retrains an attached hosted fine-tune on ``backend``, and the mapping it applied.

    Args:
        job: the attached :class:`~ftkit.job.FineTuneJob` (an OpenAI fine-tune).
        backend: ``hf`` or ``remote`` (any installed backend that trains open models).
        model: the open model; defaults to the backend's default.
        learning_rate: an absolute learning rate to use instead of the backend's default.

    Raises:
        ConfigError: a DPO fine-tune on a backend without preference tuning, or a task the backend cannot train.
    """
    src = job.spec
    be = get_backend(backend)
    if src.task == "preference" and "preference" not in be.capabilities.tasks:
        raise ConfigError(DPO_NOT_YET.format(backend=backend))
    if src.task not in be.capabilities.tasks:
        raise ConfigError(f"backend {backend!r} cannot train a {src.task!r} task")
    hosted = _openai_hyperparameters(job)
    hp = src.hyperparameters
    epochs = hosted.get("n_epochs") if isinstance(hosted.get("n_epochs"), int) else hp.epochs
    open_model = model or be.default_model(src.task)
    rows = [
        MappingRow(
            setting="model",
            hosted=src.model,
            local=open_model,
            why="the open model chosen" if model else f"the {backend} backend's default open model",
        ),
        MappingRow(
            setting="train",
            hosted=str(src.train),
            local=str(src.train),
            why="the same training data, downloaded from the hosted job",
        ),
        MappingRow(
            setting="validation",
            hosted=str(src.validation) if src.validation else None,
            local=str(src.validation) if src.validation else None,
            why="the same validation data",
        ),
        MappingRow(
            setting="task",
            hosted=src.task,
            local=src.task,
            why={
                "classification": "recovered from the chat data",
                "preference": "DPO preference pairs kept as pairs (method.dpo)",
            }.get(src.task, "chat data kept as chat"),
        ),
    ]
    if src.task == "preference":
        beta = _hosted_beta(job)
        rows.append(
            MappingRow(
                setting="beta",
                hosted=_openai_hyperparameters(job).get("beta", "auto"),
                local=beta if beta is not None else DPO_BETA_DEFAULT,
                why="carried over: the same beta of the same sigmoid DPO loss (option dpo_beta)"
                if beta is not None
                else f"the hosted value is unknown or 'auto': the backend's default {DPO_BETA_DEFAULT}",
            )
        )
    if src.task == "classification":
        rows += [
            MappingRow(setting="labels", hosted=src.labels, local=src.labels, why="the answers of the training data"),
            MappingRow(
                setting="system prompt",
                hosted=src.preamble,
                local=src.preamble,
                why="the exact system prompt of the training data, used for training and scoring alike",
            ),
        ]
    rows += [
        MappingRow(setting="epochs", hosted=epochs, local=epochs, why="carried over"),
        MappingRow(
            setting="batch size",
            hosted=hosted.get("batch_size", hp.batch_size),
            local=None,
            why="not copied: the hosted value is sized for the vendor's machines; the backend batches by "
            "tokens (hf: batch_tokens per optimizer step, at most max_batch_examples examples)",
        ),
        MappingRow(
            setting="learning rate",
            hosted=hosted.get("learning_rate_multiplier"),
            local=learning_rate,
            why="set by the user"
            if learning_rate is not None
            else "not copied: a multiplier of the vendor's undisclosed base rate means nothing for a LoRA on "
            "another model; the backend's default is used (hf: 2e-4 LoRA, 2e-5 full)",
        ),
        MappingRow(setting="seed", hosted=hp.seed, local=hp.seed, why="carried over"),
    ]
    spec = JobSpec(
        task=src.task,
        model=open_model,
        train=src.train,
        validation=src.validation,
        labels=src.labels,
        preamble=src.preamble,
        suffix=src.suffix,
        hyperparameters=Hyperparameters(epochs=epochs, learning_rate=learning_rate, seed=hp.seed),
        backend=backend,
    )
    return spec, rows


def create_retrain_job(
    job: Any,
    backend: str,
    model: str | None = None,
    *,
    options: dict[str, Any] | None = None,
    learning_rate: float | None = None,
    store: Any = None,
) -> Any:
    """Record (not start) the retraining job, with the mapping in its manifest under ``migration``.

    Spends nothing: like :meth:`ftkit.FineTuneJob.create` it validates, estimates and records.
    """
    from ftkit.job import FineTuneJob

    spec, rows = retrain_spec(job, backend, model, learning_rate=learning_rate)
    new = FineTuneJob.create(
        spec, backend=backend, options=retrain_options(job, backend, options), store=store or job._store
    )
    migration = {
        "from_job": job.id,
        "from_model": job.record.model,
        "from_backend_job": job.backend_job_id,
        "mapping": [r.model_dump(mode="json") for r in rows],
    }
    new._store.update(new.id, manifest=new.record.manifest | {"migration": migration})
    new._record = new._store.get(new.id)  # keep this handle: it holds the options' secrets, the registry does not
    return new
