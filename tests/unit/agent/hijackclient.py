"""A raw client for Docker's hijacked endpoints (exec start, attach): the exact bytes on the socket.

`open_hijacked` sends the request (with ``Connection: Upgrade``/``Upgrade: tcp`` as the docker CLI does
unless told not to) and returns the response head and the socket, now the raw stream; `read_frames`
splits Docker's multiplexed stream into ``(stream id, payload)`` frames.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any


def open_hijacked(sock_path: Path, path: str, body: Any = None, upgrade: bool = True,
                  timeout: float = 20.0) -> tuple[str, socket.socket, bytes]:
    """(response head, socket, bytes already read past the head)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(sock_path))
    data = b"" if body is None else json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    if upgrade:
        head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
    s.sendall(head.encode() + b"\r\n" + data)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    text, _, rest = buf.partition(b"\r\n\r\n")
    return text.decode(), s, rest


def read_all(s: socket.socket, already: bytes = b"") -> bytes:
    out = already
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def read_frames(raw: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while raw:
        assert len(raw) >= 8, f"torn frame header: {raw!r}"
        kind, size = struct.unpack(">BxxxL", raw[:8])
        frames.append((kind, raw[8 : 8 + size]))
        raw = raw[8 + size :]
    return frames


def stream_text(frames: list[tuple[int, bytes]], kind: int) -> bytes:
    return b"".join(data for k, data in frames if k == kind)


def read_until(s: socket.socket, needle: bytes, already: bytes = b"") -> bytes:
    out = already
    while needle not in out:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    return out
