"""Docker's connection hijack: after the HTTP response head the socket carries a raw byte stream.

``docker exec``/``attach``/``run`` (and the docker SDK) send ``Connection: Upgrade`` + ``Upgrade: tcp``;
dockerd answers ``101 UPGRADED`` (``200 OK`` without the upgrade headers) and from then on the
connection is the process's stdio: the client's bytes are stdin, a half-close (``CloseWrite``) is stdin's
EOF while output keeps flowing, and the server closes the connection when the output ends.

aiohttp can upgrade only to WebSocket, so `hijack` sends the response head through aiohttp and then
takes the transport over with its own protocol (`HijackedStream`): aiohttp's request handler would
close a half-closed connection at once (its ``eof_received`` answers "close"), which would cut off the
output of ``echo data | docker exec -i C cat``. The original protocol still learns when the connection
is lost, so aiohttp's bookkeeping ends normally.

Without a TTY the output is multiplexed: each chunk is framed with an 8-byte header (stream id 1 =
stdout, 2 = stderr, then the big-endian length), `frame`.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiohttp import web

RAW = "application/vnd.docker.raw-stream"
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
STDOUT, STDERR = 1, 2
HIGH_WATER = 1 << 20
"""Pause reading the client once this much stdin is queued (the process is not consuming it)."""


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame (``stdcopy``'s format)."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def stream_content_type(tty: bool, api_version: str = "1.45") -> str:
    """dockerd labels a non-TTY stream multiplexed from API 1.42 on."""
    if tty:
        return RAW
    try:
        major, minor = (int(p) for p in api_version.split(".")[:2])
    except ValueError:
        return MULTIPLEXED
    return MULTIPLEXED if (major, minor) >= (1, 42) else RAW


class _RawResponse(web.StreamResponse):
    """A response head without body framing: no chunked encoding, no Content-Length."""

    _length_check = False

    async def write_eof(self, data: bytes = b"") -> None:
        return  # the hijacked stream ends by closing the connection


class HijackedStream(asyncio.Protocol):
    """The taken-over connection: `read` (b"" = the client closed its side), `write`, `close`."""

    def __init__(self, transport: asyncio.Transport, original: asyncio.BaseProtocol, tail: bytes) -> None:
        self.transport = transport
        self._original = original
        self._chunks: list[bytes] = [tail] if tail else []
        self._queued = len(tail)
        self._eof = False
        self._lost = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused_reading = False
        self.closed = asyncio.Event()
        """Set when the connection is gone (closed by either side)."""
        if tail:
            self._readable.set()

    # --- asyncio.Protocol (called by the transport)
    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        self._readable.set()
        if self._queued > HIGH_WATER and not self._paused_reading:
            self._paused_reading = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._readable.set()
        return True  # keep our side open: the output still flows

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._readable.set()
        self._writable.set()
        self.closed.set()
        lost = getattr(self._original, "connection_lost", None)
        if callable(lost):
            try:
                lost(exc)
            except Exception:  # aiohttp's cleanup must not break ours
                pass

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- the handler's side
    async def read(self) -> bytes:
        """The client's next bytes; b"" once it half-closed or disconnected."""
        while not self._chunks:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._queued = 0
        if self._paused_reading and not self._lost:
            self._paused_reading = False
            self.transport.resume_reading()
        return data

    @property
    def lost(self) -> bool:
        return self._lost

    async def write(self, data: bytes) -> bool:
        """Send ``data`` (waits while the client is slow); False once the connection is gone."""
        if self._lost or self.transport.is_closing():
            return False
        if data:
            self.transport.write(data)
        await self._writable.wait()
        return not self._lost

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def wants_upgrade(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() or "Upgrade" in request.headers


async def hijack(request: web.Request, content_type: str) -> tuple[web.StreamResponse, HijackedStream]:
    """Answer ``request`` with the 101 (or 200) head and take the connection over.

    The handler returns the response object when it is done with the stream."""
    if wants_upgrade(request):
        resp = _RawResponse(status=101, reason="UPGRADED",
                            headers={"Content-Type": content_type, "Connection": "Upgrade", "Upgrade": "tcp"})
    else:
        resp = _RawResponse(status=200, headers={"Content-Type": content_type})
    resp.force_close()
    await resp.prepare(request)
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the client went away")
    protocol: Any = request.protocol
    tail = bytes(getattr(protocol, "_message_tail", b"") or b"")
    if tail:
        protocol._message_tail = b""
    stream = HijackedStream(transport, protocol, tail)
    transport.set_protocol(stream)
    return resp, stream
