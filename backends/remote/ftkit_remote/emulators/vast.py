"""A loopback emulator of the vast.ai REST API (the parts ftkit uses), readable as its documentation.

Routes (fact sheet §1): ``POST /api/v0/bundles/`` (search with ``{op: value}`` filters, MB units,
``allocated_storage`` pricing), ``PUT /api/v0/asks/{id}/`` (create → ``new_contract``),
``GET /api/v0/instances/{id}/`` (``{"instances": {...}}``), ``GET /api/v1/instances/`` (25 per page,
``next_token``), legacy ``GET /api/v0/instances``, ``PUT``/``DELETE /api/v0/instances/{id}/``,
``POST /api/v0/ssh/`` and ``/api/v0/instances/{id}/ssh/``, ``GET /api/v0/charges/``.

Auth: ``Authorization: Bearer KEY`` or ``?api_key=KEY``; an instance's ``CONTAINER_API_KEY`` may manage
only that instance. Rate limits: a minimum interval per endpoint; a violation is a 429 in plain text
without ``Retry-After``.

Faults (``state.faults.add(where, name)``):
  ``create``: ``offer_gone`` (404 no_such_ask), ``offer_gone_410``, ``created_stopped`` (error body that
  still carries ``new_contract``; the instance exists, stopped, billing storage), ``error_after_create``
  (the instance is made, then a 500), ``slow_response`` (made, then the answer takes 30 s);
  ``instance``: ``stuck_loading``, ``oci_error``, ``outbid``, ``offline``, ``no_gpu`` (applied to the next
  create);
  ``any``: ``429`` (the next call of any route is refused).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ftkit_remote.emulators.common import EmuInstance, EmulatorState

_OPS = {"eq": operator.eq, "neq": operator.ne, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
        "lte": operator.le, "in": lambda a, b: a in b, "notin": lambda a, b: a not in b}  # fmt: skip
# Minimum seconds between calls, from the OpenAPI x-rate-limit values (scaled by the test).
RATE_LIMITS = {"create": 4.5, "destroy": 3.0, "manage": 1.0, "show": 2.0}


def default_offers() -> list[dict[str, Any]]:
    """A small marketplace: three machines, prices per hour before storage."""
    base = {"rentable": True, "rented": False, "verified": True, "external": False, "direct_port_count": 10,
            "cuda_max_good": 12.4, "inet_down": 900.0, "storage_cost": 0.15, "min_bid": 0.1}  # fmt: skip
    return [
        base | {"id": 7001, "machine_id": 501, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564,
                "dph_base": 0.35, "reliability": 0.995, "disk_space": 200, "geolocation": "California, US"},
        base | {"id": 7002, "machine_id": 502, "gpu_name": "RTX 4090", "num_gpus": 2, "gpu_ram": 24564,
                "dph_base": 0.68, "reliability": 0.99, "disk_space": 400, "geolocation": "Ohio, US"},
        base | {"id": 7003, "machine_id": 503, "gpu_name": "A100 SXM4", "num_gpus": 1, "gpu_ram": 81920,
                "dph_base": 1.10, "reliability": 0.97, "disk_space": 500, "geolocation": "Quebec, CA"},
    ]  # fmt: skip


class VastState(EmulatorState):
    """A vast.ai account: the marketplace and the rented contracts."""

    provider = "vast"

    def __init__(self, workdir: Path, rate_scale: float = 0.0, **kw: Any) -> None:
        super().__init__(workdir, rate_limits={k: v * rate_scale for k, v in RATE_LIMITS.items()}, **kw)
        self.offers = default_offers()
        self.account_keys: list[str] = []

    def priced(self, offer: dict[str, Any], storage_gb: float) -> dict[str, Any]:
        """The offer with ``dph_total`` at ``storage_gb`` of allocated disk."""
        storage = storage_gb * offer["storage_cost"] / 720
        return offer | {"dph_total": round(offer["dph_base"] + storage, 6), "allocated_storage": storage_gb}

    def status_of(self, inst: EmuInstance) -> dict[str, Any]:
        """The instance as ``GET /api/v0/instances/{id}/`` shows it at this moment."""
        now = self.clock.now()
        age = now - inst.created_at
        cur = intended = nxt = "running"
        msg = None
        if inst.failed == "offline":
            actual = "offline"
        elif inst.failed:
            actual, msg = "created", inst.failed
        elif inst.stopped:
            actual = cur = intended = nxt = "stopped"
        elif inst.stuck:
            actual = "loading"
        elif age < inst.boot_s * 0.2:
            actual = None
        elif age < inst.boot_s * 0.4:
            actual = "created"
        elif age < inst.boot_s:
            actual = "loading"
        else:
            actual, msg = "running", f"success, running {inst.fields['image']}/ssh"
        sb = inst.sandbox
        out = inst.fields | {
            "id": int(inst.id), "label": inst.label, "actual_status": actual, "intended_status": intended,
            "cur_state": cur, "next_state": nxt, "status_msg": msg, "ssh_host": sb.host, "ssh_port": sb.port,
            "public_ipaddr": sb.host, "start_date": inst.created_at,
        }  # fmt: skip
        if actual == "running":  # docker-style port map only on running direct instances
            out["ports"] = {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(sb.port)}]}
        return out


def _parse_env(env: Any) -> dict[str, str]:
    """``env`` as a JSON object (docs/CLI) or a docker-flag string ``-e K=V -p 8000:8000`` (OpenAPI)."""
    if isinstance(env, dict):
        return {k: str(v) for k, v in env.items() if not k.startswith("-")}
    out: dict[str, str] = {}
    parts = str(env or "").split()
    for flag, val in itertools.pairwise(parts):
        if flag == "-e" and "=" in val:
            k, v = val.split("=", 1)
            out[k] = v
    return out


def make_app(state: VastState) -> FastAPI:
    """The FastAPI app of the emulator."""
    app = FastAPI(title="vast.ai emulator")

    def error(status: int, code: str, msg: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"success": False, "error": code, "msg": msg, **extra}, status_code=status)

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        state.requests.append((request.method, request.url.path))
        iid = request.path_params.get("iid") or request.url.path.rstrip("/").split("/")[-1]
        if not state.authorized(request.headers.get("authorization"), request.query_params.get("api_key"), iid):
            return error(401, "invalid_user_key", "Invalid user key")
        if state.faults.take("any") == "429":
            return PlainTextResponse("API requests too frequent", status_code=429)
        return await call_next(request)

    def limited(endpoint: str) -> Response | None:
        if state.rate.too_soon(endpoint):
            threshold = state.rate.intervals[endpoint]
            return PlainTextResponse(f"API requests too frequent endpoint threshold={threshold}", status_code=429)
        return None

    @app.post("/api/v0/bundles/")
    async def search(request: Request) -> Any:
        q = await request.json()
        storage = float(q.get("allocated_storage", 5.0))
        control = {"order", "type", "allocated_storage", "limit"}
        rows = [state.priced(o, storage) for o in state.offers]
        for field, cond in q.items():
            if field in control or not isinstance(cond, dict):
                continue
            for op, want in cond.items():
                rows = [r for r in rows if field in r and _OPS[op](r[field], want)]
        for col, direction in reversed(q.get("order", [["score", "desc"]])):
            rows.sort(key=lambda r, c=col: r.get(c, 0), reverse=direction == "desc")  # type: ignore[misc]
        if q.get("type") in ("bid", "interruptible"):
            rows = [r | {"is_bid": True, "dph_total": r["min_bid"]} for r in rows]
        return {"offers": rows[: int(q.get("limit", 64))]}

    @app.put("/api/v0/asks/{ask_id}/")
    async def create(ask_id: int, request: Request) -> Any:
        if (r := limited("create")) is not None:
            return r
        body = await request.json()
        fault = state.faults.take("create")
        offer = next((o for o in state.offers if o["id"] == ask_id), None)
        if offer is None or fault in ("offer_gone", "offer_gone_410"):
            if offer is not None:
                state.offers.remove(offer)  # someone else rented it
            status = 410 if fault == "offer_gone_410" else 404
            return error(status, "no_such_ask", f"Instance type by id {ask_id} is not available")
        if "image" not in body and "template_hash_id" not in body:
            return error(400, "invalid_args", "image is required")
        if not int(body.get("disk", 10)) >= 8 or not str(body.get("label", "")).__len__() <= 256:
            return error(400, "invalid_args", "disk must be >= 8 GB and label <= 256 chars")
        priced = state.priced(offer, float(body.get("disk", 10)))
        storage_per_hour = priced["dph_total"] - offer["dph_base"]
        compute = body.get("price") or offer["dph_base"]  # a bid replaces the on-demand price
        runtype = str(body.get("runtype", "ssh"))
        inst = state.new_instance(
            body.get("label", ""), compute, storage_per_hour, " ".join(state.account_keys[-1:]),
            env={}, image=body["image"], gpu_name=offer["gpu_name"], num_gpus=offer["num_gpus"],
            gpu_ram=offer["gpu_ram"], dph_total=priced["dph_total"], disk_space=body.get("disk", 10),
            machine_id=offer["machine_id"], image_runtype=runtype, onstart=body.get("onstart"),
        )  # fmt: skip
        inst.sandbox.env |= _parse_env(body.get("env")) | {
            "CONTAINER_ID": inst.id, "CONTAINER_API_KEY": inst.scoped_key, "VAST_CONTAINERLABEL": f"C.{inst.id}",
        }  # fmt: skip
        inst.sandbox.num_gpus, inst.sandbox.gpu_name = offer["num_gpus"], offer["gpu_name"]
        inst.sandbox.gpu_ram_mib = offer["gpu_ram"]
        inst_fault = state.faults.take("instance")
        inst.stuck = inst_fault == "stuck_loading"
        inst.stopped = inst_fault == "outbid"
        if inst_fault == "no_gpu":  # the offer promised a GPU; the machine shows none (no nvidia-smi)
            inst.sandbox.num_gpus = 0
        if inst_fault == "oci_error":
            inst.failed = "Error response from daemon: OCI runtime create failed: runc create failed"
        elif inst_fault == "offline":
            inst.failed = "offline"
        if fault == "created_stopped":
            inst.stopped = True
            return {"success": False, "error": "insufficient_bid", "msg": "bid too low; instance created stopped",
                    "new_contract": int(inst.id)}  # fmt: skip
        if fault == "error_after_create":
            return error(500, "server_error", "internal error")
        if fault == "slow_response":
            await asyncio.sleep(30)
        return {"success": True, "new_contract": int(inst.id)}

    @app.get("/api/v0/instances/{iid}/")
    async def show(iid: str) -> Any:
        if (r := limited("show")) is not None:
            return r
        inst = state.instances.get(iid)
        if inst is None or inst.destroyed_at is not None:
            return {"instances": None}
        return {"instances": state.status_of(inst)}

    @app.get("/api/v1/instances/")
    async def list_v1(limit: int = 25, after_token: str | None = None, select_filters: str | None = None) -> Any:
        rows = sorted(state.live(), key=lambda i: int(i.id))
        if after_token:
            rows = [i for i in rows if int(i.id) > int(after_token)]
        filters = json.loads(select_filters) if select_filters else {}
        out = [state.status_of(i) for i in rows]
        for field, cond in filters.items():
            for op, want in cond.items():
                out = [r for r in out if _OPS[op](r.get(field), want)]
        page = out[: min(limit, 25)]
        more = len(out) > len(page)
        return {"success": True, "instances_found": len(page), "total_instances": len(out),
                "next_token": str(page[-1]["id"]) if more else None, "instances": page}  # fmt: skip

    @app.get("/api/v0/instances")
    async def list_v0() -> Any:
        return {"instances": [state.status_of(i) for i in state.live()]}

    @app.put("/api/v0/instances/{iid}/")
    async def manage(iid: str, request: Request) -> Any:
        if (r := limited("manage")) is not None:
            return r
        inst = state.instances.get(iid)
        if inst is None or inst.destroyed_at is not None:
            return error(404, "no_such_instance", f"no instance {iid}")
        body = await request.json()
        if "label" in body:
            inst.label = body["label"]
        if body.get("state") == "stopped":
            inst.stopped = True
        elif body.get("state") == "running":
            inst.stopped = False
        return {"success": True}

    @app.delete("/api/v0/instances/{iid}/")
    async def destroy(iid: str) -> Any:
        if (r := limited("destroy")) is not None:
            return r
        inst = state.instances.get(iid)
        if inst is None or inst.destroyed_at is not None:
            return error(404, "no_such_instance", f"no instance {iid}")
        await state.destroy(inst)
        return {"success": True, "msg": f"destroying instance {iid}."}

    @app.post("/api/v0/ssh/")
    async def add_account_key(request: Request) -> Any:
        key = (await request.json())["ssh_key"].strip()
        if key not in state.account_keys:
            state.account_keys.append(key)
        return {"success": True, "key": {"id": state.account_keys.index(key) + 1, "public_key": key}}

    @app.post("/api/v0/instances/{iid}/ssh/")
    async def attach_key(iid: str, request: Request) -> Any:
        inst = state.instances.get(iid)
        if inst is None:
            return error(404, "no_such_instance", f"no instance {iid}")
        inst.sandbox.authorized_key = (await request.json())["ssh_key"].strip()
        return {"success": True, "msg": "ssh key attached"}

    @app.get("/api/v0/charges/")
    async def charges() -> Any:
        now = state.clock.now()
        return {"charges": [{"instance_id": int(i.id), "label": i.label, "amount": round(i.cost(now), 6),
                             "type": "instance"} for i in state.instances.values()]}  # fmt: skip

    return app
