"""A loopback emulator of the Lambda Cloud API v1, readable as documentation.

Envelopes: ``{"data": ...}`` on success, ``{"error": {"code", "message", "suggestion"}}`` on failure.
Routes: ``GET /instance-types`` (a dict keyed by type name, with ``regions_with_capacity_available``),
``POST /instance-operations/launch`` (quantity 1, exactly one SSH key name; at most one launch per
``launch_interval_s``, else 429), ``GET /instances``, ``GET /instances/{id}``,
``POST /instance-operations/terminate``, ``POST /instance-operations/restart``, ``GET/POST /ssh-keys``,
``DELETE /ssh-keys/{id}``.

Instances are VMs: ``booting`` for ``boot_s``, then ``active`` with an ``ip``; SSH as ``ubuntu`` on
port 22 — here each instance gets its own loopback address (127.0.0.N) and all listen on the one
``ssh_port`` of the emulator, so the client's "port 22" setting points at that port.

Faults: ``create``: ``insufficient_capacity`` (400 although /instance-types listed capacity);
``instance``: ``unhealthy``, ``stuck_booting``; ``any``: ``429``.
"""

from __future__ import annotations

import itertools
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ftkit_remote.emulators.common import EmuInstance, EmulatorState, free_port


def default_types() -> dict[str, dict[str, Any]]:
    """Three instance types (price per instance, cents per hour) and where they have capacity."""
    def t(name: str, desc: str, cents: int, gpus: int, regions: list[str]) -> dict[str, Any]:
        return {"instance_type": {"name": name, "description": desc, "gpu_description": desc,
                                  "price_cents_per_hour": cents, "specs": {"vcpus": 30 * gpus,
                                  "memory_gib": 200 * gpus, "storage_gib": 512 * gpus, "gpus": gpus}},
                "regions_with_capacity_available": [{"name": r, "description": r} for r in regions]}  # fmt: skip

    return {
        "gpu_1x_a10": t("gpu_1x_a10", "1x A10 (24 GB PCIe)", 75, 1, ["us-east-1", "us-west-1"]),
        "gpu_1x_a100_sxm4": t("gpu_1x_a100_sxm4", "1x A100 (40 GB SXM4)", 129, 1, ["us-east-1"]),
        "gpu_8x_h100_sxm5": t("gpu_8x_h100_sxm5", "8x H100 (80 GB SXM5)", 2392, 8, []),
    }


class LambdaState(EmulatorState):
    """A Lambda Cloud account."""

    provider = "lambda"

    def __init__(self, workdir: Path, launch_interval_s: float = 0.0, **kw: Any) -> None:
        super().__init__(workdir, rate_limits={"launch": launch_interval_s}, **kw)
        self.types = default_types()
        self.ssh_keys: list[dict[str, str]] = []
        self.ssh_port = free_port("127.0.0.1")
        self._addresses = itertools.count(2)
        self._net = secrets.randbelow(200) + 20  # 127.<net>.0.N: unlikely to collide with another emulator

    def next_ip(self) -> str:
        """A fresh loopback address for the next VM."""
        n = next(self._addresses)
        return f"127.{self._net}.{n // 250}.{n % 250 + 1}"

    def instance(self, inst: EmuInstance) -> dict[str, Any]:
        """The instance as ``GET /instances/{id}`` shows it now."""
        now = self.clock.now()
        if inst.destroyed_at is not None:
            status = "terminated"
        elif inst.failed:
            status = "unhealthy"
        elif inst.is_running(now):
            status = "active"
        else:
            status = "booting"
        out = inst.fields | {"id": inst.id, "name": inst.label, "status": status, "hostname": f"vm-{inst.id}"}
        if status == "active":
            out["ip"] = inst.sandbox.host
        return out


def make_app(state: LambdaState) -> FastAPI:
    """The FastAPI app of the emulator."""
    app = FastAPI(title="Lambda Cloud emulator")

    def error(status: int, code: str, message: str, suggestion: str | None = None) -> JSONResponse:
        err = {"code": code, "message": message} | ({"suggestion": suggestion} if suggestion else {})
        return JSONResponse({"error": err}, status_code=status)

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        state.requests.append((request.method, request.url.path))
        if not state.authorized(request.headers.get("authorization"), None):
            return error(401, "global/invalid-api-key", "API key was invalid, expired, or deleted.")
        if state.faults.take("any") == "429":
            return error(429, "global/too-many-requests", "Too many requests.")
        return await call_next(request)

    @app.get("/instance-types")
    async def instance_types() -> Any:
        return {"data": state.types}

    @app.post("/instance-operations/launch")
    async def launch(request: Request) -> Any:
        if state.rate.too_soon("launch"):
            return error(429, "global/too-many-requests", "Launch requests are limited to 1 per 12 seconds.")
        body = await request.json()
        if body.get("quantity", 1) != 1:
            return error(400, "global/invalid-parameters", "quantity: Input should be less than or equal to 1")
        names = body.get("ssh_key_names") or []
        key = next((k for k in state.ssh_keys if names and k["name"] == names[0]), None)
        if len(names) != 1 or key is None:
            return error(400, "global/invalid-parameters", "exactly one existing ssh key name is required")
        entry = state.types.get(body.get("instance_type_name", ""))
        if entry is None:
            return error(404, "global/object-does-not-exist", "instance type not found")
        if state.faults.take("create") == "insufficient_capacity" or body.get("region_name") not in [
            r["name"] for r in entry["regions_with_capacity_available"]
        ]:
            return error(400, "instance-operations/launch/insufficient-capacity",
                         "Not enough capacity to fulfill launch request.", "Try another region or type.")  # fmt: skip
        it = entry["instance_type"]
        inst = state.new_instance(
            str(body.get("name", ""))[:64], it["price_cents_per_hour"] / 100, 0.0, key["public_key"], {},
            ssh_host=state.next_ip(), ssh_port=state.ssh_port, instance_type=it, ssh_key_names=names,
            file_system_names=[], region={"name": body["region_name"], "description": body["region_name"]},
            private_ip="10.0.0.2",
        )  # fmt: skip
        inst.sandbox.gpu_name = it["description"].split("(")[0].split("x ", 1)[-1].strip()
        inst.sandbox.num_gpus = it["specs"]["gpus"]
        fault = state.faults.take("instance")
        inst.stuck = fault == "stuck_booting"
        if fault == "unhealthy":
            inst.failed = "unhealthy"
        return {"data": {"instance_ids": [inst.id]}}

    @app.get("/instances")
    async def list_instances() -> Any:
        return {"data": [state.instance(i) for i in state.live()]}

    @app.get("/instances/{iid}")
    async def get_instance(iid: str) -> Any:
        inst = state.instances.get(iid)
        if inst is None or inst.destroyed_at is not None:
            return error(404, "global/object-does-not-exist", "Specified instance does not exist.")
        return {"data": state.instance(inst)}

    @app.post("/instance-operations/terminate")
    async def terminate(request: Request) -> Any:
        ids = (await request.json()).get("instance_ids") or []
        done = []
        for iid in ids:
            inst = state.instances.get(iid)
            if inst is None or inst.destroyed_at is not None:
                return error(404, "global/object-does-not-exist", f"Instance {iid} does not exist.")
            await state.destroy(inst)
            done.append(state.instance(inst))
        return {"data": {"terminated_instances": done}}

    @app.post("/instance-operations/restart")
    async def restart(request: Request) -> Any:
        ids = (await request.json()).get("instance_ids") or []
        return {"data": {"restarted_instances": [state.instance(state.instances[i]) for i in ids]}}

    @app.get("/ssh-keys")
    async def keys() -> Any:
        return {"data": [{"id": k["id"], "name": k["name"], "public_key": k["public_key"]} for k in state.ssh_keys]}

    @app.post("/ssh-keys")
    async def add_key(request: Request) -> Any:
        body = await request.json()
        if any(k["name"] == body["name"] for k in state.ssh_keys):
            return error(400, "global/duplicate", "An SSH key with this name already exists.")
        key = {"id": secrets.token_hex(8), "name": body["name"], "public_key": body["public_key"].strip()}
        state.ssh_keys.append(key)
        return {"data": key}

    @app.delete("/ssh-keys/{key_id}")
    async def delete_key(key_id: str) -> Any:
        state.ssh_keys = [k for k in state.ssh_keys if k["id"] != key_id]
        return {"data": {}}

    return app
