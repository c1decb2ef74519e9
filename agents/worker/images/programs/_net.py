"""What every catalog program shares: listening, a thread per connection, signals, logs, HTTP/1.1.

Standard library only, and only the cheap parts of it (no asyncio, http.server or email: each of
those costs 3-10 MB of RSS and tens of milliseconds per task). A blocking accept loop in the main
thread plus a daemon thread per connection is the simplest server that stays under 15 MB.

Tests (only) move a program off its real port with ``LABCTL_IMAGE_PORT`` and bind it to one
address with ``LABCTL_IMAGE_BIND``; in a task the program listens on all addresses like the image.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SIGNAMES: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGQUIT: "SIGQUIT"}

threading.stack_size(512 * 1024)


class Stop(BaseException):
    """Raised in the main thread by the signal handler to leave the accept loop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return _SIGNAMES.get(self.signum) or signal.Signals(self.signum).name


def setup_stdio() -> None:
    """Line-buffer stdout/stderr: ``docker service logs`` must see lines as they happen."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass


def out(line: str) -> None:
    """One log line on stdout."""
    try:
        sys.stdout.write(line + "\n")
    except (OSError, ValueError):
        pass


def err(line: str) -> None:
    """One log line on stderr."""
    try:
        sys.stderr.write(line + "\n")
    except (OSError, ValueError):
        pass


def install_signals(*signums: int) -> None:
    """Turn the given signals into `Stop` in the main thread (the executor sends SIGTERM, then KILL)."""

    def handler(signum: int, _frame: object) -> None:
        raise Stop(signum)

    for s in signums or (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handler)


def port_for(default: int) -> int:
    """The port to listen on: the image's, unless a test overrides it."""
    override = os.environ.get("LABCTL_IMAGE_PORT")
    return int(override) if override else default


def listen(port: int, backlog: int = 511) -> socket.socket:
    """A listening socket on every address (dual-stack ``[::]`` when IPv6 exists, else ``0.0.0.0``)."""
    bind = os.environ.get("LABCTL_IMAGE_BIND", "")
    if bind:
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind, port))
    else:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
    sock.listen(backlog)
    return sock


def peer(addr: tuple[object, ...]) -> tuple[str, int]:
    """``(ip, port)`` of a client, with IPv4-mapped IPv6 (``::ffff:10.0.0.2``) unmapped."""
    host = str(addr[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(addr[1])  # type: ignore[call-overload]


def serve(sock: socket.socket, handle: Callable[[socket.socket, tuple[str, int]], None]) -> Stop:
    """Accept until a signal arrives; each connection runs ``handle`` in a daemon thread.

    Returns the `Stop` that ended the loop, so the caller can log the way its image does; the
    socket stays open (a reload signal goes back to serving on it).
    """
    try:
        while True:
            try:
                conn, addr = sock.accept()
            except OSError:  # EMFILE, ECONNABORTED...: back off instead of spinning
                time.sleep(0.01)
                continue
            t = threading.Thread(target=_run_handler, args=(handle, conn, peer(addr)), daemon=True)
            t.start()
    except Stop as stop:
        return stop


def _run_handler(
    handle: Callable[[socket.socket, tuple[str, int]], None], conn: socket.socket, addr: tuple[str, int]
) -> None:
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handle(conn, addr)
    except (OSError, ValueError, EOFError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


# --------------------------------------------------------------------------- time formats


def http_date(ts: float | None = None) -> str:
    """RFC 7231 date (``Date``/``Last-Modified``) without importing email.utils."""
    t = time.gmtime(ts)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def clf_date(ts: float | None = None) -> str:
    """Common-log-format time, ``01/May/2024:10:00:00 +0000`` (nginx/httpd access logs)."""
    t = time.gmtime(ts)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


# --------------------------------------------------------------------------- HTTP/1.1


class Request:
    """One parsed HTTP request (enough for curl, wget, browsers and load-balancing demos)."""

    __slots__ = ("body", "headers", "method", "path", "query", "target", "version")

    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body
        path, _, query = target.partition("?")
        self.path = path
        self.query = query

    def header(self, name: str, default: str = "") -> str:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    @property
    def line(self) -> str:
        return f"{self.method} {self.target} {self.version}"

    def keep_alive(self) -> bool:
        conn = self.header("Connection").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"

    def param(self, name: str) -> str:
        """First value of a query parameter (no percent-decoding beyond the basics)."""
        for part in self.query.split("&"):
            k, _, v = part.partition("=")
            if k == name:
                return v.replace("+", " ")
        return ""


class BadRequest(Exception):
    """The client sent something that is not HTTP; answer 400 and close."""


def read_request(rfile: object, max_header: int = 65536) -> Request | None:
    """Read one request from a buffered socket file; None on a clean EOF before any byte."""
    readline = rfile.readline  # type: ignore[attr-defined]
    line = readline(max_header)
    while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests (RFC 7230 3.5)
        line = readline(max_header)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split()
    if len(parts) == 2:
        parts.append("HTTP/0.9")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest(line.decode("latin-1").rstrip("\r\n"))
    headers: list[tuple[str, str]] = []
    total = 0
    while True:
        h = readline(max_header)
        total += len(h)
        if not h or h in (b"\r\n", b"\n") or total > max_header:
            break
        k, sep, v = h.decode("latin-1").partition(":")
        if sep:
            headers.append((k.strip(), v.strip()))
    req = Request(parts[0], parts[1], parts[2], headers, b"")
    length = req.header("Content-Length")
    if length.isdigit():
        req.body = rfile.read(int(length))  # type: ignore[attr-defined]
    elif req.header("Transfer-Encoding").lower() == "chunked":
        req.body = _read_chunked(rfile)
    return req


def _read_chunked(rfile: object) -> bytes:
    chunks: list[bytes] = []
    while True:
        size_line = rfile.readline(1024)  # type: ignore[attr-defined]
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline(1024) not in (b"\r\n", b"\n", b""):  # type: ignore[attr-defined]
                pass
            return b"".join(chunks)
        chunks.append(rfile.read(size))  # type: ignore[attr-defined]
        rfile.readline(1024)  # type: ignore[attr-defined]


REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Not Allowed",
    500: "Internal Server Error",
}


def send_response(
    conn: socket.socket,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    *,
    head: bool = False,
    reason: str | None = None,
    version: str = "HTTP/1.1",
) -> None:
    """Write a status line, headers (in the given order) and body in one send."""
    lines = [f"{version} {status} {reason or REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if not head:
        data += body
    conn.sendall(data)


HttpHandler = Callable[[Request, tuple[str, int]], tuple[int, list[tuple[str, str]], bytes]]
AccessLog = Callable[[Request, tuple[str, int], int, int], None]


def http_connection(
    conn: socket.socket,
    addr: tuple[str, int],
    app: HttpHandler,
    log: AccessLog | None = None,
    bad_request: Callable[[], tuple[int, list[tuple[str, str]], bytes]] | None = None,
    idle_timeout: float = 75.0,
    announce_keepalive: bool = True,
) -> None:
    """Serve keep-alive requests on one connection with ``app``; log each with ``log``.

    ``announce_keepalive=False`` is Go's style: a ``Connection`` header only when closing.
    """
    conn.settimeout(idle_timeout)
    rfile = conn.makefile("rb")
    try:
        while True:
            try:
                req = read_request(rfile)
            except (BadRequest, UnicodeDecodeError, ValueError):
                if bad_request is not None:
                    status, headers, body = bad_request()
                    send_response(conn, status, headers, body)
                return
            except TimeoutError:
                return
            if req is None:
                return
            status, headers, body = app(req, addr)
            keep = req.keep_alive()
            headers = [(k, v) for k, v in headers if k.lower() != "connection"]
            if not keep:
                headers.append(("Connection", "close"))
            elif announce_keepalive or req.version == "HTTP/1.0":
                headers.append(("Connection", "keep-alive"))
            send_response(conn, status, headers, body, head=req.method == "HEAD")
            if log is not None:
                log(req, addr, status, 0 if req.method == "HEAD" else len(body))
            if not keep:
                return
    finally:
        rfile.close()


# --------------------------------------------------------------------------- interfaces


def interface_addresses() -> list[str]:
    """Every address of every interface, in ``ip addr`` order (by ifindex, IPv4 before IPv6).

    Read over rtnetlink (RTM_GETADDR dump) so it is exact, namespace-local and costs no subprocess.
    """
    import struct

    nlmsg_done, nlmsg_error, rtm_newaddr, rtm_getaddr = 3, 2, 20, 22
    ifa_address, ifa_local = 1, 2
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    except OSError:
        return _fallback_addresses()
    by_index: dict[int, list[str]] = {}
    try:
        s.bind((0, 0))
        req = struct.pack("=IHHII", 0, rtm_getaddr, 0x301, 1, 0) + struct.pack("=BBBBI", 0, 0, 0, 0, 0)
        req = struct.pack("=I", len(req)) + req[4:]
        s.send(req)
        done = False
        while not done:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    done = True
                    break
                if mtype in (nlmsg_done, nlmsg_error):
                    done = True
                    break
                if mtype == rtm_newaddr:
                    family, _plen, _fl, _scope, index = struct.unpack_from("=BBBBI", data, off + 16)
                    attrs: dict[int, bytes] = {}
                    a = off + 24
                    while a + 4 <= off + length:
                        alen, atype = struct.unpack_from("=HH", data, a)
                        if alen < 4:
                            break
                        attrs[atype] = data[a + 4 : a + alen]
                        a += (alen + 3) & ~3
                    raw = attrs.get(ifa_local) if family == socket.AF_INET else None
                    raw = raw or attrs.get(ifa_address)
                    if raw:
                        by_index.setdefault(index, []).append(socket.inet_ntop(family, raw))
                off += (length + 3) & ~3
    except OSError:
        return _fallback_addresses()
    finally:
        s.close()
    result: list[str] = []
    for index in sorted(by_index):
        v4 = [a for a in by_index[index] if ":" not in a]
        v6 = [a for a in by_index[index] if ":" in a]
        result.extend(v4 + v6)
    return result


def _fallback_addresses() -> list[str]:
    try:
        return [socket.gethostbyname(socket.gethostname())]
    except OSError:
        return ["127.0.0.1"]
