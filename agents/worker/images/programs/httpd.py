"""``httpd``: Apache's stock "It works!" page on port 80, with Apache's logs and stop signals.

``httpd-foreground`` in the official image runs ``httpd -DFOREGROUND``: access log in common
format on stdout, error log on stderr. SIGTERM/SIGINT stop at once and SIGWINCH (the image's
STOPSIGNAL) stops gracefully; all exit 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from agents.worker.images.programs import _net

INDEX = b"<html><body><h1>It works!</h1></body></html>\n"
MTIME = 1181587994  # htdocs/index.html in the httpd tarball: Mon, 11 Jun 2007 18:53:14 GMT
ETAG = '"2d-432a5e4a73a80"'
NOT_FOUND = b"""<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>404 Not Found</title>
</head><body>
<h1>Not Found</h1>
<p>The requested URL was not found on this server.</p>
</body></html>
"""


def _errlog_ts() -> str:
    now = time.time()
    return time.strftime("%a %b %d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d} " + time.strftime(
        "%Y", time.gmtime(now)
    )


class Httpd:
    """The default ``httpd.conf`` virtual host of the official image."""

    def __init__(self, version: str) -> None:
        self.server = f"Apache/{version} (Unix)"
        self.pid = os.getpid()

    def log(self, module: str, msg: str) -> None:
        _net.err(f"[{_errlog_ts()}] [{module}] [pid {self.pid}:tid {threading.get_ident()}] {msg}")

    def app(self, req: _net.Request, addr: tuple[str, int]) -> tuple[int, list[tuple[str, str]], bytes]:
        base = [("Date", _net.http_date()), ("Server", self.server)]
        if req.path not in ("/", "/index.html"):
            return 404, [*base, ("Content-Length", str(len(NOT_FOUND))), ("Content-Type", "text/html; charset=iso-8859-1")], NOT_FOUND
        headers = [
            *base,
            ("Last-Modified", _net.http_date(MTIME)),
            ("ETag", ETAG),
            ("Accept-Ranges", "bytes"),
            ("Content-Length", str(len(INDEX))),
            ("Content-Type", "text/html"),
        ]
        if req.header("If-None-Match") == ETAG:
            return 304, headers[:4], b""
        return 200, headers, INDEX

    def access_log(self, req: _net.Request, addr: tuple[str, int], status: int, size: int) -> None:
        _net.out(f'{addr[0]} - - [{_net.clf_date()}] "{req.line}" {status} {size if size else "-"}')

    def handle(self, conn: object, addr: tuple[str, int]) -> None:
        _net.http_connection(conn, addr, self.app, self.access_log, idle_timeout=5.0)  # type: ignore[arg-type]


def main(argv: list[str], spec: object) -> int:
    """``httpd-foreground`` / ``httpd -DFOREGROUND`` (``-v`` prints the version)."""
    version = getattr(spec, "version", "") or "2.4.62"
    _net.setup_stdio()
    if "-v" in argv[1:] or "-V" in argv[1:]:
        _net.out(f"Server version: Apache/{version} (Unix)\nServer built:   Jul 23 2024 00:00:00")
        return 0
    server = Httpd(version)
    _net.install_signals(signal.SIGTERM, signal.SIGINT, signal.SIGWINCH, signal.SIGHUP, signal.SIGUSR1)
    try:
        sock = _net.listen(_net.port_for(80))
    except OSError as exc:
        _net.err(f"(98){exc.strerror}: AH00072: make_sock: could not bind to address [::]:80")
        return 1
    ips = [a for a in _net.interface_addresses() if not a.startswith("127.") and ":" not in a]
    me = ips[0] if ips else "127.0.0.1"
    for _ in range(2):
        _net.err(
            f"AH00558: httpd: Could not reliably determine the server's fully qualified domain name, using {me}. "
            "Set the 'ServerName' directive globally to suppress this message"
        )
    server.log("mpm_event:notice", f"AH00489: {server.server} configured -- resuming normal operations")
    server.log("core:notice", "AH00094: Command line: 'httpd -D FOREGROUND'")
    while True:
        stop = _net.serve(sock, server.handle)
        if stop.signum in (signal.SIGHUP, signal.SIGUSR1):
            server.log("mpm_event:notice", "AH00493: SIGUSR1 received.  Doing graceful restart")
            server.log("mpm_event:notice", f"AH00489: {server.server} configured -- resuming normal operations")
            continue
        break
    if stop.signum == signal.SIGWINCH:
        server.log("mpm_event:notice", "AH00492: caught SIGWINCH, shutting down gracefully")
    else:
        server.log("mpm_event:notice", f"AH00491: caught {stop.name}, shutting down")
    sock.close()
    return 0
