"""Everything the emulated service holds: files, jobs, models, batches, and the operations on them.

Handlers in :mod:`ftkit_openai.emulator.http` parse requests and call these methods under one
lock; the methods raise :class:`ApiError` with OpenAI's error shape where OpenAI would refuse.
"""

from __future__ import annotations

import json
import random
import string
import threading
from dataclasses import dataclass
from typing import Any

from ftkit_openai.emulator import batches as batch_ops
from ftkit_openai.emulator.answers import Memory, logprobs_content
from ftkit_openai.emulator.faults import INELIGIBLE_CODE, INELIGIBLE_MESSAGE
from ftkit_openai.emulator.jobs import TERMINAL, Job, JobRunner, now
from ftkit_openai.emulator.settings import EmulatorSettings
from ftkit_openai.emulator.training import check_training_data

_ALPHABET = string.ascii_letters + string.digits
FINE_TUNABLE = (
    "gpt-4.1-2025-04-14", "gpt-4.1-mini-2025-04-14", "gpt-4.1-nano-2025-04-14", "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0613", "davinci-002",
    "babbage-002", "o4-mini-2025-04-16", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini",
    "gpt-3.5-turbo", "o4-mini",
)
DPO_PREFIXES = ("gpt-4.1", "gpt-4o")
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class ApiError(Exception):
    """An error answer: HTTP status, OpenAI's error object and extra headers."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


@dataclass
class StoredFile:
    """An uploaded (or generated) file."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: float
    expires_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "object": "file", "id": self.id, "bytes": len(self.content), "created_at": int(self.created_at),
            "filename": self.filename, "purpose": self.purpose, "status": "processed",
        }
        if self.expires_at is not None:
            out["expires_at"] = int(self.expires_at)
        return out


class State:
    """The emulated service's data, guarded by ``lock``."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.lock = threading.RLock()
        self._rng = random.Random(settings.seed)
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, Job] = {}
        self.models: dict[str, str] = {}  # fine-tuned model or checkpoint name -> job id
        self.batches: dict[str, dict[str, Any]] = {}
        # Model lifecycle: a shutdown date per model (ISO date) and the models already shut down.
        self.shutdown_dates: dict[str, str] = {}
        self.shut_down: set[str] = set()
        self._memories: dict[str, Memory] = {}
        self.runner = JobRunner(self)

    def new_id(self, prefix: str, n: int) -> str:
        return prefix + "".join(self._rng.choice(_ALPHABET) for _ in range(n))

    def tick(self) -> None:
        """Advance every job and batch to now."""
        t = now()
        for job in self.jobs.values():
            self.runner.advance(job, t)
        for b in self.batches.values():
            batch_ops.advance(self, b, t)

    # ------------------------------------------------------------------ files

    def add_file(self, filename: str, purpose: str, content: bytes, at: float | None = None,
                 expires_after: float | None = None) -> StoredFile:
        created = at if at is not None else now()
        f = StoredFile(self.new_id("file-", 22), filename, purpose, content, created,
                       created + expires_after if expires_after else None)
        self.files[f.id] = f
        return f

    def upload(self, filename: str, purpose: str, content: bytes, expires_after: float | None) -> StoredFile:
        if purpose not in UPLOAD_PURPOSES:
            raise ApiError(400, f"'{purpose}' is not one of {list(UPLOAD_PURPOSES)} - 'purpose'", param="purpose")
        if purpose == "fine-tune" and not filename.endswith(".jsonl"):
            raise ApiError(400, f"Invalid file format for Fine-Tuning API. Must be .jsonl (got {filename})",
                           param="file")
        if expires_after is not None and not 3600 <= expires_after <= 2_592_000:
            raise ApiError(400, "expires_after.seconds must be between 3600 and 2592000", param="expires_after")
        return self.add_file(filename, purpose, content, expires_after=expires_after)

    def get_file(self, file_id: str) -> StoredFile:
        f = self.files.get(file_id)
        if f is None:
            raise ApiError(404, f"No such File object: {file_id}", param="id")
        return f

    # ------------------------------------------------------------------ jobs

    def create_job(self, body: dict[str, Any], ineligible: bool = False) -> Job:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        if ineligible:
            raise ApiError(400, INELIGIBLE_MESSAGE, param=None, code=INELIGIBLE_CODE)
        base = model.split(":")[1] if model.startswith("ft:") else model
        if model.startswith("ft:") and model not in self.models:
            raise ApiError(400, f"Model {model} is not available for fine-tuning or does not exist.", param="model")
        if not model.startswith("ft:") and model not in FINE_TUNABLE:
            raise ApiError(400, f"Model {model} is not available for fine-tuning or does not exist.", param="model",
                           code="model_not_available")
        training = str(body.get("training_file"))
        for param in ("training_file", "validation_file"):
            fid = body.get(param)
            if fid is None and param == "validation_file":
                continue
            f = self.files.get(fid) if isinstance(fid, str) else None
            if f is None:
                raise ApiError(400, f"invalid {param}: {fid}", param=param, code="invalid_file_id")
            if f.purpose != "fine-tune":
                raise ApiError(400, f"File {fid} has purpose '{f.purpose}'; fine-tuning needs purpose 'fine-tune'",
                               param=param)
        method_obj = body.get("method") or {"type": "supervised"}
        method = method_obj.get("type", "supervised")
        if method not in ("supervised", "dpo"):
            raise ApiError(400, f"The emulator does not support method {method!r}.", param="method.type")
        if method == "dpo" and not base.startswith(DPO_PREFIXES):
            raise ApiError(400, f"Model {model} does not support the dpo method.", param="method.type")
        hp = dict(body.get("hyperparameters") or {})
        hp.update(((method_obj.get(method) or {}).get("hyperparameters")) or {})
        _check_hyperparameters(hp, method)
        suffix = body.get("suffix")
        if suffix is not None and not (isinstance(suffix, str) and 1 <= len(suffix) <= 64):
            raise ApiError(400, "suffix must be a string of 1 to 64 characters", param="suffix")
        seed = body.get("seed")
        if seed is None:
            seed = self._rng.randint(0, 2_147_483_647)
        if not isinstance(seed, int) or not 0 <= seed <= 2_147_483_647:
            raise ApiError(400, "seed must be an integer in 0..2147483647", param="seed")
        metadata = body.get("metadata")
        if metadata is not None and (not isinstance(metadata, dict) or len(metadata) > 16 or any(
                not isinstance(v, str) or len(k) > 64 or len(v) > 512 for k, v in metadata.items())):
            raise ApiError(400, "metadata takes at most 16 string pairs (keys <= 64, values <= 512 chars)",
                           param="metadata")
        t = now()
        job = Job(
            id=self.new_id("ftjob-", 24), model=model, training_file=training,
            validation_file=body.get("validation_file"), method=method, hyperparameters=dict(hp), suffix=suffix,
            seed=seed,
            metadata=metadata, integrations=body.get("integrations"), created_at=t, phase_started=t,
        )
        self.jobs[job.id] = job
        self.runner.event(job, t, f"Created fine-tuning job: {job.id}")
        files = f"Validating training file: {training}"
        if job.validation_file:
            files += f" and validation file: {job.validation_file}"
        self.runner.event(job, t, files)
        return job

    def get_job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Could not find fine tune: {job_id}", param="fine_tune_id")
        return job

    def job_action(self, job_id: str, action: str) -> Job:
        job = self.get_job(job_id)
        t = now()
        if action == "cancel":
            if job.status in TERMINAL:
                raise ApiError(400, f"Job has already completed: {job_id}", param=None)
            self.runner.cancel(job, t)
        elif action == "pause":
            if job.status not in ("running", "queued"):
                raise ApiError(400, f"Only a running or queued job can be paused; {job_id} is {job.status}")
            self.runner.pause(job, t)
        elif action == "resume":
            if job.status != "paused":
                raise ApiError(400, f"Only a paused job can be resumed; {job_id} is {job.status}")
            self.runner.resume(job, t)
        return job

    # ------------------------------------------------------------------ models

    def shutdown_date_of(self, model: str) -> str | None:
        """A model's shutdown date: its own, else (for a fine-tuned model or checkpoint) its base model's."""
        if model in self.shutdown_dates:
            return self.shutdown_dates[model]
        if model.startswith("ft:"):
            return self.shutdown_dates.get(model.split(":")[1])
        return None

    def model_object(self, model: str) -> dict[str, Any]:
        """``GET /models/{model}``: the model object, with ``shutdown_date`` (null when none is set)."""
        if model in self.shut_down or (model.startswith("ft:") and model.split(":")[1] in self.shut_down):
            raise ApiError(404, f"The model `{model}` has been shut down and no longer exists.",
                           code="model_not_found")
        if model in self.models:
            job = self.jobs[self.models[model]]
            created, owner = int(job.finished_at or job.created_at), self.settings.org_slug
        elif model in FINE_TUNABLE:
            created, owner = 1_700_000_000, "system"
        else:
            raise ApiError(404, f"The model `{model}` does not exist", code="model_not_found")
        return {"id": model, "object": "model", "created": created, "owned_by": owner,
                "shutdown_date": self.shutdown_date_of(model)}

    def list_models(self) -> list[dict[str, Any]]:
        """``GET /models``: base models, then the fine-tuned models of finished jobs (checkpoints left out)."""
        names = [m for m in FINE_TUNABLE if m not in self.shut_down]
        names += [j.fine_tuned_model for j in self.jobs.values() if j.fine_tuned_model]
        out = []
        for name in names:
            try:
                out.append(self.model_object(name))
            except ApiError:
                continue
        return out

    def set_model_lifecycle(self, model: str, shutdown_date: str | None = None,
                            shut_down: bool = False) -> dict[str, Any]:
        """Set a model's shutdown date and/or shut it down now (the ``/_emulator/models/{id}`` control route)."""
        if model not in self.models and model not in FINE_TUNABLE:
            raise ApiError(404, f"The model `{model}` does not exist", code="model_not_found")
        if shutdown_date is not None:
            self.shutdown_dates[model] = shutdown_date
        if shut_down:
            self.shut_down.add(model)
        return {"id": model, "shutdown_date": self.shutdown_date_of(model), "shut_down": model in self.shut_down}

    # ------------------------------------------------------------------ inference

    def memory_for(self, model: str) -> Memory | None:
        """The training examples behind a fine-tuned model name; None for a base model."""
        job_id = self.models.get(model)
        if job_id is None:
            return None
        if job_id not in self._memories:
            job = self.jobs[job_id]
            check = check_training_data(self.files[job.training_file].content, job.method)
            self._memories[job_id] = Memory(check.examples)
        return self._memories[job_id]

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        from ftkit.data.tokens import encoding_for_model, get_encoding

        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str):
            raise ApiError(400, "Missing required parameter: 'model'.", param="model")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "Missing required parameter: 'messages'.", param="messages")
        base = model.split(":")[1] if model.startswith("ft:") else model
        if model in self.shut_down or base in self.shut_down:
            raise ApiError(404, f"The model `{model}` has been shut down and no longer exists.",
                           param=None, code="model_not_found")
        memory = self.memory_for(model)
        if memory is None and (model.startswith("ft:") or model not in FINE_TUNABLE):
            raise ApiError(404, f"The model `{model}` does not exist or you do not have access to it.",
                           param=None, code="model_not_found")
        logprobs = bool(body.get("logprobs"))
        top = body.get("top_logprobs")
        if top is not None and not logprobs:
            raise ApiError(400, "top_logprobs requires logprobs to be true", param="top_logprobs")
        if top is not None and not (isinstance(top, int) and 0 <= top <= 20):
            raise ApiError(400, "top_logprobs must be between 0 and 20", param="top_logprobs")
        if logprobs and base.startswith(("o1", "o3", "o4")):
            raise ApiError(403, "You are not allowed to request logprobs from this model", param=None)
        answer = (memory or Memory([])).answer(messages)
        enc = get_encoding(encoding_for_model(base))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        ids = enc.encode_ordinary(answer.text)
        text, finish = answer.text, "stop"
        if max_tokens is not None and len(ids) > max_tokens:
            text, finish = enc.decode(ids[:max_tokens]), "length"
        prompt_tokens = sum(len(enc.encode_ordinary(str(m.get("content") or ""))) + 4 for m in messages) + 3
        completion_tokens = min(len(ids), max_tokens or len(ids))
        lp = None
        if logprobs:
            lp = {"content": logprobs_content(answer, enc, int(top or 0), max_tokens), "refusal": None}
        return {
            "id": self.new_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(now()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": lp,
                "finish_reason": finish,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "service_tier": "default",
            "system_fingerprint": "fp_ftkitemu",
        }


def _check_hyperparameters(hp: dict[str, Any], method: str) -> None:
    ranges = {"n_epochs": (1, 50, int), "batch_size": (1, 256, int)}
    for name, (lo, hi, typ) in ranges.items():
        v = hp.get(name, "auto")
        if v != "auto" and (not isinstance(v, typ) or isinstance(v, bool) or not lo <= v <= hi):
            raise ApiError(400, f"Invalid value for {name}: {v!r}; expected 'auto' or an integer in {lo}..{hi}",
                           param=f"hyperparameters.{name}")
    lr = hp.get("learning_rate_multiplier", "auto")
    if lr != "auto" and (not isinstance(lr, int | float) or lr <= 0):
        raise ApiError(400, f"Invalid value for learning_rate_multiplier: {lr!r}; must be > 0",
                       param="hyperparameters.learning_rate_multiplier")
    beta = hp.get("beta", "auto")
    if beta != "auto" and (method != "dpo" or not isinstance(beta, int | float) or not 0 < beta <= 2):
        raise ApiError(400, f"Invalid value for beta: {beta!r}; DPO only, in (0, 2]", param="hyperparameters.beta")


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A page of a newest-first list: the items after the ``after`` id (exclusive), at most ``limit``."""
    start = 0
    if after:
        ids = [x["id"] for x in items]
        if after in ids:
            start = ids.index(after) + 1
    chunk = items[start:start + limit]
    return chunk, start + limit < len(items)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    """JSON lines."""
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)
