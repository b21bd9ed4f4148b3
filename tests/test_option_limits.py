"""Every numeric option of every installed backend is finite, and above zero unless 0 means something.

The fields are found from the models themselves (each installed backend's package is imported and
every :class:`~ftkit.backend.BackendConfig` subclass it defines is walked, the remote providers'
option models included), so an option added later is held to the same rule without editing this test.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError

from ftkit.backend import BackendConfig, get_backend, installed_backends, load_backend_class
from ftkit.errors import ConfigError

BAD_ALWAYS = (math.inf, -math.inf, math.nan, -1)


def _installed() -> list[str]:
    """Backends installed as distributions (not the fakes other tests register in this process)."""
    return sorted(name for name, info in installed_backends().items() if info.distribution is not None)


def _packages() -> dict[str, str]:
    """Installed backend name → the top-level package its entry point lives in."""
    infos = installed_backends()
    return {name: infos[name].target.split(":")[0].split(".")[0] for name in _installed()}


def _config_models() -> list[tuple[str, type[BackendConfig]]]:
    """(backend, model) for every BackendConfig subclass defined in an installed backend's package."""
    packages = _packages()
    for name in packages:
        load_backend_class(name)  # imports the backend, its config and (remote) its providers
    found: list[tuple[str, type[BackendConfig]]] = []
    todo = list(BackendConfig.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        for name, package in packages.items():
            if cls.__module__ == package or cls.__module__.startswith(package + "."):
                found.append((name, cls))
    return sorted(found, key=lambda x: (x[0], x[1].__qualname__))


def _numeric(annotation: Any) -> bool:
    """int or float, possibly optional or in a union with other types (never bool)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_numeric(a) for a in typing.get_args(annotation))
    return False


def _minimal(model: type[BaseModel]) -> dict[str, Any]:
    """Values for the model's required fields, so one option at a time can be varied."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if not field.is_required():
            continue
        ann = field.annotation
        if typing.get_origin(ann) is Literal:
            out[name] = typing.get_args(ann)[0]
        elif ann is str:
            out[name] = "x"
        else:
            pytest.fail(f"{model.__qualname__}.{name}: teach _minimal a value for a required {ann}")
    return out


MODELS = _config_models()
CASES = [
    pytest.param(backend, model, field, id=f"{backend}-{model.__qualname__}.{field}")
    for backend, model in MODELS
    for field, info in model.model_fields.items()
    if _numeric(info.annotation)
]


def test_every_installed_backend_is_walked() -> None:
    backends = {b for b, _ in MODELS}
    assert backends == set(_installed()), "each installed backend's options model is found"
    if "remote" in backends:  # the providers' own options models are found too, retry policy included
        names = {m.__qualname__ for b, m in MODELS if b == "remote"}
        assert {"RemoteConfig", "VastConfig", "RunPodConfig", "LambdaConfig", "SshHostConfig", "RetryPolicy"} <= names
    assert len(CASES) >= 20


@pytest.mark.parametrize(("backend", "model", "field"), CASES)
def test_numeric_option_must_be_finite_and_positive(backend: str, model: type[BackendConfig], field: str) -> None:
    base = _minimal(model)
    model.model_validate(base)  # the defaults themselves are valid
    bad: list[Any] = list(BAD_ALWAYS)
    if field not in model.zero_allowed:
        bad.append(0)
    for value in bad:
        with pytest.raises(ValidationError) as err:
            model.model_validate(base | {field: value})
        assert err.value.errors()[0]["loc"][0] == field, f"{field}={value} refused for the right option"


@pytest.mark.parametrize(("backend", "model"), MODELS, ids=[f"{b}-{m.__qualname__}" for b, m in MODELS])
def test_zero_allowed_names_real_numeric_options(backend: str, model: type[BackendConfig]) -> None:
    for name, why in model.zero_allowed.items():
        assert name in model.model_fields and _numeric(model.model_fields[name].annotation), name
        assert why.strip(), f"{model.__qualname__}.{name}: say why 0 is meaningful"
        model.model_validate(_minimal(model) | {name: 0})


@pytest.mark.parametrize("backend", _installed())
def test_config_error_names_backend_and_option(backend: str) -> None:
    """What the user sees: one line with the backend and the option, at parse time."""
    b = get_backend(backend)
    base = _minimal(b.config_model)
    numeric = [f for f, info in b.config_model.model_fields.items() if _numeric(info.annotation)]
    if not numeric:
        pytest.skip(f"{backend} has no numeric option")
    for value in (math.inf, math.nan, -5):
        with pytest.raises(ConfigError, match=rf"^\[{backend}\] {numeric[0]}: ") as err:
            b.parse_config(base | {numeric[0]: value})
        assert "\n" not in str(err.value)


def test_issue_17_max_duration_inf_is_refused() -> None:
    """The report: `max_duration_hours = inf` was accepted, and the machine then outlived the client."""
    if "remote" not in _installed():
        pytest.skip("ftkit-remote is not installed")
    b = get_backend("remote")
    for value in ("inf", math.inf, "nan", 0, -1):
        with pytest.raises(ConfigError, match=r"\[remote\] max_duration_hours: "):
            b.parse_config({"provider": "vast", "max_duration_hours": value})
