"""Each provider client against its emulator through the Provider interface, and the fact sheet's failures."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ftkit_remote import ssh
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.providers import (
    PROVIDERS,
    CapacityError,
    InstanceState,
    LaunchSpec,
    OfferGoneError,
    OfferQuery,
    Provider,
    ProvisioningFailed,
    make_provider,
)
from remote_testkit import provider_options

from ftkit.errors import AuthenticationError, RateLimitError


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _provider(server: EmulatorServer, **over: Any) -> Provider:
    return make_provider(server.state.provider, provider_options(server) | over)


def _spec(label: str = "ftkit-test") -> LaunchSpec:
    return LaunchSpec(label=label, ssh_public_key=ssh.public_key_line(ssh.load_or_create_key()), disk_gb=20)


async def _wait_state(p: Provider, iid: str, want: InstanceState, timeout: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        inst = await p.get(iid)
        if inst is not None and inst.state is want:
            return inst
        assert asyncio.get_running_loop().time() < deadline, f"never {want}: last {inst}"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- the state tables


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_state_table_is_exhaustive(name: str) -> None:
    cls = PROVIDERS[name][0]
    assert set(cls.vendor_statuses) == set(cls.state_table), "every documented vendor status is mapped, no more"
    assert cls.map_state("a-status-nobody-documented") is InstanceState.UNKNOWN  # never silently running


# ---------------------------------------------------------------- the common contract


def test_lifecycle_contract(emulator: EmulatorServer) -> None:
    """search → create → pending/starting → running with SSH → listed by label → destroyed (idempotent)."""

    async def main() -> None:
        p = _provider(emulator)
        offers = await p.search_offers(OfferQuery(disk_gb=20))
        assert offers and offers == sorted(offers, key=lambda o: o.price_per_hour)
        iid = await p.create(offers[0], _spec())
        first = await p.get(iid)
        assert first is not None and first.state in (InstanceState.PENDING, InstanceState.STARTING)
        inst = await _wait_state(p, iid, InstanceState.RUNNING)
        assert inst.ssh is not None and inst.label == "ftkit-test"
        assert [i.instance_id for i in await p.list("ftkit-")] == [iid]
        assert await p.list("other-") == []
        await p.destroy(iid)
        await p.destroy(iid)  # idempotent: not-found is success
        assert await p.get(iid) is None
        await p.aclose()

    run(main())


def test_search_filters(emulator: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(emulator)
        cheap = await p.search_offers(OfferQuery(disk_gb=20, max_price_per_hour=0.9))
        assert cheap and all(o.price_per_hour <= 0.9 for o in cheap)
        big = await p.search_offers(OfferQuery(disk_gb=20, min_gpu_ram_gb=40))
        assert big and all(o.gpu_ram_gb >= 40 for o in big)
        assert await p.search_offers(OfferQuery(disk_gb=20, max_price_per_hour=0.01)) == []
        await p.aclose()

    run(main())


def test_bad_key_is_an_authentication_error(emulator: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(emulator, api_key="wrong")
        with pytest.raises(AuthenticationError):
            await p.search_offers(OfferQuery(disk_gb=20))
        await p.aclose()

    run(main())


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_KEY")
    with pytest.raises(AuthenticationError, match="VAST_API_KEY"):
        make_provider("vast", {})


def test_api_key_never_in_repr_or_errors(vast: EmulatorServer) -> None:
    p = make_provider("vast", provider_options(vast) | {"api_key": "sekrit-123"})
    assert "sekrit-123" not in repr(p.config)  # type: ignore[attr-defined]

    async def main() -> None:
        with pytest.raises(AuthenticationError) as e:
            await p.search_offers(OfferQuery())
        assert "sekrit-123" not in str(e.value)
        await p.aclose()

    run(main())


# ---------------------------------------------------------------- vast


def test_vast_offer_gone_at_create(vast: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(vast)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        for fault in ("offer_gone", "offer_gone_410"):
            vast.state.faults.add("create", fault)
            with pytest.raises(OfferGoneError):
                await p.create(offer, _spec())
            vast.state.offers.append(dict(offer.raw) | {"id": int(offer.offer_id)})  # back on the market
        assert not vast.state.live()
        await p.aclose()

    run(main())


def test_vast_created_but_stopped_carries_the_id(vast: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(vast)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        vast.state.faults.add("create", "created_stopped")
        with pytest.raises(ProvisioningFailed) as e:
            await p.create(offer, _spec())
        iid = e.value.instance_id
        assert iid is not None and (await p.get(iid)).state is InstanceState.STOPPED  # type: ignore[union-attr]
        assert vast.state.instances[iid].cost(vast.state.clock.now() + 3600) > 0, "a stopped instance bills storage"
        await p.destroy(iid)
        await p.aclose()

    run(main())


@pytest.mark.parametrize(("fault", "state"), [("oci_error", InstanceState.FAILED), ("outbid", InstanceState.STOPPED),
                                              ("offline", InstanceState.FAILED)])
def test_vast_bad_instance_states(vast: EmulatorServer, fault: str, state: InstanceState) -> None:
    async def main() -> None:
        p = _provider(vast)
        vast.state.faults.add("instance", fault)
        iid = await p.create((await p.search_offers(OfferQuery(disk_gb=20)))[0], _spec())
        await asyncio.sleep(0.4)
        assert (await p.get(iid)).state is state  # type: ignore[union-attr]
        await p.destroy(iid)
        await p.aclose()

    run(main())


def test_vast_null_actual_status_is_pending(vast: EmulatorServer) -> None:
    vast.state.boot_s = 5.0

    async def main() -> None:
        p = _provider(vast)
        iid = await p.create((await p.search_offers(OfferQuery(disk_gb=20)))[0], _spec())
        inst = await p.get(iid)
        assert inst is not None and inst.raw_status is None and inst.state is InstanceState.PENDING
        await p.destroy(iid)
        await p.aclose()

    run(main())


def test_vast_429_without_retry_after_backs_off(vast: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(vast)
        vast.state.faults.add("any", "429", times=2)
        assert await p.search_offers(OfferQuery(disk_gb=20))  # retried through two 429s
        vast.state.faults.add("any", "429", times=10)
        with pytest.raises(RateLimitError):
            await p.search_offers(OfferQuery(disk_gb=20))
        await p.aclose()

    run(main())


def test_vast_per_endpoint_rate_limit(tmp_path: Any) -> None:
    """The emulator enforces minimum intervals; the client spaces its calls by backing off."""
    from ftkit_remote.emulators import vast as vast_emu
    from remote_testkit import start_emulator as _start

    state = vast_emu.VastState(tmp_path / "m", rate_scale=0.1)  # show instance: 0.2 s between calls
    server = _start(state, vast_emu.make_app(state))

    async def main() -> None:
        p = _provider(server)
        iid = await p.create((await p.search_offers(OfferQuery(disk_gb=20)))[0], _spec())
        for _ in range(4):
            await p.get(iid)
        assert state.rate.refused > 0  # it was refused and still succeeded
        await asyncio.sleep(0.35)
        await p.destroy(iid)
        await p.aclose()

    run(main())


def test_vast_lists_past_one_page(vast: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(vast)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        ids = [await p.create(offer, _spec(f"ftkit-page-{i}")) for i in range(27)]
        listed = await p.list("ftkit-page-")
        assert sorted(i.instance_id for i in listed) == sorted(ids)
        for iid in ids:
            await p.destroy(iid)
        await p.aclose()

    run(main())


# ---------------------------------------------------------------- runpod


def test_runpod_graphql_errors_with_http_200(runpod: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(runpod)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        for fault in ("no_capacity", "no_capacity_disk"):
            runpod.state.faults.add("create", fault)
            with pytest.raises(CapacityError, match="no longer any instances"):
                await p.create(offer, _spec())
        assert not runpod.state.live()
        await p.destroy("does-not-exist")  # "pod not found to terminate" is success
        assert await p.get("does-not-exist") is None
        await p.aclose()

    run(main())


def test_runpod_runtime_null_until_running(runpod: EmulatorServer) -> None:
    runpod.state.boot_s = 0.5

    async def main() -> None:
        p = _provider(runpod)
        iid = await p.create((await p.search_offers(OfferQuery(disk_gb=20)))[0], _spec())
        inst = await p.get(iid)
        assert inst is not None and inst.raw_status == "RUNNING" and inst.state is InstanceState.STARTING
        assert inst.ssh is None and inst.raw["runtime"] is None
        inst = await _wait_state(p, iid, InstanceState.RUNNING)
        assert inst.ssh is not None and inst.ssh.user == "root"
        await p.destroy(iid)
        await p.aclose()

    run(main())


def test_runpod_429_honours_retry_after(runpod: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(runpod)
        runpod.state.faults.add("any", "429")
        t0 = asyncio.get_running_loop().time()
        assert await p.search_offers(OfferQuery(disk_gb=20))
        assert asyncio.get_running_loop().time() - t0 >= 0.9  # waited Retry-After: 1, not the 0.05 s backoff
        await p.aclose()

    run(main())


def test_runpod_out_of_stock_type_has_no_offer(runpod: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(runpod)
        names = {o.gpu_name for o in await p.search_offers(OfferQuery(disk_gb=20))}
        assert "H100 SXM" not in names  # stockStatus null
        await p.aclose()

    run(main())


# ---------------------------------------------------------------- lambda


def test_lambda_capacity_disagrees_with_instance_types(lambda_: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(lambda_)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        lambda_.state.faults.add("create", "insufficient_capacity")
        with pytest.raises(CapacityError, match="capacity"):
            await p.create(offer, _spec())
        assert not lambda_.state.live()
        await p.aclose()

    run(main())


def test_lambda_unhealthy_is_failed_and_user_is_ubuntu(lambda_: EmulatorServer) -> None:
    async def main() -> None:
        p = _provider(lambda_)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        lambda_.state.faults.add("instance", "unhealthy")
        bad = await p.create(offer, _spec("ftkit-bad"))
        good = await p.create(offer, _spec("ftkit-good"))
        assert (await p.get(bad)).state is InstanceState.FAILED  # type: ignore[union-attr]
        inst = await _wait_state(p, good, InstanceState.RUNNING)
        assert inst.ssh is not None and inst.ssh.user == "ubuntu" and inst.ssh.port == lambda_.state.ssh_port
        assert len(lambda_.state.ssh_keys) == 1, "the key is registered once, by a hash name"
        for iid in (bad, good):
            await p.destroy(iid)
        await p.aclose()

    run(main())


def test_lambda_launch_rate_limit_is_kept_client_side(tmp_path: Any) -> None:
    from ftkit_remote.emulators import lambda_ as lambda_emu
    from remote_testkit import start_emulator as _start

    state = lambda_emu.LambdaState(tmp_path / "m", launch_interval_s=0.5)
    server = _start(state, lambda_emu.make_app(state))

    async def main() -> None:
        p = _provider(server, seconds_between_launches=0.5)
        offer = (await p.search_offers(OfferQuery(disk_gb=20)))[0]
        ids = [await p.create(offer, _spec(f"ftkit-{i}")) for i in range(2)]
        assert state.rate.refused == 0  # the client waited; the server never had to refuse
        for iid in ids:
            await p.destroy(iid)
        await p.aclose()

    run(main())


def test_ssh_host_provider_owns_nothing() -> None:
    async def main() -> None:
        p = make_provider("ssh", {"host": "127.0.0.1", "port": 2222, "user": "me"})
        (offer,) = await p.search_offers(OfferQuery())
        iid = await p.create(offer, _spec())
        inst = await p.get(iid)
        assert inst is not None and inst.state is InstanceState.RUNNING and inst.ssh is not None
        assert await p.list() == [] and not p.caps.rents
        await p.destroy(iid)

    run(main())


def test_redacted_key_from_the_registry_falls_back_to_the_environment(vast: EmulatorServer) -> None:
    async def main() -> None:
        p = make_provider("vast", provider_options(vast) | {"api_key": "<redacted>"})
        assert await p.search_offers(OfferQuery(disk_gb=20))  # the env key (test-key) was used
        await p.aclose()

    run(main())
