"""The HTTP layer the provider clients share: httpx + tenacity, per-provider rate-limit manners.

Retried: 429 (waiting ``Retry-After`` when the provider sends it, else exponential backoff as vast's
docs ask), 502/503/504 and transport errors — but the last two only for idempotent calls: a
create that timed out may have created something, so it is reconciled by label, never resent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from ftkit.backend import BackendConfig
from ftkit.errors import APIError, AuthenticationError, QuotaExceededError, RateLimitError
from ftkit.retry_after import retry_after_seconds

_RETRY_STATUS = frozenset({429, 502, 503, 504})


class RetryPolicy(BackendConfig):
    """How hard to retry a provider's API."""

    attempts: int = Field(default=6, ge=1, le=20, description="Tries per call, the first included.")
    initial_wait_s: float = Field(default=0.5, gt=0, description="First backoff when no Retry-After is given.")
    multiplier: float = Field(default=2.0, ge=1, description="Backoff growth per attempt.")
    max_wait_s: float = Field(default=30.0, gt=0, description="Longest single wait (Retry-After is capped too).")
    timeout_s: float = Field(default=30.0, gt=0, description="Per-request timeout.")


class _Retryable(Exception):
    def __init__(self, response: httpx.Response | None, error: Exception | None = None) -> None:
        super().__init__(str(error) if error else f"HTTP {response.status_code if response else '?'}")
        self.response = response
        self.error = error


ErrorMapper = Callable[[httpx.Response], Exception]


class HttpApi:
    """One provider's HTTP API: base URL, Bearer auth, retries, error mapping.

    Args:
        provider: the provider's name, used in error messages.
        base_url: the API root.
        api_key: sent as ``Authorization: Bearer``; never logged nor put into errors.
        policy: retry settings.
        map_error: turns a non-2xx response into an ftkit error (provider-specific bodies).
    """

    def __init__(self, provider: str, base_url: str, api_key: str, policy: RetryPolicy, map_error: ErrorMapper) -> None:
        self.provider = provider
        self.policy = policy
        self._map_error = map_error
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=policy.timeout_s,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def request(
        self, method: str, path: str, *, idempotent: bool = True, ok: tuple[int, ...] = (), **kw: Any
    ) -> httpx.Response:
        """Send one request with retries; returns a 2xx response (or one whose status is in ``ok``).

        Raises:
            AuthenticationError: 401/403.
            QuotaExceededError: 402.
            RateLimitError: still 429 after the retries.
            APIError: anything else the provider's mapper makes of the response.
        """

        async def once() -> httpx.Response:
            try:
                resp = await self._client.request(method, path, **kw)
            except httpx.TransportError as e:
                if idempotent:
                    raise _Retryable(None, e) from e
                raise APIError(f"{self.provider}: {method} {path} failed in transit: {type(e).__name__}") from None
            if resp.status_code in _RETRY_STATUS and (idempotent or resp.status_code == 429):
                raise _Retryable(resp)
            return resp

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            reraise=True,
            sleep=asyncio.sleep,
        )
        try:
            resp: httpx.Response = await retrying(once)
        except _Retryable as e:
            if e.response is None:
                raise APIError(f"{self.provider}: {method} {path} unreachable: {e.error}") from None
            resp = e.response
            if resp.status_code == 429:
                raise RateLimitError(
                    f"{self.provider}: rate limited on {method} {path} after {self.policy.attempts} tries",
                    status_code=429,
                ) from None
        if resp.is_success or resp.status_code in ok:
            return resp
        if resp.status_code == 401:
            raise AuthenticationError(f"{self.provider}: the API key was refused (HTTP 401)")
        if resp.status_code == 402:
            raise QuotaExceededError(f"{self.provider}: insufficient balance (HTTP 402)")
        raise self._map_error(resp)

    def _wait(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        resp = err.response if isinstance(err, _Retryable) else None
        asked = retry_after_seconds(resp.headers) if resp is not None else None
        if asked is not None:
            return min(asked, self.policy.max_wait_s)
        backoff = self.policy.initial_wait_s * self.policy.multiplier ** (state.attempt_number - 1)
        return min(backoff, self.policy.max_wait_s)


class MinInterval:
    """Keeps at least ``seconds`` between calls in this process (Lambda's one launch per 12 s)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        """Sleep until the next call is allowed, then claim it."""
        async with self._lock:
            delay = self._last + self.seconds - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last = time.monotonic()

    def mark(self) -> None:
        """Restart the interval from now (call when the answer arrived: the server counts from the request)."""
        self._last = time.monotonic()


def json_or_text(resp: httpx.Response) -> Any:
    """The body as JSON when it parses, else as text (vast answers 429 in plain text)."""
    try:
        return resp.json()
    except ValueError:
        return resp.text
