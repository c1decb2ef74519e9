"""The standalone container's console program (`agents.worker.console`) run for real, with the agent's
client (`agents.worker.attach.ConsoleConnection`): it starts its program once a client connected (or
after ``--wait``), copies output to clients and to its own stdout/stderr (the container's log), feeds
stdin and closes it with ``--stdin-once``, runs a pty with resizes, forwards stop signals and exits with
the program's code."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agents.worker.attach import T_EXIT, T_STDERR, T_STDOUT, ConsoleConnection
from agents.worker.console import parse
from agents.worker.consolerun import CONSOLE

pytestmark = pytest.mark.timeout(60)

def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-I", "-S", CONSOLE, "--dir", str(tmp_path), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def _frames(conn: ConsoleConnection) -> list[tuple[int, bytes]]:
    out = []
    while (item := await conn.read()) is not None:
        out.append(item)
    return out


def _run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 30))


def test_pipes_stdin_once_exit_code_and_log_copy(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "--wait", "20", "--stdin", "--stdin-once", "--",
                  "/bin/sh", "-c", "cat; echo to-err >&2; exit 7")

    async def main() -> None:
        conn = await ConsoleConnection.open(str(tmp_path))
        assert await conn.send_stdin(b"hello\n")
        assert await conn.send_eof()
        frames = await _frames(conn)
        await conn.close()
        assert b"".join(d for k, d in frames if k == T_STDOUT) == b"hello\n"
        assert b"".join(d for k, d in frames if k == T_STDERR) == b"to-err\n"
        assert frames[-1] == (T_EXIT, b"7")

    _run(main)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 7 and out == b"hello\n" and err == b"to-err\n"
    assert not (tmp_path / "attach.sock").exists()


def test_tty_size_resize_and_two_clients(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "--wait", "20", "--tty", "--stdin", "--size", "5,33", "--",
                  "/bin/sh", "-c", "stty size; read a; stty size; echo got $a")

    async def main() -> None:
        conn = await ConsoleConnection.open(str(tmp_path))
        seen = b""
        while b"5 33" not in seen:
            item = await conn.read()
            assert item is not None
            seen += item[1]
        watcher = await ConsoleConnection.open(str(tmp_path))  # a second attach sees the rest
        assert await conn.resize(7, 44)
        await asyncio.sleep(0.2)
        assert await conn.send_stdin(b"typed\r")
        rest = await _frames(conn)
        other = await _frames(watcher)
        text = b"".join(d for k, d in rest if k == T_STDOUT)
        assert b"7 44" in text and b"got typed" in text, text
        assert b"got typed" in b"".join(d for k, d in other if k == T_STDOUT)
        assert rest[-1] == (T_EXIT, b"0") and other[-1] == (T_EXIT, b"0")
        await conn.close()
        await watcher.close()

    _run(main)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"got typed" in out  # the tty's output is the log's stdout


def test_release_then_stop_signal_is_forwarded(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "--wait", "20", "--", "/bin/sleep", "30")

    async def main() -> None:
        conn = await ConsoleConnection.open(str(tmp_path))
        await conn.detach()  # the agent's release after a start without attach
        await asyncio.sleep(0.3)

    _run(main)
    proc.send_signal(signal.SIGTERM)  # docker stop signals the container's pid: the console
    proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM


def test_wait_times_out_and_bad_arguments(tmp_path: Path) -> None:
    proc = _spawn(tmp_path, "--wait", "0.2", "--", "/bin/echo", "started anyway")
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out == b"started anyway\n"
    bad = subprocess.run([sys.executable, "-I", "-S", CONSOLE, "--bogus"], capture_output=True, timeout=10)
    assert bad.returncode == 125 and b"unknown argument" in bad.stderr
    with pytest.raises(ValueError, match="no program"):
        parse(["--dir", "x"])
    assert parse(["--user", "1:2:3,4", "--", "x"]).user == (1, 2, [3, 4])
