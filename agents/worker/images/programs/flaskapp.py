"""``sposigor/app-flask-teste``: a small Flask page on port 5000 (Werkzeug's dev server).

The classroom image is a one-route Flask app; this serves an equivalent page that names the
container (so replicas are told apart) with Werkzeug's headers and its request log on stderr.
"""

from __future__ import annotations

import signal
import socket
import time

from agents.worker.images.programs import _net

PAGE = """<!DOCTYPE html>
<html lang="pt-br">
<head>
<meta charset="utf-8">
<title>App Flask Teste</title>
</head>
<body>
<h1>Hello World! App Flask Teste</h1>
<p>Servido pelo container <b>{hostname}</b>.</p>
</body>
</html>
"""

NOT_FOUND = b"""<!doctype html>
<html lang=en>
<title>404 Not Found</title>
<h1>Not Found</h1>
<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>
"""


class FlaskApp:
    """The app's one route, behind Werkzeug's development server."""

    def __init__(self, server: str) -> None:
        self.server = server

    def app(self, req: _net.Request, addr: tuple[str, int]) -> tuple[int, list[tuple[str, str]], bytes]:
        if req.path == "/":
            body = PAGE.format(hostname=socket.gethostname()).encode()
            status = 200
        else:
            body, status = NOT_FOUND, 404
        headers = [
            ("Server", self.server),
            ("Date", _net.http_date()),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        return status, headers, body

    def access_log(self, req: _net.Request, addr: tuple[str, int], status: int, size: int) -> None:
        ts = time.strftime("%d/%b/%Y %H:%M:%S", time.gmtime())
        _net.err(f'{addr[0]} - - [{ts}] "{req.line}" {status} -')

    def handle(self, conn: object, addr: tuple[str, int]) -> None:
        _net.http_connection(conn, addr, self.app, self.access_log)  # type: ignore[arg-type]


def main(argv: list[str], spec: object) -> int:
    """``python app.py``: serve on 0.0.0.0:5000 until SIGTERM."""
    _net.setup_stdio()
    werkzeug = getattr(spec, "version", "") or "2.0.3"
    app = FlaskApp(f"Werkzeug/{werkzeug} Python/3.9.7")
    _net.install_signals(signal.SIGTERM, signal.SIGINT)
    port = _net.port_for(5000)
    sock = _net.listen(port)
    ips = [a for a in _net.interface_addresses() if not a.startswith("127.") and ":" not in a]
    _net.err(" * Serving Flask app 'app' (lazy loading)")
    _net.err(" * Environment: production")
    _net.err("   WARNING: This is a development server. Do not use it in a production deployment.")
    _net.err("   Use a production WSGI server instead.")
    _net.err(" * Debug mode: off")
    _net.err(" * Running on all addresses.")
    _net.err("   WARNING: This is a development server. Do not use it in a production deployment.")
    _net.err(f" * Running on http://{ips[0] if ips else '127.0.0.1'}:{port}/ (Press CTRL+C to quit)")
    _net.serve(sock, app.handle)
    sock.close()
    return 0
