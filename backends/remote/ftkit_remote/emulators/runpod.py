"""A loopback emulator of RunPod's GraphQL API (plus the REST v1 pod delete), readable as documentation.

``POST /graphql`` with ``{"query", "variables"}``. This is not a GraphQL engine: it routes on the root
field named in the query (``gpuTypes``, ``pod``, ``myself``, ``podFindAndDeployOnDemand``,
``podRentInterruptable``, ``podTerminate``, ``podStop``), reads the input from ``variables.input``,
and answers the full objects whatever the selection set. Like RunPod, it answers client errors with
**HTTP 200 and an ``errors`` array** (capacity, not found). ``DELETE /v1/pods/{id}`` is REST v1, used
by the pod's own dead-man switch with the pod-scoped ``RUNPOD_API_KEY``.

A pod has ``desiredStatus: RUNNING`` from the start but ``runtime: null`` until its container runs
(``boot_s``); the SSH port (``runtime.ports``, ``privatePort 22``, ``isIpPublic``) then answers after
``sshd_delay_s``. Billing: GPU price × count per second while running, container disk at $0.10/GB/month.

Faults: ``create``: ``no_capacity``, ``no_capacity_disk``; ``instance``: ``stuck_provisioning``
(runtime never appears), ``exited`` (the container exits), ``spot_killed``; ``any``: ``429`` (with
``Retry-After: 1``) and ``500``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ftkit_remote.emulators.common import EmuInstance, EmulatorState

CAPACITY = "There are no longer any instances available with the requested specifications. Please refresh and try again."  # noqa: E501
_ROOTS = ("podFindAndDeployOnDemand", "podRentInterruptable", "podTerminate", "podStop", "gpuTypes", "myself", "pod")


def default_gpu_types() -> list[dict[str, Any]]:
    """Three GPU types; prices per GPU per hour."""
    return [
        {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24, "maxGpuCount": 8,
         "secureCloud": True, "communityCloud": True, "securePrice": 0.69, "communityPrice": 0.44,
         "secureSpotPrice": 0.35, "communitySpotPrice": 0.22, "stock": "High"},
        {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 PCIe", "memoryInGb": 80, "maxGpuCount": 8,
         "secureCloud": True, "communityCloud": True, "securePrice": 1.64, "communityPrice": 1.19,
         "secureSpotPrice": 0.82, "communitySpotPrice": 0.6, "stock": "Medium"},
        {"id": "NVIDIA H100 80GB HBM3", "displayName": "H100 SXM", "memoryInGb": 80, "maxGpuCount": 8,
         "secureCloud": True, "communityCloud": False, "securePrice": 2.99, "communityPrice": None,
         "secureSpotPrice": 1.5, "communitySpotPrice": None, "stock": None},
    ]  # fmt: skip


class RunPodState(EmulatorState):
    """A RunPod account."""

    provider = "runpod"

    def __init__(self, workdir: Path, **kw: Any) -> None:
        super().__init__(workdir, **kw)
        self.gpu_types = default_gpu_types()

    def pod(self, inst: EmuInstance) -> dict[str, Any]:
        """The pod as ``pod(input: {podId})`` returns it now."""
        now = self.clock.now()
        desired = "EXITED" if inst.stopped or inst.failed else "RUNNING"
        runtime = None
        if inst.is_running(now):
            sb = inst.sandbox
            runtime = {"uptimeInSeconds": int(now - (inst.running_since() or now)), "ports": [
                {"ip": sb.host, "isIpPublic": True, "privatePort": 22, "publicPort": sb.port, "type": "tcp"}]}
        return inst.fields | {"id": inst.id, "name": inst.label, "desiredStatus": desired, "runtime": runtime,
                              "lastStatusChange": f"{desired} at {inst.created_at}"}  # fmt: skip


def make_app(state: RunPodState) -> FastAPI:
    """The FastAPI app of the emulator."""
    app = FastAPI(title="RunPod emulator")

    def gql_error(message: str) -> JSONResponse:
        return JSONResponse({"errors": [{"message": message, "path": []}], "data": None}, status_code=200)

    @app.middleware("http")
    async def gate(request: Request, call_next: Any) -> Response:
        state.requests.append((request.method, request.url.path))
        pod_id = request.url.path.rstrip("/").split("/")[-1]
        if not state.authorized(request.headers.get("authorization"), request.query_params.get("api_key"), pod_id):
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        fault = state.faults.take("any")
        if fault == "429":
            return JSONResponse({"type": "about:blank", "title": "Too Many Requests", "status": 429},
                                status_code=429, headers={"Retry-After": "1"})  # fmt: skip
        if fault == "500":
            return JSONResponse({"errors": [{"message": "Something went wrong"}]}, status_code=500)
        return await call_next(request)

    @app.post("/graphql")
    async def graphql(request: Request) -> Any:
        body = await request.json()
        query, variables = body.get("query", ""), body.get("variables") or {}
        root = next((r for r in _ROOTS if re.search(rf"\b{r}\s*[({{]", query)), None)
        inp = variables.get("input") or {}
        if root == "gpuTypes":
            count = int((variables.get("lowest") or {}).get("gpuCount", 1))
            return {"data": {"gpuTypes": [
                {k: v for k, v in g.items() if k != "stock"} | {"lowestPrice": {
                    "minimumBidPrice": g["secureSpotPrice"], "uninterruptablePrice": g["securePrice"],
                    "stockStatus": g["stock"] if count <= g["maxGpuCount"] else None}}
                for g in state.gpu_types]}}  # fmt: skip
        if root in ("podFindAndDeployOnDemand", "podRentInterruptable"):
            return await deploy(root, inp)
        if root == "pod":
            inst = state.instances.get(str(inp.get("podId")))
            alive = inst is not None and inst.destroyed_at is None
            return {"data": {"pod": state.pod(inst) if alive else None}}  # type: ignore[arg-type]
        if root == "myself":
            return {"data": {"myself": {"pods": [state.pod(i) for i in state.live()]}}}
        if root in ("podTerminate", "podStop"):
            inst = state.instances.get(str(inp.get("podId")))
            if inst is None or inst.destroyed_at is not None:
                return gql_error("pod not found to terminate")
            if root == "podStop":
                inst.stopped = True
                return {"data": {"podStop": {"id": inst.id, "desiredStatus": "EXITED"}}}
            await state.destroy(inst)
            return {"data": {"podTerminate": None}}
        return gql_error(f"Cannot query field: {query[:60]!r}")

    async def deploy(root: str, inp: dict[str, Any]) -> Any:
        fault = state.faults.take("create")
        if fault == "no_capacity":
            return gql_error(CAPACITY)
        if fault == "no_capacity_disk":
            return gql_error(CAPACITY.replace("specifications.", "specifications with enough disk space."))
        gpu = next((g for g in state.gpu_types if g["id"] == inp.get("gpuTypeId")), None)
        if gpu is None or not gpu["stock"]:
            return gql_error(CAPACITY)
        if not inp.get("imageName"):
            return gql_error("imageName is required")
        count = int(inp.get("gpuCount", 1))
        spot = root == "podRentInterruptable"
        price = float((inp.get("bidPerGpu") if spot else gpu["securePrice"]) or 0.0) * count
        disk = float(inp.get("containerDiskInGb", 50)) + float(inp.get("volumeInGb", 0))
        env = {e["key"]: e["value"] for e in inp.get("env", [])}
        inst = state.new_instance(
            str(inp.get("name", "")), price, disk * 0.10 / 720, env.get("PUBLIC_KEY", ""), env,
            imageName=inp["imageName"], gpuCount=count, costPerHr=price, machineId=f"m-{gpu['id'][:4]}",
            machine={"podHostId": "host", "gpuDisplayName": gpu["displayName"]}, interruptible=spot,
        )  # fmt: skip
        inst.sandbox.env |= {"RUNPOD_POD_ID": inst.id, "RUNPOD_API_KEY": inst.scoped_key,
                             "RUNPOD_GPU_COUNT": str(count)}  # fmt: skip
        inst.sandbox.gpu_name, inst.sandbox.num_gpus = gpu["id"], count
        inst.sandbox.gpu_ram_mib = gpu["memoryInGb"] * 1024
        inst_fault = state.faults.take("instance")
        inst.stuck = inst_fault == "stuck_provisioning"
        inst.stopped = inst_fault in ("exited", "spot_killed")
        return {"data": {root: {"id": inst.id, "imageName": inp["imageName"], "machineId": inst.fields["machineId"]}}}

    @app.delete("/v1/pods/{pod_id}")
    async def rest_delete(pod_id: str) -> Any:
        inst = state.instances.get(pod_id)
        if inst is None or inst.destroyed_at is not None:
            return JSONResponse({"error": "pod not found"}, status_code=404)
        await state.destroy(inst)
        return Response(status_code=204)

    return app
