"""``traefik/whoami``: prints who answered (hostname, IPs) and the request it got, on port 80.

The output is the real whoami's (Go's ``Request.Write`` after ``Hostname:``/``IP:``/``RemoteAddr:``
lines), so a load-balancing demo shows a different hostname/IP per replica. Also ``/api`` (JSON),
``/health``, ``/data?size=N`` and ``/bench``; flags ``--port``, ``--name``, ``--verbose`` and env
``WHOAMI_PORT_NUMBER``/``WHOAMI_NAME`` as in the image.
"""

from __future__ import annotations

import os
import signal
import socket
import time

from agents.worker.images.programs import _net

_EXCLUDED = {"host", "user-agent", "content-length", "transfer-encoding", "trailer"}


def canonical(key: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey`` (``x-forwarded-for`` -> ``X-Forwarded-For``)."""
    if any(c in key for c in " \t:"):
        return key
    return "-".join(p[:1].upper() + p[1:].lower() for p in key.split("-"))


def _go_duration(text: str) -> float | None:
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, num = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = next((u for u in sorted(units, key=len, reverse=True) if text.startswith(u, i)), None)
        if unit is None or not num:
            return None
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    return total if not num else None


class Whoami:
    """The handlers of whoami's HTTP server."""

    def __init__(self, name: str, verbose: bool) -> None:
        self.name = name
        self.verbose = verbose

    def request_dump(self, req: _net.Request) -> str:
        """``req.Write(w)``: request line, Host, User-Agent, then the other headers sorted by key."""
        lines = [f"{req.method} {req.target} HTTP/1.1", f"Host: {req.header('Host')}"]
        ua = next((v for k, v in req.headers if k.lower() == "user-agent"), None)
        if ua is None:
            lines.append("User-Agent: Go-http-client/1.1")
        elif ua:
            lines.append(f"User-Agent: {ua}")
        if req.body:
            lines.append(f"Content-Length: {len(req.body)}")
        others: dict[str, list[str]] = {}
        for k, v in req.headers:
            if k.lower() not in _EXCLUDED:
                others.setdefault(canonical(k), []).append(v)
        for k in sorted(others):
            lines.extend(f"{k}: {v}" for v in others[k])
        return "\r\n".join(lines) + "\r\n\r\n" + req.body.decode("latin-1")

    def app(self, req: _net.Request, addr: tuple[str, int]) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.verbose:
            _net.err(f"{time.strftime('%Y/%m/%d %H:%M:%S')} {addr[0]}:{addr[1]} - - {req.line}")
        path = req.path
        if path == "/api":
            return self.api(req, addr)
        if path == "/health":
            return 200, self._headers("text/plain; charset=utf-8", 0), b""
        if path == "/bench":
            return 200, self._headers("text/plain", 1), b"1"
        if path == "/data":
            return self.data(req)
        wait = _go_duration(req.param("wait")) if req.param("wait") else None
        if wait:
            time.sleep(min(wait, 600.0))
        out = []
        if "BLUE_GREEN" in os.environ:
            out.append(f"Environment (BLUE_GREEN): {os.environ['BLUE_GREEN']}")
        out.append(f"Hostname: {socket.gethostname()}")
        if self.name:
            out.append(f"Name: {self.name}")
        out.extend(f"IP: {ip}" for ip in _net.interface_addresses())
        out.append(f"RemoteAddr: {_remote(addr)}")
        body = ("\n".join(out) + "\n" + self.request_dump(req)).encode("latin-1", "replace")
        return 200, self._headers("text/plain; charset=utf-8", len(body)), body

    def api(self, req: _net.Request, addr: tuple[str, int]) -> tuple[int, list[tuple[str, str]], bytes]:
        import json

        headers: dict[str, list[str]] = {}
        for k, v in req.headers:
            if k.lower() != "host":
                headers.setdefault(canonical(k), []).append(v)
        data: dict[str, object] = {"hostname": socket.gethostname()}
        if self.name:
            data["name"] = self.name
        data.update(
            ip=_net.interface_addresses(),
            headers=headers,
            url=req.target,
            host=req.header("Host"),
            method=req.method,
            remoteAddr=_remote(addr),
        )
        body = (json.dumps(data, separators=(",", ":")) + "\n").encode()
        return 200, self._headers("application/json", len(body)), body

    def data(self, req: _net.Request) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            size = max(0, int(req.param("size")))
        except ValueError:
            size = 1
        size *= {"kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}.get(req.param("unit").lower(), 1)
        size = min(size, 64 << 20)
        charset = b"-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        body = bytearray((charset * (size // len(charset) + 1))[:size])
        if size:
            body[0] = body[-1] = ord("|")
        return 200, self._headers("text/plain; charset=utf-8", size), bytes(body)

    @staticmethod
    def _headers(ctype: str, length: int) -> list[tuple[str, str]]:
        return [("Date", _net.http_date()), ("Content-Length", str(length)), ("Content-Type", ctype)]

    def handle(self, conn: object, addr: tuple[str, int]) -> None:
        _net.http_connection(conn, addr, self.app, None, announce_keepalive=False)  # type: ignore[arg-type]


def _remote(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _flag(args: list[str], name: str) -> str | None:
    """Go's flag package: ``-name v``, ``--name v``, ``-name=v``, ``--name=v``."""
    for i, a in enumerate(args):
        bare = a.lstrip("-")
        if a.startswith("-") and bare == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("-") and bare.startswith(name + "="):
            return bare.partition("=")[2]
    return None


def main(argv: list[str], spec: object) -> int:
    """``/whoami [--port N] [--name NAME] [--verbose]``."""
    _net.setup_stdio()
    args = argv[1:]
    port = _flag(args, "port") or os.environ.get("WHOAMI_PORT_NUMBER") or "80"
    name = _flag(args, "name") or os.environ.get("WHOAMI_NAME", "")
    verbose = any(a.lstrip("-") in ("verbose", "verbose=true") for a in args)
    app = Whoami(name, verbose)
    _net.install_signals(signal.SIGTERM, signal.SIGINT)
    try:
        sock = _net.listen(_net.port_for(int(port)))
    except (OSError, ValueError) as exc:
        _net.err(f"{time.strftime('%Y/%m/%d %H:%M:%S')} listen tcp :{port}: bind: {exc}")
        return 1
    _net.err(f"{time.strftime('%Y/%m/%d %H:%M:%S')} Starting up on port {port}")
    _net.serve(sock, app.handle)
    sock.close()
    return 0
