"""Raw fd reads and writes on the event loop (`fdio`), on real pipes and a real pty."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from agents.worker.executor import fdio

BIG = os.urandom(1 << 20)
"""Far more than a pipe's buffer (64 KiB), so writes have to wait for the reader."""


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        yield r, w
    finally:
        _close(r, w)


async def _drain(fd: int) -> bytes:
    out = bytearray()
    while chunk := await fdio.read_fd(fd):
        out += chunk
    return bytes(out)


def test_write_fd_waits_for_the_reader_and_delivers_everything(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def body() -> tuple[bool, bytes]:
        reader = asyncio.ensure_future(_drain(r))
        ok = await fdio.write_fd(w, BIG)
        os.close(w)
        return ok, await reader

    ok, got = asyncio.run(body())
    assert ok and got == BIG


def test_write_fd_says_false_once_the_reader_is_gone(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)
    assert asyncio.run(fdio.write_fd(w, b"x")) is False


def test_write_fd_says_false_when_the_reader_leaves_mid_write(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def body() -> bool:
        writing = asyncio.ensure_future(fdio.write_fd(w, BIG))
        await asyncio.sleep(0.05)
        assert not writing.done()  # the pipe is full: the writer waits, the loop does not block
        os.close(r)
        return await asyncio.wait_for(writing, 5)

    assert asyncio.run(body()) is False


def test_read_fd_waits_for_data_and_returns_empty_at_eof(pipe: tuple[int, int]) -> None:
    r, w = pipe

    async def body() -> list[bytes]:
        first = asyncio.ensure_future(fdio.read_fd(r))
        await asyncio.sleep(0.05)
        assert not first.done()
        os.write(w, b"hello")
        got = [await asyncio.wait_for(first, 5)]
        os.close(w)
        got.append(await fdio.read_fd(r))
        return got

    assert asyncio.run(body()) == [b"hello", b""]


def test_read_fd_of_a_pty_whose_terminal_closed_is_eof() -> None:
    master, slave = os.openpty()
    try:
        os.set_blocking(master, False)
        os.close(slave)
        assert asyncio.run(fdio.read_fd(master)) == b""  # Linux says EIO here
    finally:
        _close(master, slave)


def test_a_cancelled_wait_leaves_no_callback_on_the_fd(pipe: tuple[int, int]) -> None:
    r, _w = pipe

    async def body() -> bool:
        waiting = asyncio.ensure_future(fdio.wait_readable(r))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return asyncio.get_running_loop().remove_reader(r)  # True if one were still registered

    assert asyncio.run(body()) is False


def test_hand_over_writes_all_then_closes_our_end() -> None:
    r, w = os.pipe()  # blocking, as os.pipe() hands them out: hand_over makes its end non-blocking
    os.set_blocking(r, False)
    try:

        async def body() -> bytes:
            reader = asyncio.ensure_future(_drain(r))
            await fdio.hand_over(w, BIG)
            return await asyncio.wait_for(reader, 10)

        link = _link(w)
        assert asyncio.run(body()) == BIG  # EOF came: the write end is closed
        assert _link(w) != link
    finally:
        _close(r)


def test_hand_over_to_a_helper_that_died_is_no_error_and_still_closes() -> None:
    r, w = os.pipe()
    os.close(r)
    link = _link(w)
    asyncio.run(fdio.hand_over(w, BIG))
    assert _link(w) != link


def _link(fd: int) -> str:
    """What ``fd`` refers to (``pipe:[inode]``), or "" once closed (the number may be reused since)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
