"""OpenAIConfig: the options of the openai backend (the ``[openai]`` section of ``ftkit.toml``)."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar, Literal

from pydantic import Field, SecretStr

from ftkit.backend import BackendConfig


class OpenAIConfig(BackendConfig):
    """Options of the openai backend. Credentials come from the environment unless given here.

    The API key is a ``SecretStr``: the registry stores it masked (and drops it), so a job read
    back in another process needs ``OPENAI_API_KEY`` in that process's environment.
    """

    zero_allowed: ClassVar[dict[str, str]] = {"max_retries": "0 fails at the first transient error"}

    api_key: SecretStr | None = Field(
        default=None, description="API key; default: $OPENAI_API_KEY, read at call time. Never stored."
    )
    base_url: str | None = Field(
        default=None, description="API root such as http://127.0.0.1:8765/v1; default: $OPENAI_BASE_URL or OpenAI."
    )
    organization: str | None = Field(default=None, description="Organization id; default: $OPENAI_ORG_ID.")
    project: str | None = Field(default=None, description="Project id; default: $OPENAI_PROJECT_ID.")
    method: Literal["supervised", "dpo"] | None = Field(
        default=None, description="Fine-tuning method; default: dpo for preference data, else supervised."
    )
    learning_rate_multiplier: float | None = Field(
        default=None, gt=0, description="OpenAI's learning-rate multiplier; default: the spec's learning_rate, or auto."
    )
    beta: float | None = Field(default=None, gt=0, le=2, description="DPO beta in (0, 2]; default auto.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Up to 15 metadata pairs for the job (ftkit adds ftkit_job_id)."
    )
    reuse_files: bool = Field(default=True, description="Reuse an uploaded file with the same content hash.")
    max_retries: int = Field(default=4, ge=0, le=20, description="Retries of transient failures (429, 5xx, network).")
    max_retry_wait: float = Field(
        default=60.0, gt=0, description="Longest Retry-After honoured (s); a longer one fails at once."
    )
    timeout: float = Field(default=600.0, gt=0, description="Seconds per request.")
    max_concurrency: int = Field(default=8, ge=1, le=256, description="Parallel requests for generate/classify.")
    top_logprobs: int = Field(default=20, ge=1, le=20, description="Alternatives asked per token when classifying.")
    classify_mode: Literal["auto", "logprobs", "parse"] = Field(
        default="auto", description="auto: logprobs, falling back to parsing the answer where refused."
    )
    use_batch: bool = Field(
        default=False, description="Run classify/generate through the Batch API (half price, up to 24 h)."
    )
    batch_poll_interval: float = Field(default=30.0, gt=0, description="Seconds between polls of a batch.")
    batch_timeout: float = Field(default=86_400.0 + 3_600, gt=0, description="Give up on a batch after this (s).")
    today: dt.date | None = Field(
        default=None, description="Override today's date for the sunset check (else $FTKIT_TODAY, else the clock)."
    )
