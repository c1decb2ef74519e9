"""Transport: mutual TLS, batching, reconnects, bounded queues and hostile input, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import ssl
import struct
import threading
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from agents.raft import tlsconfig, transport
from agents.raft.codec import encode_messages
from agents.raft.transport import Transport
from agents.raft.types import Entry, Message, MessageType, NodeId

from .conftest import Certs, TlsPair

LOCAL = "127.0.0.1"


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `cond` holds: fixed sleeps are flaky on a loaded 2-core machine."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def run(coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    async def main() -> None:
        async with asyncio.timeout(timeout):
            await coro

    asyncio.run(main())


def msg(to: NodeId, frm: NodeId, index: int, data: bytes = b"x" * 100) -> Message:
    return Message(
        MessageType.APPEND,
        to,
        frm,
        term=3,
        log_term=3,
        index=index,
        entries=(Entry(3, index + 1, data=data),),
    )


class Inbox:
    def __init__(self) -> None:
        self.msgs: list[Message] = []
        self.event = asyncio.Event()

    def __call__(self, m: Message) -> None:
        self.msgs.append(m)
        self.event.set()

    async def wait_for(self, n: int, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while len(self.msgs) < n:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(loop(), timeout)


def make(node: NodeId, inbox: Inbox, tls: TlsPair | None, port: int = 0, **kw: Any) -> Transport:
    return Transport(
        node,
        (LOCAL, port),
        inbox,
        server_ssl=tls.server if tls else None,
        client_ssl=tls.client if tls else None,
        **kw,
    )


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def test_messages_flow_both_ways_over_mutual_tls(tls: Callable[[int], TlsPair]) -> None:
    async def main() -> None:
        in1, in2 = Inbox(), Inbox()
        t1, t2 = make(1, in1, tls(1)), make(2, in2, tls(2))
        await t1.start()
        await t2.start()
        t1.set_peer(2, (LOCAL, t2.port))
        t2.set_peer(1, (LOCAL, t1.port))
        sent = [msg(2, 1, i) for i in range(500)]
        for m in sent:
            t1.send(m)
        t2.send(msg(1, 2, 7, b"reply"))
        await in2.wait_for(500)
        await in1.wait_for(1)
        assert in2.msgs == sent  # in order, intact
        assert in1.msgs == [msg(1, 2, 7, b"reply")]
        s = t1.stats()
        assert s["msgs_sent"] == 500 and s["frames_sent"] < 500  # batched
        assert t2.stats()["msgs_received"] == 500
        await t1.stop()
        await t2.stop()

    run(main())


def test_client_with_certificate_from_another_ca_is_rejected(certs: Certs) -> None:
    async def main() -> None:
        good_in = Inbox()
        good = make(2, good_in, certs.contexts(2))
        await good.start()
        ca = certs.nodes[2].ca
        # Trusts our CA (so the server passes its check) but presents a certificate from another CA.
        rogue_cert = tlsconfig.client_context(certs.rogue.cert, certs.rogue.key, ca)
        no_cert = ssl.create_default_context(cafile=str(ca))
        no_cert.check_hostname = False
        for ctx in (rogue_cert, no_cert):
            rogue = Transport(1, (LOCAL, 0), Inbox(), client_ssl=ctx)
            await rogue.start()
            rogue.set_peer(2, (LOCAL, good.port))
            for i in range(10):
                rogue.send(msg(2, 1, i))
                await asyncio.sleep(0.03)
            rs = rogue.stats()
            assert rs["connect_failures"] + rs["connections_lost"] + rs["dropped_send_failed"] > 0
            await rogue.stop()
        assert good_in.msgs == []
        assert good.stats()["msgs_received"] == 0 and good.stats()["inbound_connections"] == 0
        await good.stop()

    run(main())


def test_server_with_certificate_from_another_ca_is_not_trusted(certs: Certs) -> None:
    async def main() -> None:
        rogue_in, unreachable = Inbox(), list[NodeId]()
        rogue = make(1, rogue_in, certs.rogue_contexts())
        good = make(2, Inbox(), certs.contexts(2), on_unreachable=unreachable.append)
        await rogue.start()
        await good.start()
        good.set_peer(1, (LOCAL, rogue.port))
        good.send(msg(1, 2, 1))
        await eventually(lambda: good.stats()["connect_failures"] >= 1 and bool(unreachable))
        assert rogue_in.msgs == [] and good.stats()["connects"] == 0
        assert good.stats()["connect_failures"] >= 1 and unreachable[0] == 1
        await rogue.stop()
        await good.stop()

    run(main())


def test_reconnects_when_the_peer_comes_up(tls: Callable[[int], TlsPair]) -> None:
    async def main() -> None:
        port = free_port()
        unreachable: list[NodeId] = []
        in1, in2 = Inbox(), Inbox()
        t1 = make(1, in1, tls(1), on_unreachable=unreachable.append)
        await t1.start()
        t1.set_peer(2, (LOCAL, port))
        t1.send(msg(2, 1, 1))
        await eventually(lambda: bool(unreachable))
        assert set(unreachable) == {2}
        assert t1.stats()["connect_failures"] >= 1
        t2 = make(2, in2, tls(2), port=port)
        await t2.start()
        await in2.wait_for(1)  # the queued message went out once the backoff elapsed
        # The peer restarts: the old connection breaks, the next send redials.
        await t2.stop()
        t2 = make(2, in2, tls(2), port=port)
        await t2.start()
        for i in range(2, 200):
            t1.send(msg(2, 1, i))
            if len(in2.msgs) > 1:
                break
            await asyncio.sleep(0.02)
        await in2.wait_for(2)
        await t1.stop()
        await t2.stop()

    run(main())


def test_bounded_queue_drops_oldest_and_counts() -> None:
    async def main() -> None:
        port = free_port()
        in2 = Inbox()
        t1 = make(1, Inbox(), None, max_queue=10)
        t1.set_peer(2, (LOCAL, port))
        t1.send(msg(9, 1, 0))  # unknown peer
        for i in range(25):
            t1.send(msg(2, 1, i))
        s = t1.stats()
        assert s["dropped_queue_full"] == 15 and s["queued"] == 10 and s["dropped_unknown_peer"] == 1
        t2 = make(2, in2, None, port=port)
        await t2.start()
        await t1.start()
        await in2.wait_for(10)
        assert [m.index for m in in2.msgs] == list(range(15, 25))
        await t1.stop()
        await t2.stop()

    run(main())


def test_malformed_frames_close_only_that_connection() -> None:
    async def main() -> None:
        in2 = Inbox()
        t2 = make(2, in2, None, max_frame=1 << 20)
        await t2.start()
        junk = [
            struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
            struct.pack(">I", 3) + b"\x92\x01\x02",  # msgpack, not a batch of messages
            struct.pack(">I", 0xFFFFFFFF),  # over the frame limit: must not allocate 4 GB
            frame(encode_messages([msg(2, 1, 1)]))[:10],  # torn frame then EOF
        ]
        for j in junk:
            reader, writer = await asyncio.open_connection(LOCAL, t2.port)
            writer.write(j)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # server hung up
            writer.close()
            await writer.wait_closed()
        assert t2.stats()["malformed_frames"] == 3
        assert in2.msgs == []
        # Messages for another node id are dropped, not delivered.
        reader, writer = await asyncio.open_connection(LOCAL, t2.port)
        body = encode_messages([msg(3, 1, 1), msg(2, 1, 2)])
        writer.write(frame(body))
        await in2.wait_for(1)
        assert [m.index for m in in2.msgs] == [2] and t2.stats()["dropped_misaddressed"] == 1
        writer.close()
        await writer.wait_closed()
        # The server still works for a well-behaved peer.
        t1 = make(1, Inbox(), None)
        await t1.start()
        t1.set_peer(2, (LOCAL, t2.port))
        t1.send(msg(2, 1, 3))
        await in2.wait_for(2)
        await t1.stop()
        await t2.stop()

    run(main())


def test_address_change_and_remove_peer() -> None:
    async def main() -> None:
        in_a, in_b = Inbox(), Inbox()
        a, b = make(2, in_a, None), make(2, in_b, None)  # the same member at two addresses over time
        t1 = make(1, Inbox(), None)
        for t in (a, b, t1):
            await t.start()
        t1.set_peer(2, (LOCAL, a.port))
        t1.send(msg(2, 1, 1))
        await in_a.wait_for(1)
        t1.set_peer(2, (LOCAL, b.port))
        t1.send(msg(2, 1, 2))
        await in_b.wait_for(1)
        t1.remove_peer(2)
        t1.send(msg(2, 1, 3))
        assert t1.stats()["dropped_unknown_peer"] == 1
        for t in (a, b, t1):
            await t.stop()

    run(main())


@pytest.mark.parametrize("cancelled_by", ["stop", "remove_peer"])
def test_a_sender_closing_a_connection_still_ends_on_cancel(
    certs: Certs, monkeypatch: pytest.MonkeyPatch, cancelled_by: str
) -> None:
    """A TLS close waits for the peer's close_notify; a peer that never answers keeps the sender in
    that close. stop() (or remove_peer()) cancelling it then must end it: the close used to swallow
    the cancellation, the sender lived on and stop() waited forever (seen under load)."""
    monkeypatch.setattr(transport, "CLOSE_TIMEOUT", 30.0)  # the close outlasts the test unless cut short
    listener = socket.socket()
    listener.bind((LOCAL, 0))
    listener.listen()
    release = threading.Event()
    server_ctx = certs.contexts(2).server

    def mute_peer() -> None:
        """Completes the TLS handshake, then never reads: no close_notify ever comes back."""
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True):
            release.wait(30)

    thread = threading.Thread(target=mute_peer, daemon=True)
    thread.start()

    async def main() -> None:
        t = make(1, Inbox(), certs.contexts(1))
        await t.start()
        t.set_peer(2, (LOCAL, listener.getsockname()[1]))
        t.send(msg(2, 1, 1))
        await eventually(lambda: t.stats()["frames_sent"] == 1)
        peer = t._peers[2]
        t.set_peer(2, (LOCAL, free_port()))  # new address: the sender closes the old connection first
        await eventually(lambda: peer.conn is None and peer.redial)  # inside that close
        async with asyncio.timeout(5):
            if cancelled_by == "remove_peer":
                t.remove_peer(2)
                await eventually(lambda: peer.task is not None and peer.task.done())
            await t.stop()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    try:
        run(main())
    finally:
        release.set()
        thread.join(10)
        listener.close()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stop_leaves_no_tasks_or_sockets(tls: Callable[[int], TlsPair]) -> None:
    async def main() -> None:
        before = _open_fds()
        in1, in2 = Inbox(), Inbox()
        t1, t2 = make(1, in1, tls(1)), make(2, in2, tls(2))
        await t1.start()
        await t2.start()
        t1.set_peer(2, (LOCAL, t2.port))
        t2.set_peer(1, (LOCAL, t1.port))
        t1.set_peer(3, (LOCAL, free_port()))  # a dead peer, mid-backoff at stop()
        t1.send(msg(3, 1, 1))
        for i in range(100):
            t1.send(msg(2, 1, i))
            t2.send(msg(1, 2, i))
        await in2.wait_for(100)
        await in1.wait_for(100)
        await t1.stop()
        await t2.stop()
        await t1.stop()  # idempotent
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert _open_fds() <= before
        with socket.socket() as s:  # nobody listens on the port any more
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOCAL, t1.port))

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        run(main())
        gc.collect()


@pytest.mark.parametrize("size", [1, 100_000])
def test_large_batches_split_into_frames(size: int) -> None:
    async def main() -> None:
        in2 = Inbox()
        t2 = make(2, in2, None, max_frame=256 * 1024)
        t1 = make(1, Inbox(), None, max_frame=256 * 1024)
        await t2.start()
        await t1.start()
        t1.set_peer(2, (LOCAL, t2.port))
        n = 40
        for i in range(n):
            t1.send(msg(2, 1, i, b"y" * size))
        t1.send(msg(2, 1, 99, b"z" * 300_000))  # bigger than a frame: dropped, counted
        await in2.wait_for(n)
        assert [m.index for m in in2.msgs] == list(range(n))
        assert t1.stats()["dropped_oversize"] == 1
        await t1.stop()
        await t2.stop()

    run(main())
