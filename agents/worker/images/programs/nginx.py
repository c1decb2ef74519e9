"""``nginx``: the official image's default site on port 80, with nginx's logs and signals.

Serves the stock "Welcome to nginx!" page (same bytes, ETag and headers as the image), its 404 and
50x pages, access log lines in the image's ``main`` format on stdout and error-log notices on
stderr. SIGQUIT (the image's STOPSIGNAL) and SIGTERM both exit 0, as nginx does.
"""

from __future__ import annotations

import os
import signal
import time

from agents.worker.images.programs import _net

INDEX = b"""<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

FIFTY_X = b"""<!DOCTYPE html>
<html>
<head>
<title>Error</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>An error occurred.</h1>
<p>Sorry, the page you are looking for is currently unavailable.<br/>
Please try again later.</p>
<p>If you are the system administrator of this resource then you should check
the error log for details.</p>
<p><em>Faithfully yours, nginx.</em></p>
</body>
</html>
"""

MTIME = 1713277799  # the package build time of the html files (Tue, 16 Apr 2024 14:29:59 GMT)
ROOT = "/usr/share/nginx/html"


def _error_page(status: int, reason: str, server: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>{server}</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def _ts() -> str:
    return time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime())


class Nginx:
    """One nginx master: the default server block of /etc/nginx/conf.d/default.conf."""

    def __init__(self, version: str) -> None:
        self.server = f"nginx/{version}"
        self.pid = os.getpid()
        self.worker = self.pid
        self.conn_no = 0

    def notice(self, msg: str, level: str = "notice") -> None:
        _net.err(f"{_ts()} [{level}] {self.pid}#{self.pid}: {msg}")

    def app(self, req: _net.Request, addr: tuple[str, int]) -> tuple[int, list[tuple[str, str]], bytes]:
        base = [("Server", self.server), ("Date", _net.http_date())]
        files = {"/": INDEX, "/index.html": INDEX, "/50x.html": FIFTY_X}
        body = files.get(req.path)
        if body is None:
            self.conn_no += 1
            name = ROOT + req.path
            self.notice(
                f'*{self.conn_no} open() "{name}" failed (2: No such file or directory), client: {addr[0]}, '
                f'server: localhost, request: "{req.line}", host: "{req.header("Host")}"',
                level="error",
            )
            page = _error_page(404, "Not Found", self.server)
            return 404, [*base, ("Content-Type", "text/html"), ("Content-Length", str(len(page)))], page
        if req.method not in ("GET", "HEAD"):
            page = _error_page(405, "Not Allowed", self.server)
            return 405, [*base, ("Content-Type", "text/html"), ("Content-Length", str(len(page)))], page
        etag = f'"{MTIME:x}-{len(body):x}"'
        headers = [
            *base,
            ("Content-Type", "text/html"),
            ("Content-Length", str(len(body))),
            ("Last-Modified", _net.http_date(MTIME)),
            ("ETag", etag),
            ("Accept-Ranges", "bytes"),
        ]
        if req.header("If-None-Match") == etag or req.header("If-Modified-Since") == _net.http_date(MTIME):
            return 304, [h for h in headers if h[0] not in ("Content-Type", "Content-Length")], b""
        return 200, headers, body

    def bad_request(self) -> tuple[int, list[tuple[str, str]], bytes]:
        page = _error_page(400, "Bad Request", self.server)
        return (
            400,
            [("Server", self.server), ("Date", _net.http_date()), ("Content-Type", "text/html"),
             ("Content-Length", str(len(page))), ("Connection", "close")],
            page,
        )

    def access_log(self, req: _net.Request, addr: tuple[str, int], status: int, size: int) -> None:
        ref = req.header("Referer") or "-"
        ua = req.header("User-Agent") or "-"
        xff = req.header("X-Forwarded-For") or "-"
        _net.out(f'{addr[0]} - - [{_net.clf_date()}] "{req.line}" {status} {size} "{ref}" "{ua}" "{xff}"')

    def handle(self, conn: object, addr: tuple[str, int]) -> None:
        _net.http_connection(conn, addr, self.app, self.access_log, self.bad_request)  # type: ignore[arg-type]


def _entrypoint_logs() -> None:
    """What /docker-entrypoint.sh prints before exec'ing nginx (stdout)."""
    for line in (
        "/docker-entrypoint.sh: /docker-entrypoint.d/ is not empty, will attempt to perform configuration",
        "/docker-entrypoint.sh: Looking for shell scripts in /docker-entrypoint.d/",
        "/docker-entrypoint.sh: Launching /docker-entrypoint.d/10-listen-on-ipv6-by-default.sh",
        "10-listen-on-ipv6-by-default.sh: info: Getting the checksum of /etc/nginx/conf.d/default.conf",
        "10-listen-on-ipv6-by-default.sh: info: Enabled listen on IPv6 in /etc/nginx/conf.d/default.conf",
        "/docker-entrypoint.sh: Sourcing /docker-entrypoint.d/15-local-resolvers.envsh",
        "/docker-entrypoint.sh: Launching /docker-entrypoint.d/20-envsubst-on-templates.sh",
        "/docker-entrypoint.sh: Launching /docker-entrypoint.d/30-tune-worker-processes.sh",
        "/docker-entrypoint.sh: Configuration complete; ready for start up",
    ):
        _net.out(line)


def main(argv: list[str], spec: object) -> int:
    """``nginx [-v|-V|-t|-g directives]``: answer the informational flags, else serve forever."""
    version = getattr(spec, "version", "") or "1.27.4"
    _net.setup_stdio()
    args = argv[1:]
    if "-v" in args or "-V" in args:
        _net.err(f"nginx version: nginx/{version}")
        if "-V" in args:
            _net.err("built by gcc 12.2.0 (Debian 12.2.0-14)")
        return 0
    if "-t" in args or "-T" in args:
        _net.err("nginx: the configuration file /etc/nginx/nginx.conf syntax is ok")
        _net.err("nginx: configuration file /etc/nginx/nginx.conf test is successful")
        return 0
    server = Nginx(version)
    _net.install_signals(signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
    try:
        sock = _net.listen(_net.port_for(80))
    except OSError as exc:
        _net.err(f'{_ts()} [emerg] {server.pid}#{server.pid}: bind() to 0.0.0.0:80 failed ({exc.errno}: {exc.strerror})')
        return 1
    if os.environ.get("NGINX_ENTRYPOINT_QUIET_LOGS", "") == "":
        _entrypoint_logs()
    server.notice('using the "epoll" event method')
    server.notice(f"nginx/{version}")
    server.notice("built by gcc 12.2.0 (Debian 12.2.0-14) ")
    server.notice(f"OS: Linux {os.uname().release}")
    server.notice("getrlimit(RLIMIT_NOFILE): 1048576:1048576")
    server.notice("start worker processes")
    server.notice(f"start worker process {server.pid + 1}")
    while True:
        stop = _net.serve(sock, server.handle)
        if stop.signum == signal.SIGHUP:  # reload: nothing to re-read; keep serving
            server.notice("signal 1 (SIGHUP) received, reconfiguring")
            continue
        break
    if stop.signum == signal.SIGQUIT:
        server.notice("signal 3 (SIGQUIT) received, shutting down")
        server.notice("gracefully shutting down")
    else:
        server.notice(f"signal {stop.signum} ({stop.name}) received, exiting")
    server.notice(f"worker process {server.pid + 1} exited with code 0")
    server.notice("exit")
    return 0
