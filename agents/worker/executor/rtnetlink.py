"""A small rtnetlink client (stdlib ``socket`` + ``struct``): the few link, address and route requests
task networking needs, without an ``ip`` subprocess per step (~5 ms each, the bulk of a task's start).

Every request carries ``NLM_F_ACK`` and waits for the kernel's answer, so errors surface as
`NetlinkError` (an ``OSError`` with the kernel's errno: ``EEXIST``, ``ENODEV``...). A socket belongs to
the network namespace it was created in; `Rtnl.open_in` creates one in another namespace from a
short-lived thread, so the caller's own threads never change namespace.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTM_NEWLINK = 16
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_NEWROUTE = 24

IFF_UP = 0x1
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_MASTER = 10
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_NUM_TX_QUEUES = 31
IFLA_NUM_RX_QUEUES = 32
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_OIF = 4
RTA_GATEWAY = 5

RT_TABLE_MAIN = 254
RTPROT_BOOT = 3
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
CLONE_NEWNET = 0x40000000

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags


class NetlinkError(OSError):
    """The kernel refused a request (``errno`` set; the message names the request)."""


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def _ip(address: str) -> tuple[int, bytes]:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return family, socket.inet_pton(family, address)


class Rtnl:
    """One NETLINK_ROUTE socket (blocking; each request takes microseconds)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        self.sock = sock if sock is not None else _new_socket()
        self._seq = 0

    @classmethod
    def open_in(cls, netns: str | None) -> Rtnl:
        """A socket in the network namespace at ``netns`` (a path like ``/run/netns/x``; None: ours)."""
        if netns is None:
            return cls()
        import threading

        box: list[socket.socket | BaseException] = []

        def enter() -> None:  # this thread alone switches namespace, then ends
            try:
                fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    setns(fd, CLONE_NEWNET)
                finally:
                    os.close(fd)
                box.append(_new_socket())
            except BaseException as e:
                box.append(e)

        t = threading.Thread(target=enter, name="rtnl-open")
        t.start()
        t.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        return cls(box[0])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------- requests

    def request(self, mtype: int, flags: int, body: bytes, what: str) -> list[tuple[int, bytes]]:
        """Send one request and read up to its ack; the non-ack messages of the answer are returned."""
        self._seq += 1
        seq = self._seq
        self.sock.send(_HDR.pack(_HDR.size + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _HDR.size <= len(data):
                length, rtype, _flags, rseq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    raise NetlinkError(errno.EPROTO, f"{what}: malformed netlink answer")
                payload = data[off + _HDR.size : off + length]
                off += (length + 3) & ~3
                if rseq != seq:
                    continue  # an answer to an earlier request that gave up
                if rtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                    return out
                if rtype == NLMSG_DONE:
                    return out
                out.append((rtype, payload))

    def link_index(self, name: str) -> int:
        """The interface index of ``name`` (`NetlinkError` ENODEV if there is none)."""
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, _cstr(name))
        for rtype, payload in self.request(RTM_GETLINK, 0, body, f"find {name}"):
            if rtype == RTM_NEWLINK:
                return int(_IFINFO.unpack_from(payload)[2])
        raise NetlinkError(errno.ENODEV, f"find {name}: {os.strerror(errno.ENODEV)}")

    def set_up(self, index: int) -> None:
        self.request(RTM_NEWLINK, 0, _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP), f"set link {index} up")

    def add_bridge(self, name: str, *, up: bool = True) -> None:
        """Create bridge ``name`` (`NetlinkError` EEXIST if a link of that name exists)."""
        flags = IFF_UP if up else 0
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, flags, flags)
        body += attr(IFLA_IFNAME, _cstr(name)) + attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, b"bridge"))
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add bridge {name}")

    def add_veth(
        self, name: str, peer: str, *, peer_netns_fd: int | None = None, mtu: int | None = None,
        master: int | None = None, up: bool = True,
    ) -> None:
        """A veth pair: ``name`` here (enslaved to ``master``, up), ``peer`` in the namespace of
        ``peer_netns_fd`` (down: its owner configures it).

        One queue per end, asked for explicitly: otherwise the kernel creates one per CPU and then
        shrinks to one, which waits for an RCU grace period while holding the RTNL lock -- and every
        task start on the host queues behind that lock."""
        queues = attr(IFLA_NUM_TX_QUEUES, struct.pack("=I", 1)) + attr(IFLA_NUM_RX_QUEUES, struct.pack("=I", 1))
        peer_attrs = attr(IFLA_IFNAME, _cstr(peer)) + queues
        if mtu:
            peer_attrs += attr(IFLA_MTU, struct.pack("=I", mtu))
        if peer_netns_fd is not None:
            peer_attrs += attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        peer_info = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + peer_attrs
        info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
        flags = IFF_UP if up else 0
        body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, flags, flags) + attr(IFLA_IFNAME, _cstr(name)) + queues
        if mtu:
            body += attr(IFLA_MTU, struct.pack("=I", mtu))
        if master is not None:
            body += attr(IFLA_MASTER, struct.pack("=I", master))
        body += attr(IFLA_LINKINFO, info)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name}")

    def add_address(self, index: int, cidr: str) -> None:
        """``ip addr add CIDR dev INDEX`` (`NetlinkError` EEXIST if it is there already)."""
        address, _, plen = cidr.partition("/")
        family, raw = _ip(address)
        prefix = int(plen) if plen else (32 if family == socket.AF_INET else 128)
        body = _IFADDR.pack(family, prefix, 0, RT_SCOPE_UNIVERSE, index) + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {cidr}")

    def add_default_route(self, gateway: str, index: int) -> None:
        """``ip route add default via GATEWAY dev INDEX``."""
        family, raw = _ip(gateway)
        body = _RTMSG.pack(family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += attr(RTA_GATEWAY, raw) + attr(RTA_OIF, struct.pack("=I", index))
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add default route via {gateway}")


def _new_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


def setns(fd: int, nstype: int) -> None:
    """``setns(2)`` for the calling thread (``os.setns`` arrives only in Python 3.12)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")
