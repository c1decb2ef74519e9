"""Lab subnets for machines labctl does not wire itself (vagrant, ssh).

The netns provider checks a subnet against the host's routes because it adds the bridge itself; for VMs
VirtualBox owns the host-only interface (its route stays after `vagrant destroy`), and existing machines
sit on networks the host already routes, so here only other labs count.
"""

from __future__ import annotations

import ipaddress

from labctl import registry
from labctl.errors import LabError
from labctl.spec import VAGRANT_RANGE, LabSpec


def _other_labs_subnets(name: str) -> list[ipaddress.IPv4Network]:
    used = []
    for other in registry.names():
        if other == name:
            continue
        try:
            net = registry.load(other).spec.subnet
        except LabError:
            continue
        if net is not None:
            used.append(net)
    return used


def pick(spec: LabSpec) -> ipaddress.IPv4Network:
    """The spec's subnet; else the /24 around its first given address; else (vagrant) the first free /24
    of 192.168.56.0/21."""
    if spec.subnet is not None:
        return spec.subnet
    given = [n.ip for n in spec.nodes if n.ip is not None]
    if given:
        return ipaddress.IPv4Network(f"{given[0]}/24", strict=False)
    if spec.provider != "vagrant":
        raise LabError(f"provider {spec.provider} needs node addresses or a subnet")
    used = _other_labs_subnets(spec.name)
    for candidate in VAGRANT_RANGE.subnets(new_prefix=24):
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise LabError(f"every /24 of {VAGRANT_RANGE} is used by another lab; destroy one or give this lab a subnet")
