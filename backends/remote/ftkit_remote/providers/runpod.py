"""RunPod through its GraphQL API (the one runpod-python, SkyPilot and dstack use).

What the fact sheet says matters, and where it is handled here:

- GraphQL answers **HTTP 200 with an ``errors`` array** on client errors: every response is checked
  for ``errors`` and mapped (capacity text → :class:`CapacityError`, "not found" → gone);
- there is no per-machine offer: an offer is a GPU type in a cloud (``"<gpuTypeId>@SECURE"``); prices are
  per GPU per hour (× count) plus container disk at $0.10/GB/month;
- ``runtime`` is null until the container really runs, so RUNNING without runtime is STARTING; SSH is
  the ``runtime.ports`` entry with ``privatePort == 22`` and ``isIpPublic`` (the ssh.runpod.io proxy
  cannot exec nor SFTP, so it is never used);
- 429 carries ``Retry-After``; it is honoured;
- the pod holds ``RUNPOD_POD_ID`` / ``RUNPOD_API_KEY`` (pod-scoped): the dead-man switch deletes the pod
  through REST v1 with it.

Queries pass their input as GraphQL variables rather than inlined literals (no quoting problems,
runpod/runpod-python#150).
"""

from __future__ import annotations

import builtins  # `list` is also a method name of Provider
from typing import Any, ClassVar

import httpx
from pydantic import Field

from ftkit.backend import BackendConfig
from ftkit.errors import AuthenticationError
from ftkit_remote.providers.base import (
    LABEL_PREFIX,
    CapacityError,
    Instance,
    InstanceState,
    LaunchSpec,
    Offer,
    OfferQuery,
    Provider,
    ProviderCaps,
    ProviderError,
    SshEndpoint,
    Tier,
    python_http_delete,
)
from ftkit_remote.providers.http import HttpApi, RetryPolicy, json_or_text

S = InstanceState
DISK_USD_PER_GB_MONTH = 0.10  # container disk while running (RunPod pricing page)

_POD_FIELDS = """id name desiredStatus costPerHr lastStatusChange gpuCount
  runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
  machine { podHostId gpuDisplayName }"""
Q_GPU_TYPES = """query GpuTypes($input: GpuTypeFilter, $lowest: GpuLowestPriceInput) {
  gpuTypes(input: $input) { id displayName memoryInGb maxGpuCount secureCloud communityCloud
    securePrice communityPrice secureSpotPrice communitySpotPrice
    lowestPrice(input: $lowest) { minimumBidPrice uninterruptablePrice stockStatus } } }"""
Q_POD = f"query Pod($input: PodFilter!) {{ pod(input: $input) {{ {_POD_FIELDS} }} }}"
Q_PODS = f"query Pods {{ myself {{ pods {{ {_POD_FIELDS} }} }} }}"
M_DEPLOY = "mutation Deploy($input: PodFindAndDeployOnDemandInput!) { podFindAndDeployOnDemand(input: $input) { id machineId } }"  # noqa: E501
M_SPOT = "mutation Spot($input: PodRentInterruptableInput!) { podRentInterruptable(input: $input) { id machineId } }"
M_TERMINATE = "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }"

_CAPACITY_TEXT = "no longer any instances available"


class RunPodConfig(BackendConfig):
    """Options of the RunPod provider."""

    api_key: str = Field(description="RunPod API key (env RUNPOD_API_KEY when empty).", repr=False)
    base_url: str = Field(
        default="https://api.runpod.io", description="GraphQL root; the endpoint is BASE/graphql (RUNPOD_API_BASE_URL)."
    )
    rest_url: str = Field(default="https://rest.runpod.io/v1", description="REST v1 root (the pod's self-destroy).")
    image: str = Field(
        default="runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04", description="Container image."
    )
    cloud: str = Field(default="SECURE", pattern="^(SECURE|COMMUNITY)$", description="SECURE has public IPs.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of API calls.")


class RunPodProvider(Provider):
    """RunPod pods through GraphQL."""

    name: ClassVar[str] = "runpod"
    caps: ClassVar[ProviderCaps] = ProviderCaps(
        can_stop=True, interruptible=True, self_destroy=True, ready_deadline_s=1200.0
    )
    # desiredStatus values (GraphQL / REST v1) and the v2 status values (fact sheet §2.3).
    vendor_statuses: ClassVar[tuple[str | None, ...]] = (
        "CREATED", "PROVISIONING", "STARTING", "RUNNING", "RESTARTING", "EXITED", "ERROR", "DEAD", "TERMINATED",
    )  # fmt: skip
    state_table: ClassVar[dict[str | None, InstanceState]] = {
        "CREATED": S.PENDING,
        "PROVISIONING": S.PENDING,
        "STARTING": S.STARTING,
        "RUNNING": S.RUNNING,  # and only when runtime is non-null, see _instance
        "RESTARTING": S.STARTING,
        "EXITED": S.STOPPED,
        "ERROR": S.FAILED,
        "DEAD": S.FAILED,
        "TERMINATED": S.TERMINATED,
    }

    def __init__(self, config: RunPodConfig) -> None:
        self.config = config
        self._api = HttpApi("runpod", config.base_url, config.api_key, config.retry, _map_http_error)

    async def aclose(self) -> None:
        await self._api.aclose()

    async def graphql(self, query: str, variables: dict[str, Any] | None = None, idempotent: bool = True) -> Any:
        """One GraphQL call; ``errors`` in a 200 answer become ftkit errors."""
        resp = await self._api.request(
            "POST", "/graphql", json={"query": query, "variables": variables or {}}, idempotent=idempotent
        )
        body = resp.json()
        if body.get("errors"):
            raise _map_graphql_errors(body["errors"])
        return body.get("data") or {}

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        data = await self.graphql(Q_GPU_TYPES, {"input": {}, "lowest": {"gpuCount": query.num_gpus}})
        secure = self.config.cloud == "SECURE"
        offers = []
        for g in data.get("gpuTypes") or []:
            if query.gpu_names and g["id"] not in query.gpu_names and g.get("displayName") not in query.gpu_names:
                continue
            if query.min_gpu_ram_gb is not None and (g.get("memoryInGb") or 0) < query.min_gpu_ram_gb:
                continue
            if (g.get("maxGpuCount") or 0) < query.num_gpus or not g.get("secureCloud" if secure else "communityCloud"):
                continue
            lowest = g.get("lowestPrice") or {}
            if not lowest.get("stockStatus"):
                continue  # no stock for this count
            spot = query.tier is Tier.INTERRUPTIBLE
            key = ("secure" if secure else "community") + ("SpotPrice" if spot else "Price")
            per_gpu = g.get(key)
            if not per_gpu:
                continue
            price = per_gpu * query.num_gpus + query.disk_gb * DISK_USD_PER_GB_MONTH / 720
            if query.max_price_per_hour is not None and price > query.max_price_per_hour:
                continue
            offers.append(
                Offer(
                    provider=self.name,
                    offer_id=f"{g['id']}@{self.config.cloud}",
                    gpu_name=g.get("displayName") or g["id"],
                    num_gpus=query.num_gpus,
                    gpu_ram_gb=float(g.get("memoryInGb") or 0),
                    price_per_hour=round(price, 6),
                    disk_gb=query.disk_gb,
                    availability=lowest.get("stockStatus"),
                    tier=query.tier,
                    raw=g,
                )
            )
        return sorted(offers, key=lambda o: o.price_per_hour)[: query.limit]

    async def create(self, offer: Offer, spec: LaunchSpec) -> str:
        gpu_type, _, cloud = offer.offer_id.partition("@")
        env = {**spec.env, "PUBLIC_KEY": spec.ssh_public_key}
        inp: dict[str, Any] = {
            "name": spec.label,
            "imageName": spec.image or self.config.image,
            "gpuTypeId": gpu_type,
            "gpuCount": offer.num_gpus,
            "cloudType": cloud or self.config.cloud,
            "containerDiskInGb": spec.disk_gb,
            "volumeInGb": 0,
            "ports": "22/tcp",
            "startSsh": True,
            "supportPublicIp": True,
            "env": [{"key": k, "value": v} for k, v in env.items()],
        }
        if offer.tier is Tier.INTERRUPTIBLE:
            inp["bidPerGpu"] = spec.bid_per_hour or offer.price_per_hour / max(offer.num_gpus, 1)
            data = await self.graphql(M_SPOT, {"input": inp}, idempotent=False)
            pod = data.get("podRentInterruptable")
        else:
            data = await self.graphql(M_DEPLOY, {"input": inp}, idempotent=False)
            pod = data.get("podFindAndDeployOnDemand")
        if not pod or not pod.get("id"):
            raise CapacityError("runpod: create returned no pod (no capacity for this GPU type)")
        return str(pod["id"])

    async def get(self, instance_id: str) -> Instance | None:
        try:
            data = await self.graphql(Q_POD, {"input": {"podId": instance_id}})
        except _PodNotFound:
            return None
        pod = data.get("pod")
        return self._instance(pod) if pod else None

    async def list(self, label_prefix: str = LABEL_PREFIX) -> list[Instance]:
        data = await self.graphql(Q_PODS)
        pods = (data.get("myself") or {}).get("pods") or []
        return [self._instance(p) for p in pods if (p.get("name") or "").startswith(label_prefix)]

    async def destroy(self, instance_id: str) -> None:
        try:
            await self.graphql(M_TERMINATE, {"input": {"podId": instance_id}})
        except _PodNotFound:
            return  # "pod not found to terminate": already gone

    def self_destroy_command(self) -> builtins.list[str]:
        url = self.config.rest_url.rstrip("/") + "/pods/{RUNPOD_POD_ID}"
        return python_http_delete(url, "RUNPOD_API_KEY", ("RUNPOD_POD_ID",))

    def _instance(self, p: dict[str, Any]) -> Instance:
        status = p.get("desiredStatus")
        state = self.map_state(status)
        runtime = p.get("runtime")
        ssh = None
        if state is S.RUNNING:
            if runtime is None:
                state = S.STARTING  # the image is still being pulled / the container is not up
            else:
                for port in runtime.get("ports") or []:
                    if port.get("privatePort") == 22 and port.get("isIpPublic"):
                        ssh = SshEndpoint(str(port["ip"]), int(port["publicPort"]), "root")
        return Instance(
            provider=self.name,
            instance_id=str(p["id"]),
            label=p.get("name"),
            state=state,
            raw_status=status,
            ssh=ssh,
            price_per_hour=p.get("costPerHr"),
            raw=p,
        )


class _PodNotFound(ProviderError):
    pass


def _map_graphql_errors(errors: list[dict[str, Any]]) -> Exception:
    msg = "; ".join(str(e.get("message", e)) for e in errors)
    low = msg.lower()
    if _CAPACITY_TEXT in low:
        return CapacityError(f"runpod: {msg}", 200)
    if "not found" in low:
        return _PodNotFound(f"runpod: {msg}", 200)
    if "unauthorized" in low or "api key" in low:
        return AuthenticationError(f"runpod: {msg}")
    return ProviderError(f"runpod: {msg}", 200)


def _map_http_error(resp: httpx.Response) -> Exception:
    body = json_or_text(resp)
    if isinstance(body, dict) and body.get("errors"):
        return _map_graphql_errors(body["errors"])
    return ProviderError(f"runpod: HTTP {resp.status_code}: {body}", resp.status_code)
