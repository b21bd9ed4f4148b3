"""The HTTP side of the emulator: OpenAI's wire protocol as a FastAPI app, served by uvicorn.

Routes live under ``/v1`` (``/files``, ``/fine_tuning/jobs...``, ``/chat/completions``,
``/batches``, ``/models``); control routes under ``/_emulator`` (faults, settings, request log,
spec violations). Every answer carries ``x-request-id``; errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``.

What happens before routing (the request log, injected faults, the API key) and after it (the
``x-request-id`` header, checking answers against the OpenAPI excerpt, turning an emulator bug into
OpenAI's 500) is one ASGI middleware, :class:`Gate`, so that it covers every answer, routed or not.
Endpoints are plain functions: FastAPI runs them in worker threads, and they hold the state's lock
while they read or change it, as the requests of the threaded server before did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException

from ftkit_openai.emulator import batches as batch_ops
from ftkit_openai.emulator.faults import INELIGIBLE_CODE, INELIGIBLE_MESSAGE, FaultQueue, FaultRule
from ftkit_openai.emulator.settings import EmulatorSettings
from ftkit_openai.emulator.state import ApiError, State, page

Json = dict[str, Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class Emulator:
    """What the server holds: the state, the fault queue and the logs."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.state = State(settings)
        self.faults = FaultQueue()
        self.requests: list[Json] = []
        self.violations: list[str] = []
        self.log_lock = threading.Lock()

    def log_request(self, method: str, path: str, retry_count: str | None) -> None:
        """Record one request (path without ``/v1``)."""
        with self.log_lock:
            self.requests.append({"time": time.time(), "method": method, "path": path, "retry_count": retry_count})

    def record_violations(self, found: list[str]) -> None:
        """Keep spec violations and emulator failures for ``/_emulator/violations``."""
        if found:
            with self.log_lock:
                self.violations.extend(found)

    @contextlib.contextmanager
    def ticked(self) -> Iterator[State]:
        """The state, locked and brought up to now (jobs and batches advanced)."""
        with self.state.lock:
            self.state.tick()
            yield self.state


# ---------------------------------------------------------------------- before and after routing


class Gate:
    """ASGI middleware: request log, faults and auth before routing; headers and checks on every answer.

    Args:
        app: the app it wraps.
        emu: the emulator's state and logs.
        drop: closes the connection of the ASGI ``client`` address without an answer; False if not found.
    """

    def __init__(self, app: App, emu: Emulator, drop: Callable[[Any], bool]) -> None:
        self.app = app
        self.emu = emu
        self.drop = drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        emu, method = self.emu, scope["method"]
        path = scope["path"][3:] if scope["path"].startswith("/v1/") else scope["path"]
        headers = Headers(scope=scope)
        emu.log_request(method, path, headers.get("x-stainless-retry-count"))
        if path.startswith("/_emulator/"):
            await self.app(scope, receive, self._stamped(send, None))
            return
        rule = emu.faults.take(method, path)
        if rule is not None:
            if rule.kind == "delay":
                await asyncio.sleep(rule.delay)
            elif rule.kind == "drop":
                if self.drop(scope.get("client")):
                    # Wait until the server has seen the connection go, so it does not answer 500 for us.
                    while (await receive())["type"] != "http.disconnect":
                        pass
                return
            elif (err := _fault_error(rule, path)) is not None:
                await _answer(err, scope, receive, self._stamped(send, None))
                return
        if (err := _auth_error(headers, emu.state.settings.api_key)) is not None:
            await _answer(err, scope, receive, self._stamped(send, None))
            return
        check = (method, path) if emu.state.settings.validate_responses else None
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        stamped = self._stamped(tracked, check)
        try:
            await self.app(scope, receive, stamped)
        except Exception as e:  # an emulator bug: answer like OpenAI's 500 and keep it visible
            emu.record_violations([f"{method} {path}: internal error {type(e).__name__}: {e}"])
            if started:
                raise
            err = ApiError(500, f"The emulator failed: {type(e).__name__}: {e}", type_="server_error")
            await _answer(err, scope, receive, stamped)

    def _stamped(self, send: Send, check: tuple[str, str] | None) -> Send:
        """``send`` that adds OpenAI's headers and, with ``check``, checks JSON answers against the spec."""
        status, is_json, chunks = 0, False, []

        async def stamped(message: Message) -> None:
            nonlocal status, is_json
            if message["type"] == "http.response.start":
                status = message["status"]
                raw = list(message.get("headers", []))
                is_json = any(k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in raw)
                raw += [(b"x-request-id", ("req_" + self.emu.state.new_id("", 24)).encode()),
                        (b"openai-processing-ms", b"3")]  # fmt: skip
                message = {**message, "headers": raw}
            elif message["type"] == "http.response.body" and check is not None and is_json:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    from ftkit_openai.emulator.conformance import check_response

                    self.emu.record_violations(check_response(*check, status, json.loads(b"".join(chunks))))
            await send(message)

        return stamped


async def _answer(err: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse(err.body, err.status, headers=err.headers)(scope, receive, send)


def _auth_error(headers: Headers, expected: str | None) -> ApiError | None:
    auth = headers.get("authorization", "")
    key = auth[7:] if auth.lower().startswith("bearer ") else ""
    if key and (expected is None or key == expected):
        return None
    shown = (key[:3] + "*" * 4 + key[-4:]) if len(key) > 8 else "****"
    msg = ("You didn't provide an API key." if not key else f"Incorrect API key provided: {shown}. "
           "You can find your API key at https://platform.openai.com/account/api-keys.")  # fmt: skip
    return ApiError(401, msg, code="invalid_api_key")


def _fault_error(rule: FaultRule, path: str) -> ApiError | None:
    """The answer of a fault; None when the request should go on."""
    headers: dict[str, str] = {}
    if rule.kind == "rate_limit":
        if rule.retry_after is not None:
            headers["retry-after"] = f"{rule.retry_after:g}"
        if rule.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{rule.retry_after_ms:g}"
        return ApiError(429, "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1. "
                             "Please try again later.", type_="requests", code="rate_limit_exceeded",
                        headers=headers)  # fmt: skip
    if rule.kind == "insufficient_quota":
        return ApiError(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type_="insufficient_quota",
            code="insufficient_quota",
            headers={"x-should-retry": "false"},
        )
    if rule.kind == "auth":
        return ApiError(401, "Incorrect API key provided. You can find your API key at "
                             "https://platform.openai.com/account/api-keys.", code="invalid_api_key")  # fmt: skip
    if rule.kind == "ineligible":
        if not path.startswith("/fine_tuning/jobs"):
            return None
        return ApiError(400, INELIGIBLE_MESSAGE, code=INELIGIBLE_CODE)
    return ApiError(
        rule.status, "The server had an error while processing your request. Sorry about that!", type_="server_error"
    )


# ---------------------------------------------------------------------- request bodies


async def json_body(request: Request) -> Json:
    """The JSON object of the request, refused the way OpenAI refuses it."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as e:
        raise ApiError(400, f"We could not parse the JSON body of your request. ({e})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return body


async def form_fields(request: Request) -> dict[str, tuple[str | None, bytes]]:
    """Form fields of a multipart upload: name -> (filename, bytes)."""
    if not re.match(r"multipart/form-data", request.headers.get("content-type", ""), re.I):
        raise ApiError(400, "File uploads must be multipart/form-data")
    fields: dict[str, tuple[str | None, bytes]] = {}
    async with request.form() as form:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields[name] = (value.filename, await value.read())
            else:
                fields[name] = (None, value.encode())
    return fields


async def control_body(request: Request) -> Json:
    """The JSON body of a control route; 400 with ``detail`` when it is not JSON."""
    raw = await request.body()
    try:
        return dict(json.loads(raw)) if raw else {}
    except (ValueError, TypeError) as e:  # not JSON, or JSON that is not an object
        raise HTTPException(400, str(e)) from None


def _limit(value: str | None, default: int, maximum: int) -> int:
    try:
        n = int(value) if value is not None else default
    except ValueError:
        raise ApiError(400, "limit must be an integer", param="limit") from None
    if not 1 <= n <= maximum:
        raise ApiError(400, f"limit must be between 1 and {maximum}", param="limit")
    return n


def _list(chunk: list[Json], more: bool, ids: bool = True, empty_id: str | None = None) -> JSONResponse:
    """A list page, with ``first_id`` / ``last_id`` (``empty_id`` when there is none) where ``ids``."""
    out: Json = {"object": "list", "data": chunk}
    if ids:
        out |= {"first_id": chunk[0]["id"] if chunk else empty_id, "last_id": chunk[-1]["id"] if chunk else empty_id}
    return JSONResponse(out | {"has_more": more})


# ---------------------------------------------------------------------- the app


def make_app(emu: Emulator, drop: Callable[[Any], bool]) -> FastAPI:
    """The emulator's FastAPI app.

    Args:
        emu: the state and logs it serves.
        drop: closes a client's connection without an answer (the ``drop`` fault); the server provides it.
    """
    app = FastAPI(title="OpenAI fine-tuning emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Gate, emu=emu, drop=drop)
    app.include_router(_api_routes(emu), prefix="/v1")
    app.include_router(_control_routes(emu), prefix="/_emulator")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> Response:
        return JSONResponse(e.body, e.status, headers=e.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        # Routing misses (404, 405) and malformed bodies: OpenAI's envelope, or the control routes' detail.
        if request.url.path.startswith("/_emulator/"):
            if e.status_code in (404, 405):
                return JSONResponse({"detail": "unknown control route"}, 404)
            return JSONResponse({"detail": e.detail}, e.status_code)
        if e.status_code in (404, 405):
            err = ApiError(404, f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")
        else:
            err = ApiError(e.status_code, str(e.detail))
        return JSONResponse(err.body, err.status, headers=err.headers)

    return app


def _api_routes(emu: Emulator) -> APIRouter:
    api = APIRouter()

    @api.post("/files")
    def upload(fields: dict[str, tuple[str | None, bytes]] = Depends(form_fields)) -> Response:
        if "file" not in fields:
            raise ApiError(400, "Missing required parameter: 'file'.", param="file")
        filename, content = fields["file"]
        purpose = fields.get("purpose", ("", b""))[1].decode()
        seconds = fields.get("expires_after[seconds]")
        with emu.ticked() as st:
            f = st.upload(filename or "upload.jsonl", purpose, content, float(seconds[1]) if seconds else None)
            return JSONResponse(f.to_json())

    @api.get("/files")
    def list_files(purpose: str | None = None, order: str = "desc", after: str | None = None,
                   limit: str | None = None) -> Response:  # fmt: skip
        with emu.ticked() as st:
            files = sorted(st.files.values(), key=lambda f: f.created_at, reverse=order == "desc")
            data = [f.to_json() for f in files if purpose is None or f.purpose == purpose]
            return _list(*page(data, after, _limit(limit, 10_000, 10_000)), empty_id="")

    @api.get("/files/{file_id}")
    def get_file(file_id: str) -> Response:
        with emu.ticked() as st:
            return JSONResponse(st.get_file(file_id).to_json())

    @api.delete("/files/{file_id}")
    def delete_file(file_id: str) -> Response:
        with emu.ticked() as st:
            f = st.get_file(file_id)
            del st.files[f.id]
            return JSONResponse({"id": f.id, "object": "file", "deleted": True})

    @api.get("/files/{file_id}/content")
    def file_content(file_id: str) -> Response:
        with emu.ticked() as st:
            return Response(st.get_file(file_id).content, media_type="application/octet-stream")

    @api.post("/fine_tuning/jobs")
    def create_job(body: Json = Depends(json_body)) -> Response:
        with emu.ticked() as st:
            return JSONResponse(st.runner.to_json(st.create_job(body)))

    @api.get("/fine_tuning/jobs")
    def list_jobs(request: Request, after: str | None = None, limit: str | None = None) -> Response:
        q = request.query_params
        with emu.ticked() as st:
            jobs = sorted(st.jobs.values(), key=lambda j: j.created_at, reverse=True)
            meta = {k[9:-1]: v for k, v in q.items() if k.startswith("metadata[") and k.endswith("]")}
            if meta:
                jobs = [j for j in jobs if j.metadata and all(j.metadata.get(k) == v for k, v in meta.items())]
            elif "metadata" in q:  # metadata=null: jobs without metadata
                jobs = [j for j in jobs if not j.metadata]
            return _list(*page([st.runner.to_json(j) for j in jobs], after, _limit(limit, 20, 100)), ids=False)

    @api.get("/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str) -> Response:
        with emu.ticked() as st:
            return JSONResponse(st.runner.to_json(st.get_job(job_id)))

    @api.post("/fine_tuning/jobs/{job_id}/{action}")
    def job_action(job_id: str, action: str) -> Response:
        with emu.ticked() as st:
            job = st.get_job(job_id)  # an unknown job is a 404 before an unknown action
            if action not in ("cancel", "pause", "resume"):
                raise ApiError(404, "Invalid URL", code="unknown_url")
            return JSONResponse(st.runner.to_json(st.job_action(job.id, action)))

    @api.get("/fine_tuning/jobs/{job_id}/events")
    def job_events(job_id: str, after: str | None = None, limit: str | None = None) -> Response:
        with emu.ticked() as st:
            events = list(reversed(st.get_job(job_id).events))
            return _list(*page(events, after, _limit(limit, 20, 1000)), ids=False)

    @api.get("/fine_tuning/jobs/{job_id}/checkpoints")
    def job_checkpoints(job_id: str, after: str | None = None, limit: str | None = None) -> Response:
        with emu.ticked() as st:
            checkpoints = list(reversed(st.get_job(job_id).checkpoints))
            return _list(*page(checkpoints, after, _limit(limit, 10, 100)))

    @api.post("/chat/completions")
    def chat(body: Json = Depends(json_body)) -> Response:
        if body.get("stream"):
            raise ApiError(400, "The emulator does not stream; send stream=false", param="stream")
        with emu.ticked() as st:
            return JSONResponse(st.chat_completion(body))

    @api.post("/batches")
    def create_batch(body: Json = Depends(json_body)) -> Response:
        with emu.ticked() as st:
            return JSONResponse(batch_ops.to_json(batch_ops.create(st, body)))

    @api.get("/batches")
    def list_batches(after: str | None = None, limit: str | None = None) -> Response:
        with emu.ticked() as st:
            items = sorted(st.batches.values(), key=lambda b: b["_t"], reverse=True)
            return _list(*page([batch_ops.to_json(b) for b in items], after, _limit(limit, 20, 100)))

    @api.get("/batches/{batch_id}")
    def get_batch(batch_id: str) -> Response:
        with emu.ticked() as st:
            return JSONResponse(batch_ops.to_json(_batch(st, batch_id)))

    @api.post("/batches/{batch_id}/cancel")
    def cancel_batch(batch_id: str) -> Response:
        with emu.ticked() as st:
            batch = _batch(st, batch_id)
            batch_ops.cancel(st, batch)
            return JSONResponse(batch_ops.to_json(batch))

    @api.get("/models")
    def list_models() -> Response:
        with emu.ticked() as st:
            return JSONResponse({"object": "list", "data": st.list_models()})

    @api.get("/models/{model}")
    def get_model(model: str) -> Response:
        with emu.ticked() as st:
            return JSONResponse(st.model_object(model))

    return api


def _batch(st: State, batch_id: str) -> dict[str, Any]:
    batch = st.batches.get(batch_id)
    if batch is None:
        raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
    return batch


def _control_routes(emu: Emulator) -> APIRouter:
    control = APIRouter()

    @control.post("/faults")
    def add_fault(body: Json = Depends(control_body)) -> Response:
        try:
            rule = FaultRule.model_validate(body)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            raise HTTPException(400, str(e)) from None
        emu.faults.add(rule)
        return JSONResponse({"pending": [r.model_dump() for r in emu.faults.pending()]})

    @control.delete("/faults")
    def clear_faults() -> Response:
        emu.faults.clear()
        return JSONResponse({"pending": []})

    @control.post("/settings")
    def change_settings(body: Json = Depends(control_body)) -> Response:
        with emu.ticked() as st:  # settle jobs under the old timing first
            for k, v in body.items():
                setattr(st.settings, k, v)
            return JSONResponse(st.settings.model_dump())

    @control.post("/models/{name:path}")
    def model_lifecycle(name: str, body: Json = Depends(control_body)) -> Response:
        with emu.state.lock:
            out = emu.state.set_model_lifecycle(name, body.get("shutdown_date"), bool(body.get("shut_down")))
        return JSONResponse(out)

    @control.api_route("/requests", methods=["GET", "POST", "DELETE"])
    def request_log() -> Response:
        with emu.log_lock:
            return JSONResponse({"requests": list(emu.requests)})

    @control.api_route("/violations", methods=["GET", "POST", "DELETE"])
    def violation_log() -> Response:
        with emu.log_lock:
            return JSONResponse({"violations": list(emu.violations)})

    return control


# ---------------------------------------------------------------------- the server


class UvicornServer:
    """The app served by uvicorn on a socket bound at construction (so the port is known before start).

    Args:
        emu: the state and logs to serve.
        host: the address to bind.
        port: the port; 0 picks a free one.
    """

    def __init__(self, emu: Emulator, host: str, port: int) -> None:
        self.emu = emu
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
        # it (Nagle plus delayed ACKs) every answer on a kept-alive connection waits ~40 ms.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen()
        config = uvicorn.Config(
            make_app(emu, self._drop), log_config=None, log_level="warning", access_log=False, lifespan="off",
            # Longer than any client's idle pool timeout (httpx: 5 s), so a kept-alive connection is never
            # closed by the server just as the client reuses it (the threaded server never closed them).
            timeout_keep_alive=60,
        )  # fmt: skip
        self.server = uvicorn.Server(config)

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port."""
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    def serve(self) -> None:
        """Serve in this thread until :meth:`shutdown` (or, in the main thread, SIGINT / SIGTERM)."""
        asyncio.run(self.server.serve(sockets=[self.socket]))

    def started(self) -> bool:
        """True once the server accepts connections."""
        return bool(self.server.started)

    def shutdown(self) -> None:
        """Ask :meth:`serve` to stop without waiting for slow answers (a ``delay`` fault may be sleeping)."""
        self.server.should_exit = True
        self.server.force_exit = True

    def close(self) -> None:
        """Close the listening socket."""
        self.socket.close()

    def _drop(self, client: Any) -> bool:
        # ASGI has no way to close a connection unanswered; the transport of the client's connection does.
        for conn in list(self.server.server_state.connections):
            if client is not None and getattr(conn, "client", None) == tuple(client):
                conn.transport.close()
                return True
        return False
