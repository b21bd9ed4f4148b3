"""How long a server asked us to wait: ``Retry-After`` (seconds or an HTTP date) and ``retry-after-ms``.

One parser for every backend that talks HTTP (the openai client, the remote providers' API client).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

__all__ = ["retry_after_seconds"]


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from the response ``headers`` (keys looked up in lower case), or None when none is given.

    ``retry-after-ms`` (OpenAI's) wins over ``retry-after``; ``retry-after`` is either a number of
    seconds or an HTTP date (RFC 9110), counted from ``now`` (default: the clock). A value in the past
    is 0; one that is neither a number nor a date, or not finite, is None (the caller backs off itself).
    """
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            value = float(ms) / 1000
            if math.isfinite(value):
                return max(value, 0.0)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is in GMT; a zone-less one is read as such
            from datetime import UTC

            when = when.replace(tzinfo=UTC)
        value = when.timestamp() - (time.time() if now is None else now)
    return max(value, 0.0) if math.isfinite(value) else None
