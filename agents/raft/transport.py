"""Raft message transport over (mutual-TLS) TCP, for asyncio.

Frames are ``[length u32 big-endian][codec batch]``. Each peer has one persistent outbound connection,
opened lazily when there is something to send, and one writer task that drains the peer's queue into a
single frame per write (batching: while a write drains, new messages pile up for the next frame).
Connections are one-way: a node reads only on connections its peers opened to it, so each pair of nodes
has two connections; the outbound side reads only to notice when the peer hangs up.

``send`` never blocks and never raises -- Raft tolerates loss and retransmits -- so every failure becomes
a counter in :meth:`Transport.stats`: a full queue drops its *oldest* message (the newest carries the
freshest term/commit; the leader resends lost entries after the follower's rejection), a failed write
loses the frame in flight, and a failed connection is reported through ``on_unreachable`` (the core then
probes that peer gently) and retried with jittered exponential backoff.

All methods must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import struct
from collections import deque
from collections.abc import Callable

from agents.raft.codec import CodecError, decode_messages, encode_message, join_encoded
from agents.raft.types import Message, NodeId

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_FRAME", "Transport"]

DEFAULT_MAX_FRAME = 64 << 20
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
CONNECT_TIMEOUT = 5.0
CLOSE_TIMEOUT = 1.0
_LEN = struct.Struct(">I")
_BATCH_OVERHEAD = 8  # array header + version byte, rounded up


class _Conn:
    """One outbound connection; ``lost`` is set by its watcher when the peer hangs up."""

    __slots__ = ("lost", "opened", "watcher", "writer")

    def __init__(self, writer: asyncio.StreamWriter, opened: float) -> None:
        self.writer = writer
        self.opened = opened
        self.lost = False
        self.watcher: asyncio.Task[None] | None = None


class _Peer:
    __slots__ = ("address", "conn", "down", "id", "queue", "redial", "task", "wake")

    def __init__(self, peer: NodeId, address: tuple[str, int]) -> None:
        self.id = peer
        self.address = address
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.conn: _Conn | None = None
        self.redial = False  # the address changed: drop the current connection
        self.down = False  # last attempt failed (log transitions only, not every retry)


class Transport:
    """Sends and receives Raft messages for node ``node_id``; see the module docstring."""

    def __init__(
        self,
        node_id: NodeId,
        listen: tuple[str, int],
        on_message: Callable[[Message], None],
        *,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        max_queue: int = 4096,
        on_unreachable: Callable[[NodeId], None] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        authorize: Callable[[asyncio.StreamWriter], bool] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.node_id = node_id
        self.listen = listen
        self.port = listen[1]
        self._on_message = on_message
        self._on_unreachable = on_unreachable
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self._max_queue = max_queue
        self._max_frame = max_frame
        self._authorize = authorize  # e.g. "the client certificate says swarm-manager": workers may not talk Raft
        self._peers: dict[NodeId, _Peer] = {}
        self._server: asyncio.Server | None = None
        self._inbound: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False
        self._stats: dict[str, int] = dict.fromkeys(
            (
                "msgs_sent",
                "frames_sent",
                "bytes_sent",
                "msgs_received",
                "frames_received",
                "bytes_received",
                "dropped_queue_full",
                "dropped_unknown_peer",
                "dropped_send_failed",
                "dropped_oversize",
                "dropped_encode_error",
                "dropped_misaddressed",
                "connects",
                "connect_failures",
                "connections_lost",
                "inbound_connections",
                "malformed_frames",
                "unauthorized",
            ),
            0,
        )

    # ------------------------------------------------------------------ membership

    def set_peer(self, peer: NodeId, address: tuple[str, int]) -> None:
        """Add a peer or change its address (the next frame goes over a new connection)."""
        p = self._peers.get(peer)
        if p is None:
            p = self._peers[peer] = _Peer(peer, address)
            if self._started and not self._closing:
                p.task = asyncio.create_task(self._run_peer(p), name=f"raft-send-{self.node_id}->{peer}")
        elif p.address != address:
            p.address = address
            p.redial = True
            p.wake.set()

    def remove_peer(self, peer: NodeId) -> None:
        """Forget a peer: its queue is dropped and its connection closed (in the background)."""
        p = self._peers.pop(peer, None)
        if p is not None and p.task is not None:
            p.task.cancel()
            self._retired.add(p.task)
            p.task.add_done_callback(self._retired.discard)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on ``listen`` (port 0 picks a free port, then in ``self.port``) and start the senders."""
        if self._started:
            raise RuntimeError("transport already started")
        host, port = self.listen
        self._server = await asyncio.start_server(
            self._serve,
            host,
            port,
            ssl=self._server_ssl,
            ssl_handshake_timeout=CONNECT_TIMEOUT if self._server_ssl is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started = True
        for p in self._peers.values():
            p.task = asyncio.create_task(self._run_peer(p), name=f"raft-send-{self.node_id}->{p.id}")

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for all tasks this transport started."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = [p.task for p in self._peers.values() if p.task is not None]
        tasks += self._retired
        for t in tasks:
            t.cancel()
        # Inbound handlers are ended by aborting their connections, not cancelled: asyncio (3.11) logs
        # a spurious error for a cancelled client_connected_cb task.
        inbound = list(self._inbound)
        for w in self._inbound.values():
            w.transport.abort()
        await asyncio.gather(*tasks, *inbound, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        for p in self._peers.values():
            p.queue.clear()

    # ------------------------------------------------------------------ sending

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``; never blocks or raises (drops are counted in stats())."""
        stats = self._stats
        p = self._peers.get(msg.to)
        if p is None or self._closing:
            stats["dropped_unknown_peer"] += 1
            return
        try:
            data = encode_message(msg)
        except CodecError:
            log.exception("raft transport: cannot encode a message to %s; dropped", msg.to)
            stats["dropped_encode_error"] += 1
            return
        q = p.queue
        if len(q) >= self._max_queue:
            q.popleft()
            stats["dropped_queue_full"] += 1
        q.append(data)
        p.wake.set()

    def stats(self) -> dict[str, int]:
        """Counters since creation plus the current queue depth (``queued``) and peer count."""
        out = dict(self._stats)
        out["queued"] = sum(len(p.queue) for p in self._peers.values())
        out["peers"] = len(self._peers)
        return out

    def _report_unreachable(self, peer: NodeId) -> None:
        if self._on_unreachable is None or self._closing:
            return
        try:
            self._on_unreachable(peer)
        except Exception:
            log.exception("raft transport: on_unreachable(%s) failed", peer)

    def _take_frame(self, q: deque[bytes]) -> tuple[bytes, int]:
        """Pop as many queued messages as fit one frame; returns (frame, message count)."""
        limit = self._max_frame - _BATCH_OVERHEAD
        parts: list[bytes] = []
        size = 0
        while q:
            n = len(q[0])
            if n > limit:
                q.popleft()
                self._stats["dropped_oversize"] += 1
                log.error("raft transport: a %d-byte message exceeds the frame limit; dropped", n)
                continue
            if size + n > limit:
                break
            parts.append(q.popleft())
            size += n
        if not parts:
            return b"", 0
        body = join_encoded(parts)
        return _LEN.pack(len(body)) + body, len(parts)

    async def _run_peer(self, p: _Peer) -> None:
        """Writer task: connect when there is something to send, write batched frames, redial on failure."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN
        try:
            while True:
                conn = p.conn
                if conn is not None and (conn.lost or p.redial):
                    p.conn = None
                    await self._close_conn(conn)
                    if conn.lost:
                        # A connection that dies young (e.g. the peer rejects our certificate after a
                        # TLS 1.3 handshake) counts as a failed attempt: back off instead of spinning.
                        if loop.time() - conn.opened >= BACKOFF_MAX:
                            backoff = BACKOFF_MIN
                        else:
                            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                            backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                if not p.queue:
                    p.wake.clear()
                    await p.wake.wait()
                    continue
                if conn is None:
                    p.redial = False
                    conn = await self._connect(p)
                    if conn is None:
                        self._stats["connect_failures"] += 1
                        self._report_unreachable(p.id)
                        await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                        backoff = min(backoff * 2, BACKOFF_MAX)
                        continue
                    p.conn = conn
                frame, count = self._take_frame(p.queue)
                if not count:
                    continue
                try:
                    conn.writer.write(frame)
                    await conn.writer.drain()
                except Exception as e:
                    log.info("raft transport: write to %s failed: %r", p.id, e)
                    self._stats["dropped_send_failed"] += count
                    conn.lost = True
                    self._report_unreachable(p.id)
                    continue
                s = self._stats
                s["msgs_sent"] += count
                s["frames_sent"] += 1
                s["bytes_sent"] += len(frame)
        finally:
            if p.conn is not None:
                conn, p.conn = p.conn, None
                await self._close_conn(conn)

    async def _connect(self, p: _Peer) -> _Conn | None:
        host, port = p.address
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel that arrives as the
            # connection completes, and a sender that misses stop()'s cancel runs forever.
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port, ssl=self._client_ssl)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            if not p.down:
                log.warning(
                    "raft transport: cannot connect to %s at %s:%s: %r (retrying)", p.id, host, port, e
                )
            p.down = True
            return None
        if p.down:
            log.info("raft transport: connected to %s at %s:%s", p.id, host, port)
        p.down = False
        self._stats["connects"] += 1
        conn = _Conn(writer, asyncio.get_running_loop().time())
        conn.watcher = asyncio.create_task(self._watch(reader, conn, p), name=f"raft-watch-{p.id}")
        return conn

    async def _watch(self, reader: asyncio.StreamReader, conn: _Conn, p: _Peer) -> None:
        """Notice the peer hanging up (it never sends on this connection) so the writer redials."""
        try:
            while await reader.read(65536):
                pass
        except Exception as e:
            log.debug("raft transport: connection to %s: %r", p.id, e)
        if not conn.lost:
            conn.lost = True
            self._stats["connections_lost"] += 1
            self._report_unreachable(p.id)
        p.wake.set()

    async def _close_conn(self, conn: _Conn) -> None:
        """Close an outbound connection. A cancellation of the caller (stop(), remove_peer()) that
        arrives meanwhile is passed on, never swallowed: the sender must end, or stop() waits forever."""
        try:
            if conn.watcher is not None:
                conn.watcher.cancel()
                await asyncio.wait({conn.watcher})  # its own CancelledError stays inside it
        finally:
            await _close_writer(conn.writer)

    # ------------------------------------------------------------------ receiving

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One inbound connection: read frames, hand their messages to on_message, until EOF or junk."""
        task = asyncio.current_task()
        assert task is not None
        self._inbound[task] = writer
        self._stats["inbound_connections"] += 1
        peer = writer.get_extra_info("peername")
        stats = self._stats
        on_message = self._on_message
        try:
            if self._authorize is not None and not self._authorize(writer):
                stats["unauthorized"] += 1
                log.warning("raft transport: refused %s (not authorized to take part in Raft)", peer)
                return
            while not self._closing:
                try:
                    header = await reader.readexactly(4)
                except asyncio.IncompleteReadError:
                    return  # clean EOF (or torn header: nothing to salvage)
                (n,) = _LEN.unpack(header)
                if n > self._max_frame:
                    stats["malformed_frames"] += 1
                    log.warning(
                        "raft transport: %s sent a %d-byte frame (limit %d); closing",
                        peer,
                        n,
                        self._max_frame,
                    )
                    return
                body = await reader.readexactly(n)
                try:
                    msgs = decode_messages(body)
                except CodecError as e:
                    stats["malformed_frames"] += 1
                    log.warning("raft transport: malformed frame from %s (%s); closing", peer, e)
                    return
                stats["frames_received"] += 1
                stats["bytes_received"] += n + 4
                for m in msgs:
                    if m.to != self.node_id:
                        stats["dropped_misaddressed"] += 1
                        continue
                    stats["msgs_received"] += 1
                    try:
                        on_message(m)
                    except Exception:
                        log.exception("raft transport: on_message failed")
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as e:
            log.debug("raft transport: inbound connection from %s: %r", peer, e)
        finally:
            self._inbound.pop(task, None)
            await _close_writer(writer)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait (bounded) so no transport outlives us; abort if the peer does not answer.

    A TLS close waits for the peer's close_notify, so this can take up to CLOSE_TIMEOUT; if the caller
    is cancelled meanwhile, the socket is aborted and the cancellation re-raised.
    """
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except asyncio.CancelledError:
        writer.transport.abort()
        raise
    except Exception:  # timed out, or the connection had failed: nothing left to say to the peer
        writer.transport.abort()
