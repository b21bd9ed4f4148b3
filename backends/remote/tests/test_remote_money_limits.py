"""Limits that bound the bill, at the remote backend's edges: provider options and the offers' prices."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import LeaseLedger
from remote_testkit import provider_options, remote_options

from ftkit import FineTuneJob, JobSpec, get_backend
from ftkit.errors import ConfigError
from ftkit.events import JobStatus


def _spec(data_file: Path, max_cost: float | None = None) -> JobSpec:
    return JobSpec(task="classification", train=data_file, labels=["ham", "spam"], max_cost=max_cost)


@pytest.mark.parametrize(("option", "value"), [("retry", {"timeout_s": math.inf}), ("retry", {"max_wait_s": 0}),
                                               ("seconds_between_launches", math.nan)])  # fmt: skip
def test_provider_option_limits_are_refused_before_anything_is_rented(
    lambda_: EmulatorServer, data_file: Path, option: str, value: object
) -> None:
    opts = provider_options(lambda_) | {option: value}
    with pytest.raises(ConfigError, match=rf"^\[remote\.lambda\] {option}"):
        FineTuneJob.create(_spec(data_file), backend="remote", options=remote_options(lambda_, provider_options=opts))
    assert not lambda_.state.instances and not LeaseLedger().all()


def test_provider_option_limits_are_refused_at_parse_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ftkit` refuses a broken provider limit where it reads the config, before any key or network is needed."""
    monkeypatch.delenv("VAST_API_KEY")
    backend = get_backend("remote")
    with pytest.raises(ConfigError, match=r"^\[remote\.vast\] retry\.timeout_s: Input should be a finite number$"):
        backend.parse_config({"provider": "vast", "provider_options": {"retry": {"timeout_s": "inf"}}})
    with pytest.raises(ConfigError, match=r"^\[remote\.ssh\] price_per_hour: "):
        backend.parse_config({"provider": "ssh", "provider_options": {"host": "h", "price_per_hour": -1}})
    backend.parse_config({"provider": "vast", "provider_options": {"retry": {"timeout_s": 5}}})  # no key: fine here


@pytest.mark.parametrize(("option", "value"), [("max_duration_hours", 1e300), ("deadman_check_s", 1e9),
                                               ("finished_grace_s", 1e30)])  # fmt: skip
def test_a_finite_limit_too_big_to_bound_anything_is_refused(option: str, value: float) -> None:
    """1e300 hours is finite but no deadline: the switch's shell arithmetic overflows and `sleep 1e9` never wakes."""
    with pytest.raises(ConfigError, match=rf"^\[remote\] {option}: Input should be less than or equal to"):
        get_backend("remote").parse_config({"provider": "vast", option: value})


def test_an_offer_with_a_price_the_guards_cannot_compare_is_never_taken(vast: EmulatorServer, data_file: Path) -> None:
    """A marketplace row priced below zero would pass any max_cost check: it is skipped, the next one taken."""
    vast.state.offers[0]["dph_base"] = -5.0
    job = FineTuneJob.create(_spec(data_file, max_cost=5.0), backend="remote", options=remote_options(vast))
    job.start()
    lease = LeaseLedger().get("ftkit-" + job.id)
    assert lease is not None and lease.offer["offer_id"] != "7001" and lease.price_per_hour > 0
    assert job.wait(poll_interval=0.2, timeout=60) is JobStatus.SUCCEEDED
    assert "offer 7001 skipped" in "\n".join(e.message for e in job.events())


def test_no_offer_with_a_usable_price_is_a_config_error(vast: EmulatorServer, data_file: Path) -> None:
    for offer in vast.state.offers:
        offer["dph_base"] = -1.0
    with pytest.raises(ConfigError, match="no vast offer matches"):
        FineTuneJob.create(_spec(data_file), backend="remote", options=remote_options(vast))
    assert not vast.state.instances
