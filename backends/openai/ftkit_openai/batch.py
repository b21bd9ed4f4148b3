"""Running many chat completions through the Batch API: half price, answered within 24 h.

One JSONL file (``purpose="batch"``) of ``{"custom_id", "method", "url", "body"}`` lines is
uploaded, a batch created on ``/v1/chat/completions``, polled until it ends, and the output (and
error) files are matched back to the requests by ``custom_id`` (their order is not guaranteed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import jsonlines

from ftkit.errors import APIError, JobTimeoutError
from ftkit_openai.client import OpenAIAPI
from ftkit_openai.statuses import BATCH_TERMINAL

MAX_REQUESTS = 50_000
ENDPOINT = "/v1/chat/completions"


def build_input(bodies: Sequence[dict[str, Any]]) -> bytes:
    """The batch input file for these chat-completion bodies (custom ids ``req-<index>``)."""
    lines = [json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": ENDPOINT, "body": body})
             for i, body in enumerate(bodies)]
    return ("\n".join(lines) + "\n").encode()


def run_batch(api: OpenAIAPI, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any] | APIError]:
    """Answers to ``bodies`` in order: the chat-completion dict, or an APIError for a failed request.

    Raises:
        APIError: the batch as a whole failed, expired or was cancelled.
        JobTimeoutError: it did not end within ``batch_timeout``.
    """
    results: list[dict[str, Any] | APIError] = []
    for start in range(0, len(bodies), MAX_REQUESTS):
        results.extend(_run_one(api, bodies[start:start + MAX_REQUESTS]))
    return results


def _run_one(api: OpenAIAPI, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any] | APIError]:
    c, cfg = api.client, api.config
    upload = api.call(c.files.create, file=("ftkit-batch.jsonl", build_input(bodies)), purpose="batch")
    batch = api.call(c.batches.create, input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h",
                     metadata={"created_by": "ftkit"})
    deadline = time.monotonic() + cfg.batch_timeout
    while batch.status not in BATCH_TERMINAL:
        if time.monotonic() > deadline:
            raise JobTimeoutError(f"batch {batch.id} still {batch.status} after {cfg.batch_timeout:g} s; it goes on")
        time.sleep(cfg.batch_poll_interval)
        batch = api.call(c.batches.retrieve, batch.id)
    if batch.status != "completed":
        errors = "; ".join(e.message or "" for e in (batch.errors.data or [])) if batch.errors else ""
        raise APIError(f"batch {batch.id} ended {batch.status}{': ' + errors if errors else ''}")
    found: dict[str, dict[str, Any] | APIError] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        text = api.call(c.files.content, file_id).text
        try:
            for row in jsonlines.Reader(text.splitlines()).iter(type=dict, skip_empty=True):
                found[str(row.get("custom_id"))] = _answer(row)
        except jsonlines.InvalidLineError as e:  # the service broke its own format: its failure, not the data's
            raise APIError(f"batch {batch.id}: unreadable result line {e.lineno} of file {file_id}") from None
    out: list[dict[str, Any] | APIError] = []
    for i in range(len(bodies)):
        out.append(found.get(f"req-{i}", APIError(f"batch {batch.id} returned no answer for request {i}")))
    return out


def _answer(row: dict[str, Any]) -> dict[str, Any] | APIError:
    response = row.get("response") or {}
    if row.get("error") or response.get("status_code") != 200:
        err = row.get("error") or (response.get("body") or {}).get("error") or {}
        return APIError(f"batch request {row.get('custom_id')} failed: {err.get('message', 'unknown error')}",
                        status_code=response.get("status_code"), code=err.get("code"))
    return dict(response.get("body") or {})
