"""Ingress published ports: conflict checks (with Docker's texts) and allocation per service.

Follows SwarmKit's ``portallocator.go`` and controlapi ``checkPortConflicts``. Ingress ports are
cluster-wide (the routing mesh listens on every node), so a published port belongs to one service per
protocol. ``published_port`` 0 in ingress mode gets a port from 30000-32767; we take the lowest free one
(a pure function of the store, so a new leader decides the same). Host-mode ports are per node and left
to the scheduler. Across updates an auto-assigned port stays with its (name, protocol, target port).
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.state.objects import Endpoint, PortConfig, PortProtocol, PublishMode, Service, ServiceSpec
from agents.state.store import Store

DYNAMIC_PORT_START = 30000
DYNAMIC_PORT_END = 32767

PortKey = tuple[PortProtocol, int]


class PortConflictError(ValueError):
    """A published port is taken; ``str()`` is Docker's description (the API wraps it as
    ``rpc error: code = InvalidArgument desc = …``)."""


class PortExhaustedError(Exception):
    pass


def check_ports(store: Store, spec: ServiceSpec, service_id: str | None = None) -> None:
    """Refuse a service spec whose published ports clash with another service's (spec or allocated
    ports; ``service_id`` is the service being updated, skipped). Raises ``PortConflictError``."""
    ingress: set[PortKey] = set()
    host: set[PortKey] = set()
    for pc in spec.endpoint_spec.ports:
        if pc.published_port == 0:
            continue
        (ingress if pc.publish_mode == PublishMode.INGRESS else host).add((pc.protocol, pc.published_port))
    if not ingress and not host:
        return
    for svc in store.list(Service):
        if service_id and svc.id == service_id:
            continue
        theirs: list[PortConfig] = list(svc.spec.endpoint_spec.ports)
        if svc.endpoint is not None:
            theirs.extend(svc.endpoint.ports)
        for pc in theirs:
            if pc.published_port == 0:
                continue
            key = (pc.protocol, pc.published_port)
            if pc.publish_mode == PublishMode.HOST:
                if key in ingress:
                    raise PortConflictError(
                        f"port '{pc.published_port}' is already in use by service '{svc.spec.name}' "
                        f"({svc.id}) as a host-published port"
                    )
            elif key in ingress or key in host:
                raise PortConflictError(
                    f"port '{pc.published_port}' is already in use by service '{svc.spec.name}' "
                    f"({svc.id}) as an ingress port"
                )


def reconcile_ports(spec_ports: list[PortConfig], endpoint: Endpoint | None) -> list[PortConfig]:
    """SwarmKit's ``reconcilePortConfigs``: the ports to allocate, keeping auto-assigned ports of an
    existing endpoint. Fixed ports (and host-mode ones) come first in spec order, then the dynamic ones."""
    if endpoint is None or len(spec_ports) != len(endpoint.ports):
        return [p.copy() for p in spec_ports]
    states: dict[tuple[str, PortProtocol, int], list[PortConfig]] = {}
    for p in endpoint.ports:
        if p.publish_mode == PublishMode.INGRESS:
            states.setdefault((p.name, p.protocol, p.target_port), []).append(p)

    def take(p: PortConfig) -> PortConfig | None:
        bucket = states.get((p.name, p.protocol, p.target_port))
        if not bucket:
            return None
        if p.published_port:
            for i, s in enumerate(bucket):
                if s.published_port == p.published_port:
                    return bucket.pop(i)
            return None
        for i, s in enumerate(bucket):
            if s.published_port:
                return bucket.pop(i)
        return None

    out: list[PortConfig] = []
    for p in spec_ports:
        if p.publish_mode != PublishMode.INGRESS:
            out.append(p.copy())
        elif p.published_port:
            take(p)
            out.append(p.copy())
    for p in spec_ports:
        if p.publish_mode == PublishMode.INGRESS and not p.published_port:
            kept = take(p)
            out.append((kept or p).copy())
    return out


class PortAllocator:
    """Which service holds each ingress port (per protocol)."""

    def __init__(self) -> None:
        self.owner: dict[PortKey, str] = {}
        self._by_service: dict[str, set[PortKey]] = {}

    def set_service(self, service_id: str, ports: Iterable[PortConfig]) -> None:
        """Make the service hold exactly these ingress ports (used when reading allocated endpoints);
        a port held by another service stays with it."""
        self.release_service(service_id)
        for p in ports:
            if p.publish_mode == PublishMode.INGRESS and p.published_port:
                key = (p.protocol, p.published_port)
                if self.owner.setdefault(key, service_id) == service_id:
                    self._by_service.setdefault(service_id, set()).add(key)

    def release_service(self, service_id: str) -> None:
        for key in self._by_service.pop(service_id, ()):
            if self.owner.get(key) == service_id:
                del self.owner[key]

    def held(self, service_id: str) -> set[PortKey]:
        """The ingress ports the service holds now (a copy)."""
        return set(self._by_service.get(service_id, ()))

    def hold(self, service_id: str, keys: Iterable[PortKey]) -> list[PortKey]:
        """Add ports to what the service holds (an API changeset in flight keeps its old and new ports
        until it is through); returns those another service holds, which stay with it."""
        taken: list[PortKey] = []
        for key in keys:
            if self.owner.setdefault(key, service_id) == service_id:
                self._by_service.setdefault(service_id, set()).add(key)
            else:
                taken.append(key)
        return taken

    def allocate(
        self, service_id: str, spec_ports: list[PortConfig], endpoint: Endpoint | None
    ) -> list[PortConfig]:
        """The endpoint ports for a service's spec, reserving them; on error nothing changes."""
        ports = reconcile_ports(spec_ports, endpoint)
        for p in ports:
            if p.publish_mode == PublishMode.INGRESS and p.published_port:
                holder = self.owner.get((p.protocol, p.published_port))
                if holder is not None and holder != service_id:
                    raise PortConflictError(f"port '{p.published_port}' is already in use")
        previous = [
            PortConfig(protocol=k[0], published_port=k[1]) for k in self._by_service.get(service_id, ())
        ]
        self.release_service(service_id)
        mine = self._by_service.setdefault(service_id, set())
        for p in ports:
            if p.publish_mode == PublishMode.INGRESS and p.published_port:
                key = (p.protocol, p.published_port)
                self.owner[key] = service_id
                mine.add(key)
        for p in ports:
            if p.publish_mode == PublishMode.INGRESS and not p.published_port:
                port = self._lowest_free(p.protocol)
                if port is None:
                    self.set_service(service_id, previous)
                    raise PortExhaustedError("no available ingress ports in 30000-32767")
                p.published_port = port
                self.owner[(p.protocol, port)] = service_id
                mine.add((p.protocol, port))
        return ports

    def _lowest_free(self, proto: PortProtocol) -> int | None:
        owner = self.owner
        for port in range(DYNAMIC_PORT_START, DYNAMIC_PORT_END + 1):
            if (proto, port) not in owner:
                return port
        return None
