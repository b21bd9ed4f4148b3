"""Fault injection: make the next matching requests fail the way OpenAI fails.

A rule matches on method and path prefix (``/v1`` included or not) and fires ``count`` times::

    POST /_emulator/faults {"kind": "rate_limit", "path": "/v1/chat/completions", "count": 2, "retry_after": 0.2}

Kinds:

- ``rate_limit``: 429 ``rate_limit_exceeded``, with ``retry-after`` / ``retry-after-ms`` when given.
- ``insufficient_quota``: 429 ``insufficient_quota`` with ``x-should-retry: false``.
- ``server_error``: ``status`` (default 500) ``server_error``.
- ``drop``: close the connection without answering.
- ``auth``: 401 ``invalid_api_key``.
- ``ineligible``: 400 on job creation: the organisation may no longer create fine-tuning jobs.
- ``delay``: answer normally after ``delay`` seconds.
"""

from __future__ import annotations

import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultKind = Literal["rate_limit", "insufficient_quota", "server_error", "drop", "auth", "ineligible", "delay"]

INELIGIBLE_MESSAGE = (
    "Fine-tuning is no longer available to your organization: OpenAI is winding down the fine-tuning API "
    "and stops accepting new fine-tuning jobs on 2027-01-06."
)
INELIGIBLE_CODE = "fine_tuning_unavailable"


class FaultRule(BaseModel):
    """One injected fault."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    path: str = Field(default="/", description="Path prefix the rule applies to, e.g. /v1/chat/completions.")
    method: str | None = Field(default=None, description="HTTP method, or None for any.")
    count: int = Field(default=1, ge=1, description="How many matching requests fail.")
    status: int = Field(default=500, description="HTTP status of a server_error.")
    retry_after: float | None = Field(default=None, description="Seconds sent in `retry-after`.")
    retry_after_ms: float | None = Field(default=None, description="Milliseconds sent in `retry-after-ms`.")
    delay: float = Field(default=0.0, ge=0, description="Seconds to wait before answering (kind delay).")

    def matches(self, method: str, path: str) -> bool:
        """True when the rule applies to this request."""
        p = path if path.startswith("/v1") else "/v1" + path
        prefix = self.path if self.path.startswith("/v1") or self.path == "/" else "/v1" + self.path
        return (self.method is None or self.method.upper() == method.upper()) and p.startswith(prefix)


class FaultQueue:
    """Rules in the order they were added; the first matching rule with count left fires."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        """Queue a rule."""
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        """Forget every rule."""
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        """The rule that fires for this request (its count is used up), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path):
                    rule.count -= 1
                    if rule.count <= 0:
                        self._rules.remove(rule)
                    return rule.model_copy()
        return None

    def pending(self) -> list[FaultRule]:
        """Rules not yet used up."""
        with self._lock:
            return [r.model_copy() for r in self._rules]
