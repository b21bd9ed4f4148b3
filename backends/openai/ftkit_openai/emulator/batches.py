"""The Batch API of the emulator: ``validating → in_progress → finalizing → completed``.

Each status lasts ``batch_seconds``. When a batch completes, every request line is answered by
the same chat-completion logic as the synchronous endpoint; lines that fail go to the error file.
"""

from __future__ import annotations

import json
from typing import Any

ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/moderations",
             "/v1/images/generations", "/v1/images/edits", "/v1/videos")
_NEXT = {"validating": "in_progress", "in_progress": "finalizing", "finalizing": "completed"}
_STAMP = {"in_progress": "in_progress_at", "finalizing": "finalizing_at", "completed": "completed_at"}


def create(state: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a batch request and record the batch."""
    from ftkit_openai.emulator.jobs import now
    from ftkit_openai.emulator.state import ApiError

    endpoint = body.get("endpoint")
    if endpoint not in ENDPOINTS:
        raise ApiError(400, f"Invalid endpoint {endpoint!r}; expected one of {list(ENDPOINTS)}", param="endpoint")
    if endpoint != "/v1/chat/completions":
        raise ApiError(400, f"The emulator only runs /v1/chat/completions batches, not {endpoint}", param="endpoint")
    if body.get("completion_window") != "24h":
        raise ApiError(400, "completion_window must be '24h'", param="completion_window")
    fid = body.get("input_file_id")
    f = state.files.get(fid) if isinstance(fid, str) else None
    if f is None:
        raise ApiError(400, f"Invalid input_file_id: {fid}", param="input_file_id")
    if f.purpose != "batch":
        raise ApiError(400, f"File {fid} has purpose '{f.purpose}'; batches need purpose 'batch'",
                       param="input_file_id")
    t = now()
    batch: dict[str, Any] = {
        "id": state.new_id("batch_", 32), "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": fid, "completion_window": "24h", "status": "validating", "output_file_id": None,
        "error_file_id": None, "created_at": int(t), "in_progress_at": None, "expires_at": int(t + 86_400),
        "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
        "cancelled_at": None, "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "metadata": body.get("metadata"), "_t": t,
    }
    lines = [ln for ln in f.content.decode("utf-8", errors="replace").splitlines() if ln.strip()]
    batch["request_counts"]["total"] = len(lines)
    state.batches[batch["id"]] = batch
    return batch


def advance(state: Any, batch: dict[str, Any], t: float) -> None:
    """Move a batch on when its current status has lasted ``batch_seconds``."""
    while batch["status"] in _NEXT and batch["_t"] + state.settings.batch_seconds <= t:
        at = batch["_t"] + state.settings.batch_seconds
        nxt = _NEXT[batch["status"]]
        if nxt == "completed":
            _run(state, batch, at)
        batch["status"], batch["_t"] = nxt, at
        batch[_STAMP[nxt]] = int(at)
    if batch["status"] == "cancelling" and batch["_t"] + state.settings.batch_seconds <= t:
        batch["status"] = "cancelled"
        batch["cancelled_at"] = int(batch["_t"] + state.settings.batch_seconds)


def cancel(state: Any, batch: dict[str, Any]) -> None:
    """Start cancelling a batch that has not finished."""
    from ftkit_openai.emulator.jobs import now
    from ftkit_openai.emulator.state import ApiError

    if batch["status"] not in ("validating", "in_progress", "finalizing"):
        raise ApiError(400, f"Cannot cancel a batch that is {batch['status']}")
    t = now()
    batch["status"], batch["_t"], batch["cancelling_at"] = "cancelling", t, int(t)


def _run(state: Any, batch: dict[str, Any], at: float) -> None:
    from ftkit_openai.emulator.state import ApiError, jsonl

    out: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    content = state.files[batch["input_file_id"]].content.decode("utf-8", errors="replace")
    for n, line in enumerate(ln for ln in content.splitlines() if ln.strip()):
        rid = state.new_id("batch_req_", 24)
        try:
            req = json.loads(line)
            custom_id = req["custom_id"]
            if req.get("url") != batch["endpoint"]:
                raise ApiError(400, f"line {n + 1}: url must be {batch['endpoint']}", param="url")
            batch.setdefault("model", req.get("body", {}).get("model"))
            body = state.chat_completion(req.get("body") or {})
            out.append({"id": rid, "custom_id": custom_id, "error": None,
                        "response": {"status_code": 200, "request_id": state.new_id("req_", 24), "body": body}})
        except (ValueError, KeyError, TypeError) as e:
            errors.append({"id": rid, "custom_id": None, "response": None,
                           "error": {"code": "invalid_request", "message": f"line {n + 1}: {e}"}})
        except ApiError as e:
            errors.append({"id": rid, "custom_id": req.get("custom_id"), "error": None,
                           "response": {"status_code": e.status, "request_id": state.new_id("req_", 24),
                                        "body": e.body}})
    if batch.get("model") is None:
        batch.pop("model", None)
    batch["request_counts"] = {"total": len(out) + len(errors), "completed": len(out), "failed": len(errors)}
    batch["output_file_id"] = state.add_file(f"{batch['id']}_output.jsonl", "batch_output", jsonl(out), at).id
    if errors:
        batch["error_file_id"] = state.add_file(f"{batch['id']}_error.jsonl", "batch_output", jsonl(errors), at).id


def to_json(batch: dict[str, Any]) -> dict[str, Any]:
    """The Batch object (private bookkeeping dropped; absent optional timestamps left out)."""
    out = {k: v for k, v in batch.items() if not k.startswith("_")}
    for k in ("output_file_id", "error_file_id", "in_progress_at", "finalizing_at", "completed_at", "failed_at",
              "expired_at", "cancelling_at", "cancelled_at", "errors"):
        if out.get(k) is None:
            out.pop(k, None)
    return out
