"""``drhelius/helloworld-node-microservice``: an Express app answering ``Hello World!`` on 8080."""

from __future__ import annotations

import signal

from agents.worker.images.programs import _net

BODY = b"Hello World!"
ETAG = 'W/"c-Lve95gjOVATpfV8EL5X4nxwjKHE"'  # Express's weak ETag of "Hello World!"


def app(req: _net.Request, addr: tuple[str, int]) -> tuple[int, list[tuple[str, str]], bytes]:
    """``app.get('/', ...)``; anything else is Express's default 404."""
    if req.path == "/" and req.method in ("GET", "HEAD"):
        return 200, [
            ("X-Powered-By", "Express"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(BODY))),
            ("ETag", ETAG),
            ("Date", _net.http_date()),
        ], BODY
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n</head>\n'
        f"<body>\n<pre>Cannot {req.method} {req.path}</pre>\n</body>\n</html>\n"
    ).encode()
    return 404, [
        ("X-Powered-By", "Express"),
        ("Content-Security-Policy", "default-src 'none'"),
        ("X-Content-Type-Options", "nosniff"),
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Length", str(len(page))),
        ("Date", _net.http_date()),
    ], page


def handle(conn: object, addr: tuple[str, int]) -> None:
    _net.http_connection(conn, addr, app, None, idle_timeout=5.0)  # type: ignore[arg-type]


def main(argv: list[str], spec: object) -> int:
    """``npm start`` / ``node server.js``: listen on 8080 until SIGTERM."""
    _net.setup_stdio()
    _net.install_signals(signal.SIGTERM, signal.SIGINT)
    sock = _net.listen(_net.port_for(8080))
    if argv and argv[0].endswith("npm"):
        _net.out("\n> helloworld-node-microservice@1.0.0 start /usr/src/app\n> node server.js\n")
    _net.out("Running on http://localhost:8080")
    _net.serve(sock, handle)
    sock.close()
    return 0
