"""GPU providers behind one interface: ``vast``, ``runpod``, ``lambda`` and ``ssh`` (a host you have).

:func:`make_provider` builds one from its options; API keys left empty are read from the
provider's usual environment variable (``VAST_API_KEY``, ``RUNPOD_API_KEY``, ``LAMBDA_API_KEY``).
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ValidationError

from ftkit.errors import AuthenticationError, ConfigError
from ftkit_remote.providers.base import (
    LABEL_PREFIX,
    CapacityError,
    Instance,
    InstanceState,
    LaunchSpec,
    Offer,
    OfferGoneError,
    OfferQuery,
    Provider,
    ProviderCaps,
    ProviderError,
    ProvisioningFailed,
    SshEndpoint,
    Tier,
)
from ftkit_remote.providers.lambda_ import LambdaConfig, LambdaProvider
from ftkit_remote.providers.runpod import RunPodConfig, RunPodProvider
from ftkit_remote.providers.ssh import SshHostConfig, SshHostProvider
from ftkit_remote.providers.vast import VastConfig, VastProvider

PROVIDERS: dict[str, tuple[type[Provider], type[BaseModel], str | None]] = {
    "vast": (VastProvider, VastConfig, "VAST_API_KEY"),
    "runpod": (RunPodProvider, RunPodConfig, "RUNPOD_API_KEY"),
    "lambda": (LambdaProvider, LambdaConfig, "LAMBDA_API_KEY"),
    "ssh": (SshHostProvider, SshHostConfig, None),
}
_URL_ENV = {"vast": "VAST_URL", "runpod": "RUNPOD_API_BASE_URL"}
_REDACTED = ("<redacted>", "**********")


def make_provider(name: str, options: dict[str, Any] | None = None) -> Provider:
    """The provider ``name`` configured with ``options`` (and its environment variables).

    Raises:
        ConfigError: unknown provider or bad options.
        AuthenticationError: no API key in the options nor in the environment.
    """
    config = provider_config(name, options)
    return PROVIDERS[name][0](config)  # type: ignore[call-arg]


def provider_config(name: str, options: dict[str, Any] | None = None, need_key: bool = True) -> BaseModel:
    """The validated options of provider ``name``; ``need_key=False`` checks them without an API key at hand.

    Raises:
        ConfigError: unknown provider or bad options, as ``[remote.NAME] option: problem``.
        AuthenticationError: ``need_key`` and no API key in the options nor in the environment.
    """
    if name not in PROVIDERS:
        raise ConfigError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    _, config_cls, key_env = PROVIDERS[name]
    opts = dict(options or {})
    if opts.get("api_key") in _REDACTED:  # the registry stores options with secrets redacted
        opts.pop("api_key")
    if key_env is not None and not opts.get("api_key"):
        opts["api_key"] = os.environ.get(key_env, "") or ("" if need_key else "not-checked-here")
        if not opts["api_key"]:
            raise AuthenticationError(f"{name}: no API key; set {key_env} or the provider's api_key option")
    if name in _URL_ENV and "base_url" not in opts and os.environ.get(_URL_ENV[name]):
        opts["base_url"] = os.environ[_URL_ENV[name]]
    try:
        return config_cls.model_validate(opts)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"[remote.{name}] {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


__all__ = [
    "LABEL_PREFIX",
    "PROVIDERS",
    "CapacityError",
    "Instance",
    "InstanceState",
    "LaunchSpec",
    "Offer",
    "OfferGoneError",
    "OfferQuery",
    "Provider",
    "ProviderCaps",
    "ProviderError",
    "ProvisioningFailed",
    "SshEndpoint",
    "Tier",
    "make_provider",
    "provider_config",
]
