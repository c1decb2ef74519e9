"""A minimal replicated key-value store on :class:`RaftNode`, for tests, benchmarks and demos.

Run one member with ``python -m agents.raft.kv --id 1 --peers 1=127.0.0.1:7001,2=...``. Clients speak a
tiny protocol on ``127.0.0.1:<client-port>``: frames of a 4-byte big-endian length and a msgpack array.
Requests are ``[rid, op, *args]``, responses ``[rid, code, value]``; a connection may pipeline any number
of requests and responses come back as they complete (not necessarily in order).

ops: ``put key value`` -> revision (the entry index); ``get key`` -> value or None after a read barrier;
``sget key`` -> local (possibly stale) value; ``status`` -> the node's status map.
codes: 0 ok, 1 not leader (value: leader id, 0 if unknown), 2 error (value: message).

A follower answers ``put`` with "not leader" unless it was started with ``--forward-to`` (the members'
client ports): then it relays the put to the leader over one pipelined connection and relays the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgpack

from agents.raft import gctune
from agents.raft.node import Address, NodeConfig, RaftNode
from agents.raft.types import Entry, NodeId, NotLeader, RaftError

OK, NOT_LEADER, ERROR = 0, 1, 2
_PUT = 0
_HDR = 4
MAX_FRAME = 16 * 1024 * 1024

log = logging.getLogger("agents.raft.kv")

Done = Callable[[Any, BaseException | None], None]
"""Completion callback: ``(result, None)`` or ``(None, error)``."""


class KVStateMachine:
    """``dict[bytes, bytes]``; entries are msgpack ``[op, key, value]``."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    @staticmethod
    def encode_put(key: bytes, value: bytes) -> bytes:
        out: bytes = msgpack.packb([_PUT, key, value], use_bin_type=True)
        return out

    def apply(self, entry: Entry) -> Any:
        op, key, value = msgpack.unpackb(entry.data)
        if op == _PUT:
            self.data[key] = value
            return entry.index
        raise ValueError(f"unknown kv op {op}")

    def snapshot(self) -> bytes:
        out: bytes = msgpack.packb(self.data, use_bin_type=True)
        return out

    def restore(self, data: bytes) -> None:
        self.data = dict(msgpack.unpackb(data)) if data else {}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class FrameProtocol(asyncio.Protocol):
    """Length-prefixed msgpack frames; outgoing frames are coalesced into one write per loop turn."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._pack = msgpack.Packer(use_bin_type=True).pack

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= _HDR:
            size = int.from_bytes(buf[pos : pos + _HDR], "big")
            if size > MAX_FRAME:
                log.warning("frame of %d bytes: closing the connection", size)
                if self.transport is not None:
                    self.transport.close()
                return
            if n - pos - _HDR < size:
                break
            start = pos + _HDR
            try:
                obj = msgpack.unpackb(buf[start : start + size], strict_map_key=False)
            except Exception as e:
                log.warning("malformed frame (%s): closing the connection", e)
                if self.transport is not None:
                    self.transport.close()
                return
            pos = start + size
            self.frame_received(obj)
        if pos:
            del buf[:pos]

    def frame_received(self, obj: Any) -> None:
        raise NotImplementedError

    def send(self, obj: Any) -> None:
        body: bytes = self._pack(obj)
        self._out.append(len(body).to_bytes(_HDR, "big"))
        self._out.append(body)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))


class _Forwarder:
    """Relays puts that reach a follower to the leader's client port (one pipelined connection)."""

    def __init__(self, client_addrs: dict[NodeId, Address]) -> None:
        self.addrs = client_addrs
        self.client: KVClient | None = None
        self.client_leader: NodeId = 0
        self.waiting: list[tuple[list[Any], Done]] = []
        self.connecting: asyncio.Task[None] | None = None

    def can_forward(self, leader: NodeId) -> bool:
        return leader in self.addrs

    def forward(self, leader: NodeId, req: list[Any], done: Done) -> None:
        c = self.client
        if c is not None and self.client_leader == leader and c.is_open():
            c.request_cb(done, *req)
            return
        self.waiting.append((req, done))
        if self.connecting is None or self.connecting.done() or self.client_leader != leader:
            self.client_leader = leader
            self.connecting = asyncio.ensure_future(self._connect(leader))

    async def _connect(self, leader: NodeId) -> None:
        old, self.client = self.client, None
        if old is not None:
            await old.close()
        try:
            client = await KVClient.connect(*self.addrs[leader], timeout=2.0)
        except (OSError, TimeoutError) as e:
            # Nothing was sent, so "not the leader, leader unknown" is accurate: the client may retry.
            log.info("cannot reach leader %s to relay puts: %r", leader, e)
            waiting, self.waiting = self.waiting, []
            for _, done in waiting:
                done(None, NotLeader(0))
            return
        if leader != self.client_leader:  # the leader changed meanwhile; a newer attempt owns the queue
            await client.close()
            return
        self.client = client
        waiting, self.waiting = self.waiting, []
        for req, done in waiting:
            self.forward(leader, req, done)


class _ServerProtocol(FrameProtocol):
    def __init__(self, node: RaftNode, sm: KVStateMachine, forwarder: _Forwarder | None = None) -> None:
        super().__init__()
        self.node = node
        self.sm = sm
        self.forwarder = forwarder

    def frame_received(self, obj: Any) -> None:
        if not isinstance(obj, list) or len(obj) < 2:
            self.send([0, ERROR, "a request is [rid, op, *args]"])
            return
        rid, op = obj[0], obj[1]
        try:
            if op == "put":
                node, fw = self.node, self.forwarder
                if fw is not None and not node.is_leader and fw.can_forward(node.leader):
                    fw.forward(node.leader, ["put", obj[2], obj[3]], partial(self._done, rid))
                else:
                    node.submit_cb(KVStateMachine.encode_put(obj[2], obj[3]), partial(self._done, rid))
            elif op == "get":
                task = asyncio.ensure_future(self._get(obj[2]))
                task.add_done_callback(partial(self._task_done, rid))
            elif op == "sget":
                self.send([rid, OK, self.sm.data.get(obj[2])])
            elif op == "status":
                self.send([rid, OK, self.node.status()])
            else:
                self.send([rid, ERROR, f"unknown op {op!r}"])
        except Exception as e:
            self._done(rid, None, e)

    def _done(self, rid: int, result: Any, exc: BaseException | None) -> None:
        if exc is None:
            self.send([rid, OK, result])
        elif isinstance(exc, NotLeader):
            self.send([rid, NOT_LEADER, exc.leader])
        else:
            self.send([rid, ERROR, _error_text(exc)])

    def _task_done(self, rid: int, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            self._done(rid, None, asyncio.CancelledError())
        else:
            self._done(rid, None if task.exception() else task.result(), task.exception())

    async def _get(self, key: bytes) -> bytes | None:
        await self.node.read_index(timeout=5.0)
        return self.sm.data.get(key)


class KVError(Exception):
    """The server reported an error (other than "not the leader")."""


class _ClientProtocol(FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, Done] = {}
        self.closed = self._loop.create_future()

    def frame_received(self, obj: Any) -> None:
        done = self.waiting.pop(obj[0], None)
        if done is None:
            return
        code, value = obj[1], obj[2]
        if code == OK:
            done(value, None)
        elif code == NOT_LEADER:
            done(None, NotLeader(value))
        else:
            done(None, KVError(value))

    def connection_lost(self, exc: Exception | None) -> None:
        err = ConnectionError(f"kv connection lost: {exc}")
        waiting, self.waiting = self.waiting, {}
        for done in waiting.values():
            done(None, err)
        if not self.closed.done():
            self.closed.set_result(None)


def _set_future(fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(result)
    else:
        fut.set_exception(exc)


class KVClient:
    """Pipelined client: any number of concurrent requests share one connection."""

    def __init__(self, proto: _ClientProtocol) -> None:
        self._proto = proto
        self._rid = 0

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 5.0) -> KVClient:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(_ClientProtocol, host, port), timeout
        )
        return cls(proto)

    def is_open(self) -> bool:
        t = self._proto.transport
        return t is not None and not t.is_closing()

    def request(self, *args: Any) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._proto._loop.create_future()
        self.request_cb(partial(_set_future, fut), *args)
        return fut

    def request_cb(self, done: Done, *args: Any) -> None:
        """Send a request; ``done(result, error)`` is called with the response (no Future, no task)."""
        proto = self._proto
        if proto.transport is None or proto.transport.is_closing():
            raise ConnectionError("kv connection closed")
        self._rid += 1
        proto.waiting[self._rid] = done
        proto.send([self._rid, *args])

    async def _call(self, timeout: float | None, *args: Any) -> Any:
        fut = self.request(*args)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    async def put(self, key: bytes, value: bytes, timeout: float | None = 10.0) -> int:
        return int(await self._call(timeout, "put", key, value))

    async def get(self, key: bytes, timeout: float | None = 10.0) -> bytes | None:
        v = await self._call(timeout, "get", key)
        return None if v is None else bytes(v)

    async def stale_get(self, key: bytes, timeout: float | None = 10.0) -> bytes | None:
        v = await self._call(timeout, "sget", key)
        return None if v is None else bytes(v)

    async def status(self, timeout: float | None = 5.0) -> dict[str, Any]:
        st = await self._call(timeout, "status")
        assert isinstance(st, dict)
        return st

    async def close(self) -> None:
        if self._proto.transport is not None:
            self._proto.transport.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._proto.closed), 1.0)


# ---------------------------------------------------------------------- server process


def parse_peers(spec: str) -> dict[NodeId, Address]:
    """``"1=127.0.0.1:7001,2=127.0.0.1:7002"`` -> ``{1: ("127.0.0.1", 7001), ...}``."""
    out: dict[NodeId, Address] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        nid, _, addr = part.partition("=")
        host, _, port = addr.rpartition(":")
        out[int(nid)] = (host, int(port))
    return out


def _ssl_contexts(tls_dir: Path, node_id: NodeId) -> tuple[Any, Any]:
    from agents.raft.tlsconfig import client_context, server_context

    cert, key, ca = tls_dir / f"node-{node_id}.pem", tls_dir / f"node-{node_id}.key", tls_dir / "ca.pem"
    return server_context(cert, key, ca), client_context(cert, key, ca)


def build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.raft.kv", description=__doc__.split("\n")[0])
    ap.add_argument("--id", type=int, required=True)
    ap.add_argument("--peers", required=True, help="id=host:port,... (all members, this one included)")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--client-port", type=int, required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tls-dir", type=Path, help="holds ca.pem, node-<id>.pem, node-<id>.key")
    g.add_argument("--insecure", action="store_true", help="plain TCP between members")
    ap.add_argument(
        "--forward-to",
        default="",
        help="id=host:port,... client ports of the members: followers then relay puts to the leader "
        "(without it they answer 'not leader')",
    )
    ap.add_argument("--tick-ms", type=float, default=100.0, help="tick = heartbeat interval")
    ap.add_argument("--election-ticks", type=int, default=10)
    ap.add_argument("--heartbeat-ticks", type=int, default=1)
    ap.add_argument("--snapshot-every", type=int, default=10_000)
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--join", action="store_true", help="start as a new member with no configuration")
    ap.add_argument("--force-new-cluster", action="store_true")
    ap.add_argument("--no-gc-freeze", action="store_true", help="leave CPython's GC alone (see gctune)")
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--profile", type=Path, help="write a cProfile dump here on exit")
    return ap


async def serve(args: argparse.Namespace) -> int:
    """Run one member until SIGTERM/SIGINT (exit code 0) or until its Raft loop fails (1)."""
    exit_code = 0
    peers = parse_peers(args.peers)
    if args.id not in peers:
        raise SystemExit(f"--peers must include this member ({args.id})")
    server_ssl = client_ssl = None
    if args.tls_dir is not None:
        server_ssl, client_ssl = _ssl_contexts(args.tls_dir, args.id)
    cfg = NodeConfig(
        id=args.id,
        data_dir=args.data_dir,
        listen=peers[args.id],
        peers=peers,
        tick_interval=args.tick_ms / 1000.0,
        election_ticks=args.election_ticks,
        heartbeat_ticks=args.heartbeat_ticks,
        snapshot_every=args.snapshot_every,
        fsync=not args.no_fsync,
        join=args.join,
        force_new_cluster=args.force_new_cluster,
        server_ssl=server_ssl,
        client_ssl=client_ssl,
    )
    sm = KVStateMachine()
    node = RaftNode(cfg, sm)
    await node.start()
    gc_task = gctune.start() if not args.no_gc_freeze else None
    loop = asyncio.get_running_loop()
    forwarder = _Forwarder(parse_peers(args.forward_to)) if args.forward_to else None
    server = await loop.create_server(
        lambda: _ServerProtocol(node, sm, forwarder), "127.0.0.1", args.client_port, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        json.dumps({"event": "ready", "id": args.id, "raft_port": node.port, "client_port": args.client_port}),
        flush=True,
    )
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(node.wait_failed())
    try:
        await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
        if failed.done():
            log.error("raft node failed (%r): exiting", failed.result())
            exit_code = 1
    finally:
        stopped.cancel()
        failed.cancel()
        server.close()
        await node.stop()
        if gc_task is not None:
            await gctune.stop(gc_task)
    return exit_code


def main(argv: list[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s kv{args.id} %(name)s %(levelname)s %(message)s",
    )
    if args.profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            code = asyncio.run(serve(args))
        finally:
            prof.disable()
            prof.dump_stats(os.fspath(args.profile))
    else:
        code = asyncio.run(serve(args))
    sys.exit(code)


__all__ = ["KVClient", "KVError", "KVStateMachine", "RaftError", "main", "parse_peers", "serve"]

if __name__ == "__main__":
    main()
