"""Which IP a node advertises to the swarm: dockerd's ``daemon/cluster/listen_addr.go`` rules.

``--advertise-addr`` may be an IP, ``ip:port`` or an interface name (``eth0``: use its address); when it
is empty, a specific ``--listen-addr`` IP is used, then the agent's own ``--addr``, then the one address
of the machine's single non-loopback interface. Errors carry dockerd's texts.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

ERR_BAD_ADVERTISE = (
    "advertise address must be a non-zero IP address or network interface (with optional port number)"
)
ERR_BAD_LISTEN = "listen address must be an IP address or network interface (with optional port number)"
ERR_NO_IP = "could not find the system's IP address - specify one with --advertise-addr"
_SIOCGIFADDR = 0x8915


class AddrError(ValueError):
    """A bad or unresolvable address; ``str()`` is Docker's message."""


def split_host_port(value: str) -> tuple[str, str]:
    """Go's net.SplitHostPort-ish: ("10.0.0.1", "2377"), ("fe80::1", "2377") for "[fe80::1]:2377",
    (value, "") when there is no port."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if sep and rest.startswith(":"):
            return host, rest[1:]
        return value, ""
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, ""


def interface_ipv4(name: str) -> str | None:
    """The (primary) IPv4 address of interface ``name``; None if there is no such interface or address."""
    if name not in {n for _, n in socket.if_nameindex()}:
        return None
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return ""
    finally:
        s.close()
    return socket.inet_ntoa(packed[20:24])


def resolve_host(host: str, *, allow_unspecified: bool, bad: str) -> str:
    """An interface name or an IP literal -> the IP (dockerd's ``resolveInputIPAddr``)."""
    iface = interface_ipv4(host)
    if iface is not None:
        if not iface:
            raise AddrError(f"interface {host} has no usable IPv4 or IPv6 address")
        return iface
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AddrError(bad) from None
    if ip.is_unspecified and not allow_unspecified:
        raise AddrError(bad)
    return str(ip)


def system_addr() -> str:
    """The address of the machine's only non-loopback interface with IPv4 (dockerd's ``resolveSystemAddr``)."""
    found: list[tuple[str, str]] = []
    for _, name in socket.if_nameindex():
        ip = interface_ipv4(name)
        if ip and not ipaddress.ip_address(ip).is_loopback:
            found.append((ip, name))
    if not found:
        raise AddrError(ERR_NO_IP)
    if len(found) > 1:
        (a, an), (b, bn) = found[0], found[1]
        raise AddrError(
            "could not choose an IP address to advertise since this system has multiple addresses on "
            f"different interfaces ({a} on {an} and {b} on {bn})"
        )
    return found[0][0]


def advertise_ip(advertise: str, listen: str, default: str | None) -> str:
    """The IP to advertise for ``swarm init/join`` (the port part, if any, is ours: 2377)."""
    if advertise:
        host, _ = split_host_port(advertise)
        return resolve_host(host, allow_unspecified=False, bad=ERR_BAD_ADVERTISE)
    if listen:
        host, _ = split_host_port(listen)
        ip = resolve_host(host, allow_unspecified=True, bad=ERR_BAD_LISTEN)
        if not ipaddress.ip_address(ip).is_unspecified:
            return ip
    if default:
        return default
    return system_addr()
