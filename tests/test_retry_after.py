"""One Retry-After parser: seconds, HTTP dates, OpenAI's retry-after-ms, and what is neither."""

from __future__ import annotations

import pytest

from ftkit.retry_after import retry_after_seconds

NOW = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),  # an HTTP date, 30 s after NOW
        ({"retry-after": "Tue, 14 Nov 2023 22:13:00 GMT"}, 0.0),  # a date already past
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


def test_httpx_headers_are_read_case_insensitively() -> None:
    import httpx

    assert retry_after_seconds(httpx.Headers({"Retry-After": "Tue, 14 Nov 2023 22:14:20 GMT"}), now=NOW) == 60.0
