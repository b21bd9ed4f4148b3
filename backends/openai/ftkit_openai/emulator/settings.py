"""The emulator's settings: timing, identity and output options.

Every setting can come from a CLI flag, from an environment variable ``FTKIT_EMULATOR_<NAME>``
(e.g. ``FTKIT_EMULATOR_STATUS_SECONDS=0.1``) or, at run time, from ``POST /_emulator/settings``.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EmulatorSettings(BaseModel):
    """How the emulated service behaves. The defaults look like a (very fast) real service."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    status_seconds: float = Field(
        default=2.0, ge=0, description="Seconds a job spends in each of validating_files and queued."
    )
    step_seconds: float = Field(default=0.5, ge=0, description="Seconds per training step while running.")
    steps_per_epoch: int | None = Field(
        default=None, ge=1, description="Steps reported per epoch; None: ceil(examples / batch_size) like OpenAI."
    )
    queue_seconds: float = Field(default=0.0, ge=0, description="Extra seconds in `queued` (a slow queue).")
    batch_seconds: float = Field(default=1.0, ge=0, description="Seconds a batch spends in each batch status.")
    results_base64: bool = Field(default=True, description="Serve the results CSV base64-encoded, as observed.")
    healthy_error_null: bool = Field(
        default=True,
        description="A healthy job's `error` is null; False sends {code:null, message:null, param:null} "
        "as the real server sometimes does.",
    )
    api_key: str | None = Field(
        default=None, description="When set, only this bearer key is accepted; otherwise any non-empty key."
    )
    org_slug: str = Field(default="personal", description="Organisation slug used in fine-tuned model names.")
    organization_id: str = Field(default="org-ftkitemulator0000000000", description="Returned as organization_id.")
    seed: int = Field(default=0, description="Seed of the id generator and loss curves.")
    validate_responses: bool = Field(
        default=False, description="Check every JSON answer against the OpenAPI excerpt; violations are kept."
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> EmulatorSettings:
        """Settings from ``FTKIT_EMULATOR_*`` variables, then ``overrides``."""
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = os.environ.get(f"FTKIT_EMULATOR_{name.upper()}")
            if raw is not None:
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
