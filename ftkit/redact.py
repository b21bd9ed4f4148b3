"""Secrets out of everything ftkit keeps or prints: by key, by shape and by value.

Three rules, applied by :func:`redact` to nested data and by :func:`redact_text` to strings:

1. **By key.** A value stored under a secret-looking key (``api_key``, ``access_token``,
   ``password``...) becomes ``<redacted>``; ``billed_tokens`` and ``key_path`` are not secrets.
2. **By shape.** Credentials inside URLs (``https://user:pass@host``), secret query parameters
   (``?api_key=...&token=...``) and ``Authorization: Bearer ...`` values are masked wherever they
   appear in a string.
3. **By value.** Every occurrence of a known secret is masked, whatever surrounds it: the values
   of secret-looking environment variables (``OPENAI_API_KEY``, ``VAST_API_KEY``,
   ``RUNPOD_API_KEY``, ``LAMBDA_API_KEY``, ``HF_TOKEN``, ``*_SECRET``...: where the backends read
   their keys) and every value this process has seen under a secret key (rule 1), so an option
   key echoed in a vendor's error message is masked there too.

The job store applies it to everything it persists; the command line to every error and every
``--json`` output.
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache
from typing import Any

MASK = "<redacted>"

# Whole key names only: "api_key" and "access_token" are secrets, "billed_tokens" and "key_path" are not.
SECRET_KEY = re.compile(r"(?:.*[_-])?(api[_-]?key|apikey|token|secret|password|passphrase|private[_-]?key)", re.I)
# Environment variable names: a secret word as one of the underscore-separated parts
# (HF_TOKEN, AWS_SECRET_ACCESS_KEY, PGPASSWORD), or a name ending in _KEY (OPENAI_API_KEY, STRIPE_KEY).
# TOKENIZERS_PARALLELISM has no such part.
_SECRET_ENV = re.compile(
    r"(?:^|_)(?:[A-Z]*PASSWORD|PASSWD|PASSPHRASE|TOKEN|SECRET|APIKEY|CREDENTIALS?)(?:_|$)|.+_KEY$", re.I
)
# Shorter values ("1", "true", "dev") would mask unrelated text; real keys are far longer.
MIN_SECRET_LENGTH = 8

# user:password, or a long token as the user (https://ghp_...@github.com); "git@" in ssh URLs is no secret.
_URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)(?:[^/?#@\s'\"<>:]*:[^/?#@\s'\"<>]*|[^/?#@\s'\"<>]{16,})@", re.I)
_SECRET_PARAM = re.compile(
    r"([?&;](?:[^=&#\s'\"]*?)(?:key|token|secret|password|passwd|signature|sig|auth|credential)[^=&#\s'\"]*=)"
    r"[^&#\s'\"<>]+",
    re.I,
)
_AUTH_HEADER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]{8,}")

_seen: set[str] = set()
_seen_lock = threading.Lock()


def remember_secret(value: object) -> None:
    """Mask ``value`` wherever it appears from now on in this process (strings of useful length only)."""
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value != MASK:
        with _seen_lock:
            _seen.add(value)


def secret_values() -> frozenset[str]:
    """The secrets masked by value: secret-looking environment variables and values seen under secret keys."""
    # The store redacts on every write: reading os.environ decodes every variable (~100 us), so the
    # scan is cached on the raw environment, which is cheap to hash (~4 us) and changes with setenv.
    raw = getattr(os.environ, "_data", None)
    from_env = _env_secrets(tuple(raw.items()) if isinstance(raw, dict) else tuple(os.environ.items()))
    with _seen_lock:
        return from_env | _seen if _seen else from_env


@lru_cache(maxsize=8)
def _env_secrets(items: tuple[tuple[str | bytes, str | bytes], ...]) -> frozenset[str]:
    found = set()
    for k, v in items:
        name, value = os.fsdecode(k), os.fsdecode(v)
        if len(value) >= MIN_SECRET_LENGTH and _SECRET_ENV.search(name) is not None:
            found.add(value)
    return frozenset(found)


@lru_cache(maxsize=8)
def _values_pattern(values: frozenset[str]) -> re.Pattern[str] | None:
    if not values:
        return None
    # Longest first, so a secret that contains another is masked whole.
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


def redact_text(text: str) -> str:
    """``text`` with URL credentials, secret query parameters, bearer tokens and known secrets masked."""
    return _mask(text, _values_pattern(secret_values()))


def _mask(text: str, values: re.Pattern[str] | None) -> str:
    # Shapes first: a known value inside URL credentials must not hide the credentials' shape.
    # (The substring tests skip the regular expressions for the many strings that cannot match.)
    if "@" in text and "://" in text:
        text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(rf"\1{MASK}", text)
    if "Bearer" in text or "Basic" in text or "Token" in text:
        text = _AUTH_HEADER.sub(rf"\1 {MASK}", text)
    return text if values is None else values.sub(MASK, text)


def redact(value: Any) -> Any:
    """``value`` with secrets masked at any depth: by key, by shape and by value (see the module docstring).

    Dicts, lists and tuples are rebuilt; strings go through :func:`redact_text`; other values are kept.
    """
    # Every secret of the structure is known before any string is masked, so a key given as an
    # option is masked where the same structure repeats it elsewhere (a URL, an error message).
    _remember_keyed(value)
    return _redact(value, _values_pattern(secret_values()))  # reading the environment once per call


def _remember_keyed(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if SECRET_KEY.fullmatch(str(k)):
                remember_secret(v)
            else:
                _remember_keyed(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _remember_keyed(v)


def _redact(value: Any, values: re.Pattern[str] | None) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if SECRET_KEY.fullmatch(str(k)) else _redact(v, values)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact(v, values) for v in value]
    if isinstance(value, str):
        return _mask(value, values)
    return value
