"""Bringing a lab up and down: registry bookkeeping around the provider, shared by the CLI, tests and benches.

The record is written (status "creating") before anything is built, so a crash half-way leaves enough on
disk for `labctl down` to find and remove every piece.
"""

from __future__ import annotations

import ipaddress

from labctl import registry, remotenet, swarmform
from labctl.errors import LabError
from labctl.providers import netlink
from labctl.providers.base import Progress, Provider, no_progress
from labctl.registry import LabRecord
from labctl.spec import LabSpec, subnet_candidates


def _provider(record: LabRecord) -> Provider:
    from labctl.cli import provider_for

    return provider_for(record)


def pick_subnet(spec: LabSpec) -> ipaddress.IPv4Network:
    """The spec's subnet, or the first of 192.168.56.0/24, .57.0/24, … no lab and no host route uses."""
    if spec.subnet is not None:
        netlink.check_subnet_free(spec.subnet)
        return spec.subnet
    given = [n.ip for n in spec.nodes if n.ip is not None]
    if given:  # nodes with fixed addresses and no subnet: the /24 around them
        net = ipaddress.IPv4Network(f"{given[0]}/24", strict=False)
        netlink.check_subnet_free(net)
        return net
    used = []
    for name in registry.names():
        try:
            other = registry.load(name).spec.subnet
        except LabError:
            continue
        if other is not None:
            used.append(other)
    for candidate in subnet_candidates():
        if any(candidate.overlaps(u) for u in used):
            continue
        if netlink.route_overlapping(candidate) is None:
            return candidate
    raise LabError("no free /24 left in 192.168.56.0-192.168.255.0; give the lab a subnet")


def up(spec: LabSpec, progress: Progress = no_progress) -> tuple[LabRecord, bool]:
    """Create the lab unless it exists; returns (record, created)."""
    with registry.locked(spec.name):
        if spec.name in registry.names():
            existing = registry.load(spec.name)
            if existing.status == "up":
                return existing, False
            # A previous `up` died half-way: remove its leftovers, then build afresh.
            _provider(existing).destroy()
        _provider(LabRecord(spec, "creating"))  # an unavailable provider fails before anything is made
        with registry.host_locked():
            subnet = pick_subnet(spec) if spec.provider == "netns" else remotenet.pick(spec)
            resolved = spec.with_subnet(subnet)
            registry.claim_owner(spec.name)
            record = LabRecord(resolved, "creating")
            registry.save(record)
            provider = _provider(record)
            provider.create(progress)
        try:
            swarmform.form(provider, progress)
        except BaseException:
            provider.destroy()  # a lab whose swarm could not form is removed whole, like a failed build
            raise
        record.status = "up"
        registry.save(record)
        return record, True


def down(name: str, progress: Progress = no_progress) -> list[str]:
    """Destroy the lab; returns the problems met (everything else is still removed)."""
    with registry.locked(name):
        record = registry.load(name)
        return _provider(record).destroy(progress)
