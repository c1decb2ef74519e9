"""A small DNS responder per node, on the gateway address of each task bridge (port 53/udp), answering
what Docker's embedded DNS answers for services: ``<service>`` -> its VIP on a network the asking task
shares with it (or its task IPs for a VIP-less, dnsrr service), ``tasks.<service>`` -> the addresses of
its running tasks on that network. Everything else is NXDOMAIN at once (lab nodes have no upstream)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable

from agents.mesh.table import MeshTable

log = logging.getLogger(__name__)

TYPE_A = 1
CLASS_IN = 1
TTL = 1
RCODE_NXDOMAIN = 3
RCODE_FORMERR = 1
RCODE_NOTIMP = 4


def parse_query(data: bytes) -> tuple[int, int, str, int, bytes] | None:
    """(id, flags, lowercased name, qtype, question bytes) of a one-question query, or None."""
    if len(data) < 12:
        return None
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!6H", data[:12])
    if qd != 1 or flags & 0x8000:
        return None
    labels, i = [], 12
    while True:
        if i >= len(data):
            return None
        n = data[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0 or i + 1 + n > len(data):
            return None
        labels.append(data[i + 1:i + 1 + n].decode("ascii", errors="replace"))
        i += 1 + n
    if i + 4 > len(data):
        return None
    qtype, _qclass = struct.unpack("!HH", data[i:i + 4])
    return qid, flags, ".".join(labels).lower().rstrip("."), qtype, data[12:i + 4]


def build_response(qid: int, flags: int, question: bytes, addrs: list[str], rcode: int = 0) -> bytes:
    """A response echoing the question, with A records (name compressed to the question, offset 12)."""
    rd = flags & 0x0100
    hdr = struct.pack("!6H", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, len(addrs), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4) + ipaddress.IPv4Address(a).packed for a in addrs
    )
    return hdr + question + answers


def resolve(table: MeshTable, name: str, client: str, network_id: str) -> list[str] | None:
    """Addresses for ``name`` as seen by ``client`` (a task address) asking on ``network_id``'s gateway;
    None = no such name. The asking task's networks decide which VIP/addresses it gets."""
    who = table.task_by_addr().get(client)
    nets = [network_id]
    if who is not None:
        nets += [n for n in who[1].addrs if n != network_id]
    tasks_prefix = name.startswith("tasks.")
    svc_name = name[len("tasks."):] if tasks_prefix else name
    for s in table.services.values():
        if s.name.lower() != svc_name:
            continue
        for net in nets:
            if net not in s.networks and net not in s.vips:
                continue
            if not tasks_prefix and net in s.vips:
                return [s.vips[net]]
            return sorted({t.addrs[net] for t in s.backends() if net in t.addrs},
                          key=lambda a: ipaddress.IPv4Address(a))
        return None  # the service exists but shares no network with the asker: invisible, like Docker
    return None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, table: Callable[[], MeshTable], network_id: str) -> None:
        self.table = table
        self.network_id = network_id
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None:
            return
        answer = answer_query(self.table(), data, addr[0], self.network_id)
        if answer is not None:
            self.transport.sendto(answer, addr)


def answer_query(table: MeshTable, data: bytes, client: str, network_id: str) -> bytes | None:
    q = parse_query(data)
    if q is None:
        return None
    qid, flags, name, qtype, question = q
    if flags & 0x7800:  # not a standard query
        return build_response(qid, flags, question, [], RCODE_NOTIMP)
    addrs = resolve(table, name, client, network_id)
    if addrs is None:
        return build_response(qid, flags, question, [], RCODE_NXDOMAIN)
    return build_response(qid, flags, question, addrs if qtype == TYPE_A else [])


class DNSServer:
    """One UDP socket per network gateway; ``update`` binds new gateways and closes gone ones."""

    def __init__(self, table: Callable[[], MeshTable], port: int = 53) -> None:
        self.table = table
        self.port = port
        self._endpoints: dict[tuple[str, str], asyncio.DatagramTransport] = {}

    async def update(self, gateways: dict[str, str]) -> None:
        """``gateways``: network id -> gateway address."""
        want = {(net, gw) for net, gw in gateways.items()}
        for key in [k for k in self._endpoints if k not in want]:
            self._endpoints.pop(key).close()
        loop = asyncio.get_running_loop()
        for net, gw in sorted(want - self._endpoints.keys()):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: the bridge may get its address later
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((gw, self.port))
            except OSError as e:
                sock.close()
                log.warning("mesh dns: cannot listen on %s:%d: %s", gw, self.port, e)
                continue
            proto = _Protocol(self.table, net)
            transport, _ = await loop.create_datagram_endpoint(lambda p=proto: p, sock=sock)  # type: ignore[misc]
            self._endpoints[(net, gw)] = transport

    def close(self) -> None:
        for t in self._endpoints.values():
            with contextlib.suppress(Exception):
                t.close()
        self._endpoints.clear()
