"""Raw fd reads and writes on the event loop, without blocking it.

The executors talk to the processes they start over plain pipes and pty masters (a supervisor's or
an exec helper's config, an exec's stdin/stdout): these wait for readiness with the loop's
reader/writer callbacks instead of a thread per fd.
"""

from __future__ import annotations

import asyncio
import errno
import os

_GONE = (errno.EPIPE, errno.EIO, errno.EBADF)
"""A write failing so means the other side is gone (a pty master whose slave closed says EIO)."""


def wake(fut: asyncio.Future[None]) -> None:
    """Readiness callback: resolve ``fut`` once (the fd may be ready again before it is awaited)."""
    if not fut.done():
        fut.set_result(None)


async def wait_readable(fd: int) -> None:
    """Until ``fd`` can be read (or is at EOF)."""
    await _ready(fd, write=False)


async def wait_writable(fd: int) -> None:
    """Until ``fd`` takes a write."""
    await _ready(fd, write=True)


async def _ready(fd: int, *, write: bool) -> None:
    """One readiness wait; the loop's callback is removed again even when cancelled."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    add(fd, wake, fut)
    try:
        await fut
    finally:
        remove(fd)


async def read_fd(fd: int, n: int = 65536) -> bytes:
    """One chunk from a non-blocking fd; b"" at EOF (a pty master whose slave is closed reads EIO)."""
    while True:
        try:
            return os.read(fd, n)
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise
        await wait_readable(fd)


async def write_fd(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to a non-blocking fd; False once the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
            continue
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno in _GONE:
                return False
            raise
        await wait_writable(fd)
    return True


async def hand_over(fd: int, data: bytes) -> None:
    """Write ``data`` to a helper's config pipe and close our end (``fd`` is closed in any case).

    Non-blocking because a config with large secrets exceeds the pipe's buffer while the helper is
    still starting. A helper that died before reading it all is not an error here: its exit status
    or control pipe says why, and that is what the caller reports."""
    try:
        os.set_blocking(fd, False)
        await write_fd(fd, data)
    finally:
        os.close(fd)
