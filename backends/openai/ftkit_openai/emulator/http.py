"""The HTTP side of the emulator: OpenAI's wire protocol on the standard library's threading server.

Routes live under ``/v1`` (``/files``, ``/fine_tuning/jobs...``, ``/chat/completions``,
``/batches``); control routes under ``/_emulator`` (faults, settings, request log, spec
violations). Every answer carries ``x-request-id``; errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ftkit_openai.emulator import batches as batch_ops
from ftkit_openai.emulator.faults import INELIGIBLE_CODE, INELIGIBLE_MESSAGE, FaultQueue, FaultRule
from ftkit_openai.emulator.settings import EmulatorSettings
from ftkit_openai.emulator.state import ApiError, State, page

Json = dict[str, Any]


class EmulatorHTTPServer(ThreadingHTTPServer):
    """The server object; holds the state, the fault queue and the logs."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], settings: EmulatorSettings) -> None:
        super().__init__(address, Handler)
        self.state = State(settings)
        self.faults = FaultQueue()
        self.requests: list[Json] = []
        self.violations: list[str] = []
        self.log_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    """One request: auth, faults, routing, and the answer."""

    server: EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive clients wait ~40 ms for
    # the delayed ACK on every request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # the request log is kept in memory instead
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # ------------------------------------------------------------------ plumbing

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path[3:] if url.path.startswith("/v1/") else url.path
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        with self.server.log_lock:
            self.server.requests.append({
                "time": time.time(), "method": method, "path": path,
                "retry_count": self.headers.get("x-stainless-retry-count"),
            })
        if path.startswith("/_emulator/"):
            self._control(method, path, raw)
            return
        rule = self.server.faults.take(method, path)
        if rule is not None and self._fault(rule, path):
            return
        if not self._authorized():
            return
        try:
            with self.server.state.lock:
                self.server.state.tick()
                result = self._route(method, path, query, raw)
        except ApiError as e:
            self._send_json(e.status, e.body, e.headers, method, path)
            return
        except Exception as e:  # an emulator bug: answer like OpenAI's 500 and keep it visible
            with self.server.log_lock:
                self.server.violations.append(f"{method} {path}: internal error {type(e).__name__}: {e}")
            err = _error(500, f"The emulator failed: {type(e).__name__}: {e}", "server_error", None)
            self._send_json(500, err.body, {}, method, path)
            return
        if isinstance(result, bytes):
            self._send(200, result, "application/octet-stream")
        else:
            self._send_json(200, result, {}, method, path)

    def _authorized(self) -> bool:
        auth = self.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else ""
        expected = self.server.state.settings.api_key
        if key and (expected is None or key == expected):
            return True
        shown = (key[:3] + "*" * 4 + key[-4:]) if len(key) > 8 else "****"
        msg = ("You didn't provide an API key." if not key else f"Incorrect API key provided: {shown}. "
               "You can find your API key at https://platform.openai.com/account/api-keys.")
        self._send_json(401, {"error": {"message": msg, "type": "invalid_request_error", "param": None,
                                        "code": "invalid_api_key"}}, {}, "", "")
        return False

    def _fault(self, rule: FaultRule, path: str) -> bool:
        """Answer with the fault; False when the request should go on (a delay)."""
        if rule.kind == "delay":
            time.sleep(rule.delay)
            return False
        if rule.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        headers: dict[str, str] = {}
        if rule.kind == "rate_limit":
            if rule.retry_after is not None:
                headers["retry-after"] = f"{rule.retry_after:g}"
            if rule.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{rule.retry_after_ms:g}"
            err = _error(429, "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
                              "Please try again later.", "requests", "rate_limit_exceeded")
        elif rule.kind == "insufficient_quota":
            headers["x-should-retry"] = "false"
            err = _error(429, "You exceeded your current quota, please check your plan and billing details.",
                         "insufficient_quota", "insufficient_quota")
        elif rule.kind == "auth":
            err = _error(401, "Incorrect API key provided. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", "invalid_request_error",
                         "invalid_api_key")
        elif rule.kind == "ineligible":
            if not path.startswith("/fine_tuning/jobs"):
                return False
            err = _error(400, INELIGIBLE_MESSAGE, "invalid_request_error", INELIGIBLE_CODE)
        else:
            err = _error(rule.status, "The server had an error while processing your request. Sorry about that!",
                         "server_error", None)
        self._send_json(err.status, err.body, headers, "", "")
        return True

    def _send_json(self, status: int, body: Any, headers: dict[str, str], method: str, path: str) -> None:
        if self.server.state.settings.validate_responses and method:
            from ftkit_openai.emulator.conformance import check_response

            found = check_response(method, path, status, body)
            if found:
                with self.server.log_lock:
                    self.server.violations.extend(found)
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", "req_" + self.server.state.new_id("", 24))
        self.send_header("openai-processing-ms", "3")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    # ------------------------------------------------------------------ control routes

    def _control(self, method: str, path: str, raw: bytes) -> None:
        srv = self.server
        try:
            body = json.loads(raw) if raw else {}
            if path == "/_emulator/faults" and method == "POST":
                FaultRule.model_validate(body)
        except ValueError as e:  # bad JSON or a bad rule (pydantic's ValidationError is a ValueError)
            self._send(400, json.dumps({"detail": str(e)}).encode(), "application/json")
            return
        if path == "/_emulator/faults" and method == "POST":
            srv.faults.add(FaultRule.model_validate(body))
            out: Any = {"pending": [r.model_dump() for r in srv.faults.pending()]}
        elif path == "/_emulator/faults" and method == "DELETE":
            srv.faults.clear()
            out = {"pending": []}
        elif path == "/_emulator/settings" and method == "POST":
            with srv.state.lock:
                srv.state.tick()  # settle jobs under the old timing first
                for k, v in body.items():
                    setattr(srv.state.settings, k, v)
            out = srv.state.settings.model_dump()
        elif path.startswith("/_emulator/models/") and method == "POST":
            name = path.removeprefix("/_emulator/models/")
            try:
                with srv.state.lock:
                    out = srv.state.set_model_lifecycle(name, body.get("shutdown_date"), bool(body.get("shut_down")))
            except ApiError as e:
                self._send(e.status, json.dumps(e.body).encode(), "application/json")
                return
        elif path == "/_emulator/requests":
            with srv.log_lock:
                out = {"requests": list(srv.requests)}
        elif path == "/_emulator/violations":
            with srv.log_lock:
                out = {"violations": list(srv.violations)}
        else:
            self._send(404, b'{"detail":"unknown control route"}', "application/json")
            return
        self._send(200, json.dumps(out).encode(), "application/json")

    # ------------------------------------------------------------------ API routes

    def _route(self, method: str, path: str, q: dict[str, str], raw: bytes) -> Json | bytes:
        st = self.server.state
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["files"]:
            return self._files(method, parts, q, raw)
        if parts[:2] == ["fine_tuning", "jobs"]:
            return self._jobs(method, parts[2:], q, raw)
        if parts == ["chat", "completions"] and method == "POST":
            body = _json_body(raw)
            if body.get("stream"):
                raise ApiError(400, "The emulator does not stream; send stream=false", param="stream")
            return st.chat_completion(body)
        if parts[:1] == ["batches"]:
            return self._batches(method, parts[1:], q, raw)
        if parts == ["models"] and method == "GET":
            return {"object": "list", "data": st.list_models()}
        if parts[:1] == ["models"] and len(parts) == 2 and method == "GET":
            return st.model_object(parts[1])
        raise ApiError(404, f"Invalid URL ({method} /v1{path})", code="unknown_url")

    def _files(self, method: str, parts: list[str], q: dict[str, str], raw: bytes) -> Json | bytes:
        st = self.server.state
        if len(parts) == 1 and method == "POST":
            fields = _multipart(self.headers.get("content-type", ""), raw)
            if "file" not in fields:
                raise ApiError(400, "Missing required parameter: 'file'.", param="file")
            filename, content = fields["file"]
            purpose = fields.get("purpose", ("", b""))[1].decode()
            seconds = fields.get("expires_after[seconds]")
            return st.upload(filename or "upload.jsonl", purpose, content,
                             float(seconds[1]) if seconds else None).to_json()
        if len(parts) == 1 and method == "GET":
            files = sorted(st.files.values(), key=lambda f: f.created_at, reverse=q.get("order", "desc") == "desc")
            data = [f.to_json() for f in files if "purpose" not in q or f.purpose == q["purpose"]]
            chunk, more = page(data, q.get("after"), _limit(q, 10_000, 10_000))
            return {"object": "list", "data": chunk, "first_id": chunk[0]["id"] if chunk else "",
                    "last_id": chunk[-1]["id"] if chunk else "", "has_more": more}
        f = st.get_file(parts[1])
        if len(parts) == 2 and method == "GET":
            return f.to_json()
        if len(parts) == 2 and method == "DELETE":
            del st.files[f.id]
            return {"id": f.id, "object": "file", "deleted": True}
        if len(parts) == 3 and parts[2] == "content" and method == "GET":
            return f.content
        raise ApiError(404, "Invalid URL", code="unknown_url")

    def _jobs(self, method: str, rest: list[str], q: dict[str, str], raw: bytes) -> Json:
        st = self.server.state
        run = st.runner
        if not rest and method == "POST":
            return run.to_json(st.create_job(_json_body(raw)))
        if not rest and method == "GET":
            jobs = sorted(st.jobs.values(), key=lambda j: j.created_at, reverse=True)
            meta = {k[9:-1]: v for k, v in q.items() if k.startswith("metadata[") and k.endswith("]")}
            if meta:
                jobs = [j for j in jobs if j.metadata and all(j.metadata.get(k) == v for k, v in meta.items())]
            elif "metadata" in q:  # metadata=null: jobs without metadata
                jobs = [j for j in jobs if not j.metadata]
            chunk, more = page([run.to_json(j) for j in jobs], q.get("after"), _limit(q, 20, 100))
            return {"object": "list", "data": chunk, "has_more": more}
        job = st.get_job(rest[0])
        if len(rest) == 1 and method == "GET":
            return run.to_json(job)
        if len(rest) == 2 and rest[1] in ("cancel", "pause", "resume") and method == "POST":
            return run.to_json(st.job_action(job.id, rest[1]))
        if len(rest) == 2 and rest[1] == "events" and method == "GET":
            chunk, more = page(list(reversed(job.events)), q.get("after"), _limit(q, 20, 1000))
            return {"object": "list", "data": chunk, "has_more": more}
        if len(rest) == 2 and rest[1] == "checkpoints" and method == "GET":
            chunk, more = page(list(reversed(job.checkpoints)), q.get("after"), _limit(q, 10, 100))
            return {"object": "list", "data": chunk, "first_id": chunk[0]["id"] if chunk else None,
                    "last_id": chunk[-1]["id"] if chunk else None, "has_more": more}
        raise ApiError(404, "Invalid URL", code="unknown_url")

    def _batches(self, method: str, rest: list[str], q: dict[str, str], raw: bytes) -> Json:
        st = self.server.state
        if not rest and method == "POST":
            return batch_ops.to_json(batch_ops.create(st, _json_body(raw)))
        if not rest and method == "GET":
            items = sorted(st.batches.values(), key=lambda b: b["_t"], reverse=True)
            chunk, more = page([batch_ops.to_json(b) for b in items], q.get("after"), _limit(q, 20, 100))
            return {"object": "list", "data": chunk, "first_id": chunk[0]["id"] if chunk else None,
                    "last_id": chunk[-1]["id"] if chunk else None, "has_more": more}
        batch = st.batches.get(rest[0])
        if batch is None:
            raise ApiError(404, f"No batch found with id '{rest[0]}'.", param="batch_id")
        if len(rest) == 2 and rest[1] == "cancel" and method == "POST":
            batch_ops.cancel(st, batch)
        return batch_ops.to_json(batch)


def _error(status: int, message: str, type_: str, code: str | None) -> ApiError:
    return ApiError(status, message, type_=type_, code=code)


def _limit(q: dict[str, str], default: int, maximum: int) -> int:
    try:
        n = int(q.get("limit", default))
    except ValueError:
        raise ApiError(400, "limit must be an integer", param="limit") from None
    if not 1 <= n <= maximum:
        raise ApiError(400, f"limit must be between 1 and {maximum}", param="limit")
    return n


def _json_body(raw: bytes) -> Json:
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as e:
        raise ApiError(400, f"We could not parse the JSON body of your request. ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return body


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart body: name -> (filename, bytes)."""
    if not re.match(r"multipart/form-data", content_type, re.I):
        raise ApiError(400, "File uploads must be multipart/form-data")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields
