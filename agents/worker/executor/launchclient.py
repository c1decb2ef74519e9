"""The executor's side of the node's task launcher (`launcher.py`): find it or start it, and hand it
the pipes of each new task.

One connection per executor, opened on first use: ``hello <fingerprint>`` to the launcher at
``<state>/worker/launcher.sock`` (a restarted agent finds the one its predecessor started), or, when
there is none or it runs other code (``mismatch``), a fresh launcher is started and connected. Closing
the connection (`LauncherClient.close`, or the agent dying) is how the launcher learns its owner is
gone; it then exits as soon as its last shim has.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence

from agents.worker.executor import fdio, launcher
from agents.worker.images.catalog import DEFAULT_PATH


class LauncherError(Exception):
    """The launcher could not be started or reached (the text says why)."""


class LineReader:
    """Async line reads from a pipe fd (a supervisor's or the launcher's control channel)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.buf = b""
        self.eof = False

    async def readline(self, timeout: float) -> bytes:
        """The next line without its newline; ``b""`` at EOF."""
        async with asyncio.timeout(timeout):
            while b"\n" not in self.buf and not self.eof:
                await fdio.wait_readable(self.fd)
                try:
                    data = os.read(self.fd, 4096)
                except BlockingIOError:
                    continue
                if not data:
                    self.eof = True
                self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def close(self) -> None:
        """Close the pipe (once)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LauncherClient:
    """The connection to one state directory's launcher (``node_netns``: where it runs its shims)."""

    def __init__(
        self, socket_path: str, *, python: str, node_netns: str | None, log_path: str, timeout_s: float = 15.0
    ) -> None:
        self.socket_path = socket_path
        self.python = python
        self.node_netns = node_netns
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.pid = 0
        """The launcher's pid once connected (tests, diagnostics)."""
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        """One sender at a time: asyncio keeps a single writer per fd, and a launcher that is slow to
        read (the socket buffer holds a few hundred spawn messages) makes senders wait."""
        self._waiting: asyncio.Future[None] | None = None

    async def spawn(self, fds: Sequence[int]) -> None:
        """Have a shim forked on ``fds`` (configuration read end, control write end, go read end).

        Returns once the launcher has them; it never answers -- the shim speaks on the control pipe,
        whose EOF without a word means the launcher died first (`reset`, then try again)."""
        for attempt in range(2):
            sock = await self._connection()
            try:
                async with self._send_lock:
                    await self._send_fds(sock, b"spawn", fds)
                return
            except OSError as e:
                if sock is self._sock:
                    self.reset()
                if attempt:
                    raise LauncherError(f"task launcher unreachable: {e}") from None

    async def connect(self) -> None:
        """Reach this namespace's launcher, starting one if none runs (`spawn` does it on demand)."""
        await self._connection()

    def reset(self) -> None:
        """Forget the connection (the launcher is gone or retired): the next spawn reconnects or starts one."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        fd = sock.fileno()
        with contextlib.suppress(RuntimeError):  # no running loop (interpreter shutdown)
            loop = asyncio.get_running_loop()
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(ConnectionResetError("the task launcher closed the connection"))
        sock.close()

    async def _send_fds(self, sock: socket.socket, msg: bytes, fds: Sequence[int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if sock.fileno() < 0:
                raise ConnectionResetError("the task launcher closed the connection")
            try:
                socket.send_fds(sock, [msg], list(fds))
                return
            except BlockingIOError:
                fd = sock.fileno()
                self._waiting = loop.create_future()
                loop.add_writer(fd, fdio.wake, self._waiting)
                try:
                    await self._waiting
                finally:
                    self._waiting = None
                    if sock.fileno() >= 0:
                        loop.remove_writer(fd)

    async def close(self) -> None:
        """Disconnect: the launcher exits once its shims have (running tasks are not touched)."""
        self.reset()

    # ----------------------------------------------------------------------------------- connecting

    async def _connection(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        async with self._lock:
            if self._sock is not None:
                return self._sock
            fp = launcher.fingerprint(self.python, self.node_netns)
            sock = await self._connect(fp)
            if sock is None:
                await self._start()
                sock = await self._connect(fp)
                if sock is None:
                    raise LauncherError("the task launcher started but does not answer")
            self._sock = sock
            asyncio.get_running_loop().add_reader(sock.fileno(), self._readable, sock)
            return sock

    def _readable(self, sock: socket.socket) -> None:
        """The launcher sends nothing after ``hello``: readable means it closed the connection."""
        if sock is self._sock:
            self.reset()

    async def _connect(self, fp: str) -> socket.socket | None:
        """A connection to a launcher running this code in this namespace, or None."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            address, dir_fd = launcher.unix_address(self.socket_path)
            try:
                await loop.sock_connect(sock, address)
            finally:
                if dir_fd is not None:
                    os.close(dir_fd)
            await loop.sock_sendall(sock, f"hello {fp}".encode())
            async with asyncio.timeout(self.timeout_s):
                reply = await loop.sock_recv(sock, 256)
        except (OSError, TimeoutError):
            sock.close()
            return None
        if not reply.startswith(b"ok "):
            sock.close()
            return None  # retired (other code or namespace) or gone while we said hello
        self.pid = int(reply.split()[1])
        return sock

    async def _start(self) -> None:
        """Start a launcher and wait until it listens (it detaches: we reap the process we started)."""
        r, w = os.pipe()
        try:
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
            try:
                argv = [self.python, "-I", "-S", launcher.PATH, self.socket_path, "--ready-fd", "3"]
                if self.node_netns:
                    argv += ["--netns", self.node_netns]
                pid = os.posix_spawn(
                    self.python,
                    argv,
                    {"PATH": DEFAULT_PATH},
                    file_actions=[
                        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
                        (os.POSIX_SPAWN_DUP2, log_fd, 2),
                        (os.POSIX_SPAWN_DUP2, w, 3),
                    ],
                    setsid=True,
                )
            finally:
                os.close(log_fd)
        finally:
            os.close(w)
        reader = LineReader(r)
        try:
            line = await reader.readline(self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            line = b"error it did not start in time"
        finally:
            reader.close()
            await asyncio.to_thread(_reap, pid)
        if not line.startswith(b"ready "):
            reason = line.decode(errors="replace").removeprefix("error ") or f"it exited (see {self.log_path})"
            raise LauncherError(f"the task launcher could not start: {reason}")


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
