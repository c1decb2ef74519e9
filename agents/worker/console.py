"""A standalone container's console: the program's stdio for ``docker run`` (attached), ``-i`` and ``-t``.

    python -I -S console.py --dir DIR [--tty] [--stdin] [--stdin-once] [--wait S] [--size H,W]
                            [--user UID:GID[:G1,G2]] -- PROGRAM ARGV...

The task supervisor (`executor/shim.py`) gives a program /dev/null as stdin and logs its output, which is
all a detached container needs. An attached one needs its stdio live on the client's connection, stdin
included, and ``-t`` a terminal. This program sits between the supervisor and the program for those
containers only (it is the container's ``Container.pid``): it lives inside the container (same
namespaces and cgroup), so it outlives the agent like the container does, and it

* listens on ``DIR/attach.sock`` (the container's directory; the agent connects through
  ``/proc/self/fd/<dirfd>/attach.sock``, as the full path can exceed a unix socket's 108 bytes);
* with ``--wait S``, starts the program only once a first client connected (or after S seconds): the
  agent connects as soon as the container is started, for the attach requests that came before the
  start (``docker run``, ``docker start -a``: Docker attaches first, so they see the first byte) or
  just to release it;
* runs the program on a pty (``--tty``) or on pipes, signals reset, as ``--user``;
* copies the program's output to its own stdout/stderr (the container's log, as before) and to every
  client, in frames; writes clients' stdin frames to the program; a client's stdin EOF (or disconnect)
  closes the program's stdin when ``--stdin-once`` (``docker run -i``); resize frames set the pty size;
* forwards the stop signals (``docker stop``/``kill``) to the program and exits with its exit code
  (128+signal when killed), after sending clients an exit frame.

Frames, both ways: 1 byte type, 4 bytes big-endian length, payload. To clients: 1 stdout, 2 stderr,
3 exit (payload: the code as text). From clients: 0 stdin, 4 stdin EOF, 5 resize (payload ``>HH``),
6 detach (the client leaves without closing stdin; otherwise a disconnect counts as stdin EOF).
The program gets SIGKILL should this process die first (``PR_SET_PDEATHSIG``), so it never outlives it.
Imports: C modules only.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct(">BI")
T_STDIN, T_STDOUT, T_STDERR, T_EXIT, T_EOF, T_RESIZE, T_DETACH = 0, 1, 2, 3, 4, 5, 6
SOCKET_NAME = "attach.sock"
CLIENT_BUFFER = 8 << 20
"""A client that falls this far behind is dropped (the agent reads promptly; this bounds memory)."""
DRAIN_S = 0.5
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
TIOCSCTTY = 0x540E


class Options:
    def __init__(self) -> None:
        self.dir = "."
        self.tty = False
        self.stdin = False
        self.stdin_once = False
        self.wait = 0.0
        self.size: tuple[int, int] | None = None
        self.user: tuple[int, int, list[int]] | None = None
        self.argv: list[str] = []


def parse(argv: list[str]) -> Options:
    o = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            o.argv = argv[i + 1 :]
            break
        if a in ("--tty", "--stdin", "--stdin-once"):
            setattr(o, a[2:].replace("-", "_"), True)
        elif a in ("--dir", "--wait", "--size", "--user") and i + 1 < len(argv):
            i += 1
            v = argv[i]
            if a == "--dir":
                o.dir = v
            elif a == "--wait":
                o.wait = float(v)
            elif a == "--size":
                h, w = v.split(",")
                o.size = (int(h), int(w))
            else:
                parts = v.split(":")
                groups = [int(g) for g in parts[2].split(",") if g] if len(parts) > 2 else []
                o.user = (int(parts[0]), int(parts[1]), groups)
        else:
            raise ValueError(f"unknown argument {a!r}")
        i += 1
    if not o.argv:
        raise ValueError("no program given")
    return o


def _winsize(fd: int, h: int, w: int) -> None:
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))


class Client:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.inbuf = b""
        self.outbuf = bytearray()
        self.eof_sent = False


class Console:
    def __init__(self, o: Options) -> None:
        self.o = o
        self.clients: dict[int, Client] = {}
        self.poller = select.poll()
        self.child = 0
        self.pending_signals: list[int] = []
        self.stdin_fd = -1
        self.stdin_buf = bytearray()
        self.stdin_closing = False
        self.outputs: dict[int, int] = {}  # fd -> frame type
        self.master = -1
        self.listener = self._listen()

    # ------------------------------------------------------------------------------------ sockets

    def _listen(self) -> socket.socket:
        cwd = os.getcwd()
        os.chdir(self.o.dir)
        try:
            try:
                os.unlink(SOCKET_NAME)
            except FileNotFoundError:
                pass
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(SOCKET_NAME)
            os.chmod(SOCKET_NAME, 0o600)
        finally:
            os.chdir(cwd)
        s.listen(8)
        s.setblocking(False)
        self.poller.register(s.fileno(), select.POLLIN)
        return s

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        c = Client(sock)
        self.clients[sock.fileno()] = c
        self.poller.register(sock.fileno(), select.POLLIN)

    def _drop(self, c: Client) -> None:
        fd = c.sock.fileno()
        self.clients.pop(fd, None)
        try:
            self.poller.unregister(fd)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        if not c.eof_sent:
            self._stdin_eof()

    def _send(self, kind: int, data: bytes) -> None:
        msg = HEADER.pack(kind, len(data)) + data
        for c in list(self.clients.values()):
            if len(c.outbuf) > CLIENT_BUFFER:
                self._drop(c)
                continue
            c.outbuf += msg
            self._flush(c)

    def _flush(self, c: Client) -> None:
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except BlockingIOError:
                break
            except OSError:
                self._drop(c)
                return
            del c.outbuf[:n]
        fd = c.sock.fileno()
        if fd in self.clients:
            self.poller.modify(fd, select.POLLIN | (select.POLLOUT if c.outbuf else 0))

    def _client_readable(self, c: Client) -> None:
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        c.inbuf += data
        while len(c.inbuf) >= HEADER.size:
            kind, size = HEADER.unpack_from(c.inbuf)
            if len(c.inbuf) < HEADER.size + size:
                break
            payload = bytes(c.inbuf[HEADER.size : HEADER.size + size])
            c.inbuf = c.inbuf[HEADER.size + size :]
            if kind == T_STDIN:
                self._stdin_write(payload)
            elif kind == T_EOF:
                c.eof_sent = True
                self._stdin_eof()
            elif kind == T_DETACH:
                c.eof_sent = True
            elif kind == T_RESIZE and len(payload) == 4 and self.master >= 0:
                h, w = struct.unpack(">HH", payload)
                try:
                    _winsize(self.master, h, w)
                except OSError:
                    pass

    # -------------------------------------------------------------------------------------- stdin

    def _stdin_write(self, data: bytes) -> None:
        if self.stdin_fd < 0 or self.stdin_closing:
            return
        self.stdin_buf += data
        self._stdin_flush()

    def _stdin_flush(self) -> None:
        while self.stdin_buf and self.stdin_fd >= 0:
            try:
                n = os.write(self.stdin_fd, self.stdin_buf)
            except BlockingIOError:
                break
            except OSError:
                self.stdin_buf.clear()
                self._close_stdin()
                return
            del self.stdin_buf[:n]
        if self.stdin_fd < 0:
            return
        more = select.POLLOUT if self.stdin_buf else 0
        if self.master >= 0:  # the pty: one fd for both directions
            if self.master in self.outputs:
                self.poller.register(self.master, select.POLLIN | more)
            return
        if more:
            self.poller.register(self.stdin_fd, more)
            return
        try:
            self.poller.unregister(self.stdin_fd)
        except (KeyError, ValueError):
            pass
        if self.stdin_closing:
            self._close_stdin()

    def _stdin_eof(self) -> None:
        if not self.o.stdin_once or self.master >= 0 or self.stdin_fd < 0:
            return
        self.stdin_closing = True
        if not self.stdin_buf:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.stdin_fd >= 0 and self.master < 0:
            try:
                self.poller.unregister(self.stdin_fd)
            except (KeyError, ValueError):
                pass
            os.close(self.stdin_fd)
        self.stdin_fd = -1

    # -------------------------------------------------------------------------------------- child

    def wait_for_client(self) -> None:
        deadline = time.monotonic() + self.o.wait
        while not self.clients and time.monotonic() < deadline:
            ready = self.poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
            for fd, _ in ready:
                if fd == self.listener.fileno():
                    self._accept()
                elif fd in self.clients:
                    self._client_readable(self.clients[fd])

    def start(self) -> None:
        o = self.o
        if o.tty:
            master, slave = os.openpty()
            if o.size is not None:
                _winsize(master, *o.size)
            child_fds = (slave, slave, slave)
            self.master = self.stdin_fd = master
            self.outputs[master] = T_STDOUT
        else:
            in_r, in_w = os.pipe() if o.stdin else (os.open(os.devnull, os.O_RDONLY), -1)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            child_fds = (in_r, out_w, err_w)
            self.stdin_fd = in_w
            self.outputs[out_r] = T_STDOUT
            self.outputs[err_r] = T_STDERR
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._child(child_fds, me)
        self.child = pid
        for fd in set(child_fds):
            os.close(fd)
        for fd in self.outputs:
            os.set_blocking(fd, False)
            self.poller.register(fd, select.POLLIN)
        if self.stdin_fd >= 0:
            os.set_blocking(self.stdin_fd, False)
        for sig in self.pending_signals:
            os.kill(pid, sig)

    def _child(self, fds: tuple[int, int, int], parent: int) -> None:
        try:
            for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            os.setsid()
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it died before the line above took effect
                os._exit(137)
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            if self.o.tty:
                import fcntl

                fcntl.ioctl(0, TIOCSCTTY, 0)
            os.closerange(3, 65536)
            if self.o.user is not None:
                uid, gid, groups = self.o.user
                os.setgroups(groups)
                os.setgid(gid)
                os.setuid(uid)
            argv = self.o.argv
            os.execve(argv[0], argv, dict(os.environ))
        except OSError as e:
            os.write(2, f"exec {self.o.argv[0]}: {e.strerror}\n".encode())
            os._exit(127 if e.errno == errno.ENOENT else 126)
        except BaseException as e:
            os.write(2, f"console: {e}\n".encode())
            os._exit(126)

    def on_signal(self, sig: int, _frame: Any = None) -> None:
        if self.child:
            try:
                os.kill(self.child, sig)
            except ProcessLookupError:
                pass
        else:
            self.pending_signals.append(sig)

    # --------------------------------------------------------------------------------------- loop

    def _output(self, fd: int) -> bool:
        """Relay one chunk; False at EOF."""
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            try:
                self.poller.unregister(fd)
            except (KeyError, ValueError):
                pass
            self.outputs.pop(fd)
            if fd != self.master:
                os.close(fd)
            return False
        kind = self.outputs[fd]
        _write_all(2 if kind == T_STDERR else 1, data)
        self._send(kind, data)
        return True

    def _dispatch(self, ready: list[tuple[int, int]]) -> None:
        for fd, ev in ready:
            if fd == self.listener.fileno():
                self._accept()
            elif fd in self.outputs:
                if ev & select.POLLOUT:
                    self._stdin_flush()
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in self.outputs:
                    self._output(fd)
            elif fd in self.clients:
                c = self.clients[fd]
                if ev & select.POLLOUT:
                    self._flush(c)
                if ev & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd in self.clients:
                    self._client_readable(c)
            elif fd == self.stdin_fd:
                self._stdin_flush()

    def run(self) -> int:
        pidfd = os.pidfd_open(self.child)
        self.poller.register(pidfd, select.POLLIN)
        while True:
            ready = self.poller.poll()
            if any(fd == pidfd for fd, _ in ready):
                break
            self._dispatch(ready)
        _, status = os.waitpid(self.child, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        deadline = time.monotonic() + DRAIN_S
        while self.outputs and time.monotonic() < deadline:
            self._dispatch(self.poller.poll(max(0.0, deadline - time.monotonic()) * 1000))
        self._send(T_EXIT, str(code).encode())
        deadline = time.monotonic() + DRAIN_S
        while any(c.outbuf for c in self.clients.values()) and time.monotonic() < deadline:
            self._dispatch(self.poller.poll(50))
        self.close()
        return code

    def close(self) -> None:
        for c in list(self.clients.values()):
            c.eof_sent = True
            self._drop(c)
        try:
            os.chdir(self.o.dir)
            os.unlink(SOCKET_NAME)
        except OSError:
            pass
        self.listener.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:
            return  # the log pipe is gone: the clients still get the output


def main(argv: list[str]) -> int:
    try:
        o = parse(argv)
    except ValueError as e:
        os.write(2, f"console: {e}\n".encode())
        return 125
    console = Console(o)
    for sig in FORWARDED:
        signal.signal(sig, console.on_signal)
    if o.wait > 0:
        console.wait_for_client()
    try:
        console.start()
    except OSError as e:
        os.write(2, f"console: starting the program: {e}\n".encode())
        console.close()
        return 126
    return console.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
