"""Check the emulator's answers against the trimmed OpenAPI spec shipped beside it.

The spec mixes OpenAPI 3.0 keywords into a 3.1 document: ``nullable: true`` is read as "null is
allowed" (facts sheet §12). One deliberate deviation is accepted: ``status: "paused"`` on a
fine-tuning job, which the real server sends although the spec's enum lacks it. A second one is
accepted only as an option of the emulator (``healthy_error_null=False``): the real server's
``error: {"code": null, "message": null, "param": null}`` on healthy jobs.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).with_name("spec") / "openai-fine-tuning.openapi.yaml"
_URN = "urn:ftkit-openai-spec"


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


@cache
def load_spec() -> dict[str, Any]:
    """The spec with ``nullable`` rewritten and the ``paused`` status added."""
    import yaml

    spec = _nullable(yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8")))
    status = spec["components"]["schemas"]["FineTuningJob"]["properties"]["status"]
    status["enum"] = [*status["enum"], "paused"]
    error = spec["components"]["schemas"]["FineTuningJob"]["properties"]["error"]
    all_null = {"type": "object", "properties": {k: {"type": "null"} for k in ("code", "message", "param")},
                "required": ["code", "message", "param"]}
    error["anyOf"] = [*error["anyOf"], all_null]
    return spec


@cache
def _routes() -> list[tuple[str, re.Pattern[str], str | None]]:
    routes = []
    for template, ops in load_spec()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            content = op["responses"].get("200", {}).get("content", {})
            schema = content.get("application/json", {}).get("schema", {})
            ref = schema.get("$ref")
            routes.append((method.upper(), pattern, ref))
    return routes


def response_schema(method: str, path: str) -> str | None:
    """The ``$ref`` of the 200 JSON schema of an operation (path without ``/v1``), or None."""
    for m, pattern, ref in _routes():
        if m == method.upper() and pattern.match(path):
            return ref
    return None


@cache
def _validator(ref: str) -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resource = Resource.from_contents(copy.deepcopy(load_spec()), default_specification=DRAFT202012)
    registry = Registry().with_resource(_URN, resource)
    return jsonschema.Draft202012Validator({"$ref": _URN + ref}, registry=registry)


def violations(ref: str, instance: Any) -> list[str]:
    """Every way ``instance`` breaks the schema at ``ref`` (e.g. ``#/components/schemas/FineTuningJob``)."""
    errors = sorted(_validator(ref).iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message[:300]}" for e in errors]


def check_response(method: str, path: str, status: int, body: Any) -> list[str]:
    """Violations of one answer: 200s against the operation's schema, errors against ``ErrorResponse``."""
    if status >= 400:
        return [f"{method} {path}: {v}" for v in violations("#/components/schemas/ErrorResponse", body)]
    ref = response_schema(method, path)
    if ref is None:
        return []
    return [f"{method} {path}: {v}" for v in violations(ref, body)]
