"""Spec validation with Docker's (SwarmKit control API's) error texts; the API turns them into 400s.

Each validator returns ``None`` when the input is fine, else the message Docker prints, e.g.
``rpc error: code = InvalidArgument desc = name must be valid as a DNS name component``.
Rules follow SwarmKit's controlapi: services and networks use DNS-label names (letters/digits, ``-`` and
``_`` only between alphanumerics, no dots, at most 63 characters); secrets allow ``.`` too and up to 64.
Names are unique case-insensitively (the store enforces that, not these functions).
"""

from __future__ import annotations

import re

from agents.state.objects import (
    ID_LENGTH,
    ContainerSpec,
    EndpointSpec,
    ResolutionMode,
    RestartPolicy,
    SecretSpec,
    ServiceSpec,
    UpdateConfig,
)

_DNS_NAME = re.compile(r"[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*")
_SECRET_NAME = re.compile(r"[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?")
_ID = re.compile(rf"[0-9a-z]{{{ID_LENGTH}}}")

MAX_SECRET_SIZE = 500 * 1024
"""SwarmKit's limit on secret data (bytes, exclusive)."""


def invalid_argument(desc: str) -> str:
    """Format ``desc`` the way Docker relays a SwarmKit InvalidArgument error."""
    return f"rpc error: code = InvalidArgument desc = {desc}"


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def validate_dns_name(name: str) -> str | None:
    """Service and network names (SwarmKit ``validateAnnotations``)."""
    if name == "":
        return invalid_argument("meta: name must be provided")
    if _DNS_NAME.fullmatch(name) is None:
        return invalid_argument("name must be valid as a DNS name component")
    if len(name) > 63:
        return invalid_argument("name must be 63 characters or fewer")
    return None


validate_service_name = validate_dns_name
validate_network_name = validate_dns_name


def validate_secret_name(name: str) -> str | None:
    if name == "":
        return invalid_argument("name must be provided")
    if len(name) > 64 or _SECRET_NAME.fullmatch(name) is None:
        return invalid_argument(
            "invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9]"
        )
    return None


def validate_secret_spec(spec: SecretSpec) -> str | None:
    err = validate_secret_name(spec.name)
    if err is not None:
        return err
    if spec.driver is None and not 0 < len(spec.data) < MAX_SECRET_SIZE:
        return invalid_argument(f"secret data must be larger than 0 and less than {MAX_SECRET_SIZE} bytes")
    return None


def validate_container_spec(spec: ContainerSpec) -> str | None:
    if spec.image == "":
        return invalid_argument("ContainerSpec: image reference must be provided")
    if spec.stop_grace_period < 0:
        return invalid_argument("ContainerSpec: stop grace period cannot be negative")
    return None


def validate_restart_policy(rp: RestartPolicy) -> str | None:
    if rp.delay < 0:
        return invalid_argument("TaskSpec: restart-delay cannot be negative")
    if rp.window < 0:
        return invalid_argument("TaskSpec: restart-window cannot be negative")
    return None


def validate_update_config(uc: UpdateConfig) -> str | None:
    if uc.delay < 0:
        return invalid_argument("TaskSpec: update-delay cannot be negative")
    if uc.monitor < 0:
        return invalid_argument("TaskSpec: update-monitor cannot be negative")
    if not 0.0 <= uc.max_failure_ratio <= 1.0:
        return invalid_argument("TaskSpec: update-maxfailureratio cannot be less than 0 or bigger than 1")
    return None


def validate_endpoint_spec(es: EndpointSpec) -> str | None:
    if es.mode == ResolutionMode.DNSRR and any(p.publish_mode == "ingress" for p in es.ports):
        return invalid_argument(
            "EndpointSpec: port published with ingress mode can't be used with dnsrr mode"
        )
    seen: set[tuple[int, str]] = set()
    for p in es.ports:
        if p.published_port == 0:
            continue
        key = (p.published_port, p.protocol.value)
        if key in seen:
            return invalid_argument("EndpointSpec: duplicate published ports provided")
        seen.add(key)
    return None


def validate_service_spec(spec: ServiceSpec) -> str | None:
    """The checks that need no store access (secret/network references are the API's job)."""
    for err in (
        validate_service_name(spec.name),
        validate_container_spec(spec.task_template.container),
        validate_restart_policy(spec.task_template.restart_policy),
        validate_update_config(spec.update_config),
        validate_update_config(spec.rollback_config),
        validate_endpoint_spec(spec.endpoint_spec),
    ):
        if err is not None:
            return err
    if spec.replicas < 0:
        return invalid_argument("replicas cannot be negative")
    return None
