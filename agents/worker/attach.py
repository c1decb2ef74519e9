"""The agent's side of a standalone container's console (`agents.worker.console`): connect, read the
program's output frames, send stdin, EOF, resizes.

The console listens on ``<dir>/attach.sock``; the directory is the container's console directory below
the agent's state dir, whose full path can exceed the 108 bytes a unix socket address holds, so the
connection goes through ``/proc/self/fd/<dirfd>/attach.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

from agents.worker.console import (
    HEADER,
    SOCKET_NAME,
    T_DETACH,
    T_EOF,
    T_EXIT,
    T_RESIZE,
    T_STDERR,
    T_STDIN,
    T_STDOUT,
)

__all__ = ["T_EXIT", "T_STDERR", "T_STDOUT", "ConsoleConnection"]


class ConsoleConnection:
    """One client connection to a container's console."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, directory: str, timeout: float = 10.0) -> ConsoleConnection:
        """Connect, retrying while the console starts (it binds its socket right after exec)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.01
        while True:
            try:
                dirfd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                dirfd = -1
            try:
                if dirfd >= 0:
                    reader, writer = await asyncio.open_unix_connection(f"/proc/self/fd/{dirfd}/{SOCKET_NAME}")
                    return cls(reader, writer)
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            finally:
                if dirfd >= 0:
                    os.close(dirfd)
            if loop.time() >= deadline:
                raise ConnectionRefusedError(f"the container's console did not answer within {timeout:.0f}s")
            await asyncio.sleep(delay)
            delay = min(0.2, delay * 2)

    async def read(self) -> tuple[int, bytes] | None:
        """The next frame (type, payload); None when the console closed the connection."""
        try:
            head = await self._reader.readexactly(HEADER.size)
            kind, size = HEADER.unpack(head)
            return kind, await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _send(self, kind: int, data: bytes = b"") -> bool:
        try:
            self._writer.write(HEADER.pack(kind, len(data)) + data)
            await self._writer.drain()
            return True
        except (ConnectionError, RuntimeError):
            return False

    async def send_stdin(self, data: bytes) -> bool:
        return await self._send(T_STDIN, data)

    async def send_eof(self) -> bool:
        return await self._send(T_EOF)

    async def resize(self, height: int, width: int) -> bool:
        return await self._send(T_RESIZE, struct.pack(">HH", height & 0xFFFF, width & 0xFFFF))

    async def detach(self) -> None:
        """Leave without closing the program's stdin."""
        await self._send(T_DETACH)
        await self.close()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
