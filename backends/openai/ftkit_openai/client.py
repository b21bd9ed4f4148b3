"""The openai client, retries that honour Retry-After, and the mapping of openai's exceptions.

Retries are ftkit's, not the client's (the client is built with ``max_retries=0``) because the
client retries ``insufficient_quota`` 429s too; here a quota or auth error stops at once, and
every other transient failure (429, 408, 409, 5xx, dropped connections, timeouts) waits for
``retry-after-ms`` / ``retry-after`` when the server sends one, else backs off exponentially.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from ftkit.errors import APIError, AuthenticationError, QuotaExceededError, RateLimitError
from ftkit.retry_after import retry_after_seconds
from ftkit_openai.config import OpenAIConfig

T = TypeVar("T")
_KEYLIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*]{6,}")


def resolve_api_key(config: OpenAIConfig) -> str | None:
    """The key from the config, else ``$OPENAI_API_KEY``: read at call time, never stored."""
    if config.api_key is not None:
        return config.api_key.get_secret_value()
    return os.environ.get("OPENAI_API_KEY") or None


def scrub(text: str, secret: str | None = None) -> str:
    """Remove the API key (and anything that looks like one) from a message."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("sk-***", text)


class OpenAIAPI:
    """An openai client plus ftkit's retry policy and error mapping.

    Args:
        config: the backend options (key, base URL, retries, timeouts).
    """

    def __init__(self, config: OpenAIConfig) -> None:
        self.config = config
        key = resolve_api_key(config)
        if not key:
            raise AuthenticationError(
                "no OpenAI API key: set OPENAI_API_KEY (or the openai backend option api_key)"
            )
        self._key = key
        self.client = openai.OpenAI(
            api_key=key,
            base_url=config.base_url or None,  # None: the client reads OPENAI_BASE_URL itself
            organization=config.organization or None,
            project=config.project or None,
            max_retries=0,
            timeout=config.timeout,
        )

    @property
    def base_url(self) -> str:
        """Where requests go (for messages)."""
        return str(self.client.base_url)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn(*args, **kwargs)`` with retries of transient failures; errors become ftkit errors."""
        retrying = Retrying(
            retry=retry_if_exception(self._transient),
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=self._wait,
            reraise=True,
        )
        with map_vendor_errors(self._key, self.base_url):
            return retrying(fn, *args, **kwargs)

    def _transient(self, exc: BaseException) -> bool:
        if isinstance(exc, openai.APIConnectionError):  # includes timeouts and dropped connections
            return True
        if not isinstance(exc, openai.APIStatusError):
            return False
        if exc.code == "insufficient_quota" or exc.status_code in (401, 403):
            return False
        should = exc.response.headers.get("x-should-retry")
        if should == "false":
            return False
        if should == "true":
            return True
        delay = retry_after(exc)
        if delay is not None and delay > self.config.max_retry_wait:
            return False  # the server asks for longer than we are willing to wait: report it now
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, openai.APIStatusError):
            delay = retry_after(exc)
            if delay is not None:
                return delay
        # The client's own schedule: 0.5 s doubling, at most 8 s, with jitter.
        n = state.attempt_number - 1
        return min(0.5 * 2**n, 8.0) * (1 - 0.25 * _jitter(state))


def _jitter(state: RetryCallState) -> float:
    return (hash((id(state), state.attempt_number)) % 1000) / 1000


def retry_after(exc: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after``), or None."""
    return retry_after_seconds(exc.response.headers)


@contextlib.contextmanager
def map_vendor_errors(secret: str | None = None, base_url: str | None = None) -> Iterator[None]:
    """Turn openai's exceptions into ftkit's error tree, with the API key scrubbed from every message."""
    try:
        yield
    except openai.AuthenticationError as e:
        raise AuthenticationError(
            f"OpenAI refused the credentials (HTTP 401): {scrub(_message(e), secret)} "
            "Check OPENAI_API_KEY (and OPENAI_ORG_ID / OPENAI_PROJECT_ID)."
        ) from None
    except openai.RateLimitError as e:
        if e.code == "insufficient_quota":
            raise QuotaExceededError(
                f"OpenAI says the account has no quota left (insufficient_quota): {scrub(_message(e), secret)} "
                "Add credit or raise the limit in the OpenAI billing settings; retrying will not help."
            ) from None
        wait = retry_after(e)
        hint = f" (the server asked to wait {wait:g} s)" if wait is not None else ""
        raise RateLimitError(
            f"OpenAI rate limit (HTTP 429, {e.code or 'no code'}) after retries{hint}: {scrub(_message(e), secret)}",
            status_code=429,
            code=e.code,
        ) from None
    except openai.APIStatusError as e:
        raise APIError(
            f"OpenAI API error (HTTP {e.status_code}{', ' + e.code if e.code else ''}): {scrub(_message(e), secret)}",
            status_code=e.status_code,
            code=e.code,
        ) from None
    except openai.APIConnectionError as e:
        where = base_url or "its base URL"
        raise APIError(f"cannot reach the OpenAI API at {where}: {scrub(str(e), secret)}") from None


def _message(e: openai.APIStatusError) -> str:
    body = e.body if isinstance(e.body, dict) else {}
    msg = body.get("message") if isinstance(body.get("message"), str) else None
    return msg or e.message
