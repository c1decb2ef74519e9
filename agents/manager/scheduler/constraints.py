"""Placement constraints (``node.labels.zone==east``), parsed and matched exactly as Docker does.

Follows SwarmKit's ``manager/constraint``: each expression is ``key op value`` with ``op`` one of ``==``
and ``!=`` (the first operator found wins, so ``a!==b`` is the key ``a!``); surrounding whitespace is
ignored; keys are matched case-insensitively, label names after ``node.labels.``/``engine.labels.`` are
case-sensitive, values are compared case-insensitively. A missing label compares as ``""`` (so ``!=``
matches). ``node.ip`` takes an address or a CIDR. Unknown keys parse but never match (Docker leaves such
tasks pending with "scheduling constraints not satisfied").
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from agents.state.objects import Node

NODE_LABEL_PREFIX = "node.labels."
ENGINE_LABEL_PREFIX = "engine.labels."
OPERATORS = ("==", "!=")

_KEY = re.compile(r"[a-zA-Z_][a-zA-Z0-9\-_.]+")
# Go's \s is [\t\n\f\r ]; no operators (<, >, ~ …) so future ones stay free.
_VALUE = re.compile(r"[a-zA-Z0-9:\-_\t\n\f\r .*()?+\[\]\\^$|/]+")


class Op(enum.IntEnum):
    EQ = 0
    NE = 1


class Key(enum.Enum):
    """What a constraint looks at (resolved once at parse time, not per node)."""

    ID = "node.id"
    HOSTNAME = "node.hostname"
    IP = "node.ip"
    ROLE = "node.role"
    OS = "node.platform.os"
    ARCH = "node.platform.arch"
    NODE_LABEL = "node.labels."
    ENGINE_LABEL = "engine.labels."
    UNKNOWN = ""


_FIXED_KEYS = {k.value: k for k in (Key.ID, Key.HOSTNAME, Key.IP, Key.ROLE, Key.OS, Key.ARCH)}

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Constraint:
    key: str
    """As written (trimmed)."""
    op: Op
    exp: str
    kind: Key
    label: str = ""
    """The label name for NODE_LABEL / ENGINE_LABEL (case-sensitive, as Docker)."""

    def matches_value(self, *values: str) -> bool:
        """Docker's ``Constraint.Match``: case-insensitive equality with any value, negated for ``!=``."""
        exp = self.exp.lower()
        hit = any(v.lower() == exp for v in values)
        return hit if self.op is Op.EQ else not hit

    def matches(self, node: Node) -> bool:
        kind = self.kind
        if kind is Key.ID:
            return self.matches_value(node.id)
        if kind is Key.HOSTNAME:
            return self.matches_value(node.description.hostname)
        if kind is Key.ROLE:
            return self.matches_value(str(node.role))
        if kind is Key.OS:
            return self.matches_value(node.description.platform.os)
        if kind is Key.ARCH:
            return self.matches_value(node.description.platform.architecture)
        if kind is Key.NODE_LABEL:
            return self.matches_value(node.spec.labels.get(self.label, ""))
        if kind is Key.ENGINE_LABEL:
            return self.matches_value(node.description.engine.labels.get(self.label, ""))
        if kind is Key.IP:
            return self._matches_ip(node.status.addr)
        return False

    def _matches_ip(self, addr: str) -> bool:
        node_ip = _parse_ip(addr)
        want = _parse_ip(self.exp)
        if want is not None:
            inside = node_ip is not None and node_ip == want
        else:
            net = _parse_net(self.exp)
            if net is None:
                return False  # malformed address/network: Docker rejects the node for == and != alike
            inside = node_ip is not None and node_ip.version == net.version and node_ip in net
        return inside if self.op is Op.EQ else not inside


def _parse_ip(text: str) -> IPAddr | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # Go's net.IP.Equal treats ::ffff:a.b.c.d as a.b.c.d
    return ip


def _parse_net(text: str) -> IPNet | None:
    if "/" not in text:
        return None
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _classify(key: str) -> tuple[Key, str]:
    lower = key.lower()
    fixed = _FIXED_KEYS.get(lower)
    if fixed is not None:
        return fixed, ""
    for kind, prefix in ((Key.NODE_LABEL, NODE_LABEL_PREFIX), (Key.ENGINE_LABEL, ENGINE_LABEL_PREFIX)):
        if len(key) > len(prefix) and lower.startswith(prefix):
            return kind, key[len(prefix) :]
    return Key.UNKNOWN, ""


def parse_constraint(expr: str) -> Constraint:
    """One expression; raises ``ValueError`` with Docker's message."""
    for i, op in enumerate(OPERATORS):
        if op not in expr:
            continue
        left, right = expr.split(op, 1)
        key = left.strip()
        if _KEY.fullmatch(key) is None:
            raise ValueError(f"key '{key}' is invalid")
        value = right.strip()
        if _VALUE.fullmatch(value) is None:
            raise ValueError(f"value '{value}' is invalid")
        kind, label = _classify(key)
        return Constraint(key, Op(i), value, kind, label)
    raise ValueError(f"constraint expected one operator from {', '.join(OPERATORS)}")


def parse_constraints(exprs: list[str]) -> list[Constraint]:
    """Parse a service's ``placement.constraints``; the API calls this at service create/update and
    relays the ``ValueError`` text (Docker: ``constraint expected one operator from ==, !=``,
    ``key 'x y' is invalid``, ``value '>3' is invalid``)."""
    return [parse_constraint(e) for e in exprs]


def node_matches(constraints: list[Constraint], node: Node) -> bool:
    """True when ``node`` satisfies every constraint."""
    return all(c.matches(node) for c in constraints)


def spread_value(descriptor: str, node: Node) -> str | None:
    """The value a ``spread=<descriptor>`` preference groups ``node`` by ("" when the node lacks the
    label); None when the descriptor is not a label descriptor (Docker ignores such preferences)."""
    kind, label = _classify(descriptor)
    if kind is Key.NODE_LABEL:
        return node.spec.labels.get(label, "")
    if kind is Key.ENGINE_LABEL:
        return node.description.engine.labels.get(label, "")
    return None
