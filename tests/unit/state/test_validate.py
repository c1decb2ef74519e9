from __future__ import annotations

import pytest

from agents.state.objects import (
    ContainerSpec,
    EndpointSpec,
    PortConfig,
    ResolutionMode,
    SecretSpec,
    ServiceSpec,
    TaskSpec,
)
from agents.state.validate import (
    is_valid_id,
    validate_secret_name,
    validate_secret_spec,
    validate_service_name,
    validate_service_spec,
)

DNS = "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component"
SECRET = (
    "rpc error: code = InvalidArgument desc = invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, "
    "and the start and end character must be [a-zA-Z0-9]"
)


@pytest.mark.parametrize("name", ["web", "Web1", "my-app_2", "a", "a" * 63, "x--y", "x_-_y"])
def test_service_names_ok(name: str) -> None:
    assert validate_service_name(name) is None


@pytest.mark.parametrize(
    ("name", "err"),
    [
        ("", "rpc error: code = InvalidArgument desc = meta: name must be provided"),
        ("-web", DNS),
        ("web-", DNS),
        ("my.app", DNS),
        ("web app", DNS),
        ("a" * 64, "rpc error: code = InvalidArgument desc = name must be 63 characters or fewer"),
    ],
)
def test_service_names_bad(name: str, err: str) -> None:
    assert validate_service_name(name) == err


def test_secret_names() -> None:
    assert validate_secret_name("db.password-v1_2") is None
    assert validate_secret_name("a" * 64) is None
    assert validate_secret_name("a" * 65) == SECRET
    assert validate_secret_name(".hidden") == SECRET
    assert validate_secret_name("x.") == SECRET
    assert validate_secret_name("") == "rpc error: code = InvalidArgument desc = name must be provided"
    assert validate_secret_spec(SecretSpec(name="s", data=b"")) == (
        "rpc error: code = InvalidArgument desc = secret data must be larger than 0 and less than 512000 bytes"
    )
    assert validate_secret_spec(SecretSpec(name="s", data=b"x")) is None


def test_service_spec() -> None:
    ok = ServiceSpec(name="web", task_template=TaskSpec(container=ContainerSpec(image="nginx")))
    assert validate_service_spec(ok) is None
    assert validate_service_spec(ServiceSpec(name="web")) == (
        "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided"
    )
    dup = ServiceSpec(
        name="web",
        task_template=TaskSpec(container=ContainerSpec(image="nginx")),
        endpoint_spec=EndpointSpec(ports=[PortConfig(target_port=80, published_port=8080)] * 2),
    )
    assert validate_service_spec(dup) == (
        "rpc error: code = InvalidArgument desc = EndpointSpec: duplicate published ports provided"
    )
    dns = ServiceSpec(
        name="web",
        task_template=TaskSpec(container=ContainerSpec(image="nginx")),
        endpoint_spec=EndpointSpec(mode=ResolutionMode.DNSRR, ports=[PortConfig(target_port=80)]),
    )
    assert validate_service_spec(dns) is not None


def test_ids() -> None:
    assert is_valid_id("0123456789abcdefghijklmno")
    assert not is_valid_id("0123456789ABCDEFGHIJKLMNO") and not is_valid_id("abc")
