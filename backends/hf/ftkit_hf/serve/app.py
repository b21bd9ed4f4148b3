"""The HTTP layer: OpenAI's ``/v1/models`` and ``/v1/chat/completions`` over :class:`ServedModel`s.

Errors use OpenAI's body (``{"error": {"message", "type", "param", "code"}}``) and status codes, so the
``openai`` client raises the exception an app already handles (``NotFoundError`` for an unknown model,
``AuthenticationError`` for a wrong key, ``BadRequestError`` for a field the server cannot honour).
When an API key is set, every request must carry it as ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ftkit_hf.serve.engine import Engine
from ftkit_hf.serve.schemas import ChatCompletionRequest
from ftkit_hf.serve.served import Answer, Piece, ServedModel

_INSTALL = "the server needs FastAPI and uvicorn: pip install 'ftkit-hf[serve]'"


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "param": param, "code": code}})


def build_app(models: Sequence[ServedModel], *, api_key: str | None = None, engine: Engine | None = None) -> Any:
    """A FastAPI app serving ``models``.

    Args:
        models: the models, by the names clients send.
        api_key: when set, requests must send it as a bearer token.
        engine: the model thread (a new one by default; ``app.state.engine`` holds it).

    Raises:
        ConfigError: FastAPI is not installed, or two models share a name.
    """
    from ftkit.errors import ConfigError

    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import StreamingResponse
    except ImportError:
        raise ConfigError(_INSTALL) from None
    by_name: dict[str, ServedModel] = {}
    for m in models:
        if m.name in by_name:
            raise ConfigError(f"two served models are named {m.name!r}; give one an alias (ALIAS=JOB_ID)")
        by_name[m.name] = m
    eng = engine or Engine()
    created = int(time.time())
    app = FastAPI(title="ftkit serve", docs_url=None, redoc_url=None)
    app.state.engine = eng
    app.state.models = by_name

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if api_key:
            sent = request.headers.get("authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {api_key}".encode()):
                return _error(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                              "invalid_request_error", code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"{loc}: {first.get('msg', 'invalid request')}", "invalid_request_error", param=loc or None)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": m.owned_by} for name, m in by_name.items()
        ]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> Any:
        if name not in by_name:
            return _error(404, f"model {name!r} is not served here", "invalid_request_error", "model",
                          "model_not_found")
        return {"id": name, "object": "model", "created": created, "owned_by": by_name[name].owned_by}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> Any:
        model = by_name.get(req.model)
        if model is None:
            return _error(404, f"model {req.model!r} is not served here; served: {', '.join(by_name)}",
                          "invalid_request_error", "model", "model_not_found")
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        text = model.classification_text(req)
        if text is not None:
            result = (await asyncio.wrap_future(eng.classify(model.predictor, [text])))[0]
            answer = model.label_answer(req, text, result)
            if req.stream:
                return StreamingResponse(_stream_answer(cid, req, answer), media_type="text/event-stream")
            return _completion(cid, req.model, answer)
        if not model.can_generate:
            return _error(400, f"model {req.model!r} is a classification head: it answers only its classification "
                          f"prompt (system: the preamble with labels {model.labels}, user: the text)",
                          "invalid_request_error", "messages")
        prompt = model.prompt_ids(req)
        limit = model.token_limit(req, len(prompt))
        if model.context_length is not None and len(prompt) + limit > model.context_length:
            return _error(400, f"the prompt ({len(prompt)} tokens) plus max_tokens ({limit}) exceeds the model's "
                          f"context of {model.context_length} tokens", "invalid_request_error", "messages",
                          "context_length_exceeded")
        if req.stream:
            return StreamingResponse(_stream_generation(eng, model, cid, req, prompt), media_type="text/event-stream")
        answer = await asyncio.wrap_future(eng.call(lambda: model.answer(req, prompt)))
        return _completion(cid, req.model, answer)

    return app


def _completion(cid: str, model: str, a: Answer) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": a.text},
        "logprobs": {"content": a.logprobs} if a.logprobs is not None else None,
        "finish_reason": a.finish_reason,
    }
    if a.label_probabilities is not None:
        choice["label_probabilities"] = a.label_probabilities
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [choice], "usage": _usage(a.prompt_tokens, a.completion_tokens)}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chunk(cid: str, model: str, delta: dict[str, Any], logprobs: list[dict[str, Any]] | None,
           finish: str | None, extra: dict[str, Any] | None = None) -> str:
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish,
                              "logprobs": {"content": logprobs} if logprobs else None}
    choice |= extra or {}
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [choice]}
    return f"data: {json.dumps(body)}\n\n"


def _usage_chunk(cid: str, model: str, prompt: int, completion: int) -> str:
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [], "usage": _usage(prompt, completion)}
    return f"data: {json.dumps(body)}\n\n"


async def _stream_answer(cid: str, req: ChatCompletionRequest, a: Answer) -> AsyncIterator[str]:
    extra = {"label_probabilities": a.label_probabilities} if a.label_probabilities is not None else None
    yield _chunk(cid, req.model, {"role": "assistant", "content": ""}, None, None)
    yield _chunk(cid, req.model, {"content": a.text}, a.logprobs, None, extra)
    yield _chunk(cid, req.model, {}, None, a.finish_reason)
    if req.stream_options and req.stream_options.include_usage:
        yield _usage_chunk(cid, req.model, a.prompt_tokens, a.completion_tokens)
    yield "data: [DONE]\n\n"


async def _stream_generation(eng: Engine, model: ServedModel, cid: str, req: ChatCompletionRequest,
                             prompt: list[int]) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Piece | BaseException | None] = asyncio.Queue()
    gone = threading.Event()  # set when the client goes away: the engine stops generating for it

    def run() -> None:
        try:
            for piece in model.pieces(req, prompt):
                loop.call_soon_threadsafe(queue.put_nowait, piece)
                if gone.is_set():
                    break
        except BaseException as e:
            loop.call_soon_threadsafe(queue.put_nowait, e)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    eng.call(run)
    n = 0
    try:
        yield _chunk(cid, req.model, {"role": "assistant", "content": ""}, None, None)
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                err = {"error": {"message": str(item), "type": "server_error", "param": None, "code": None}}
                yield f"data: {json.dumps(err)}\n\n"
                return
            n += item.tokens
            if item.text or item.logprobs:
                yield _chunk(cid, req.model, {"content": item.text}, item.logprobs, None)
            if item.finish_reason:
                yield _chunk(cid, req.model, {}, None, item.finish_reason)
        if req.stream_options and req.stream_options.include_usage:
            yield _usage_chunk(cid, req.model, len(prompt), n)
        yield "data: [DONE]\n\n"
    finally:
        gone.set()
