"""The HTTP images answer as their real images do (loopback only)."""

from __future__ import annotations

import json
import re
import signal
import socket

from tests.unit.images.conftest import StartFn, http_get


def test_nginx_default_page_and_server_header(start: StartFn) -> None:
    task = start("nginx:1.25")
    status, headers, body = http_get(task.port)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Server"] == "nginx/1.25.5"
    assert headers["Content-Type"] == "text/html"
    assert headers["Content-Length"] == "615" == str(len(body))
    assert headers["ETag"] == '"661e8b67-267"'
    assert b"<title>Welcome to nginx!</title>" in body
    status, _, body = http_get(task.port, "/missing")
    assert status == "HTTP/1.1 404 Not Found" and b"<hr><center>nginx/1.25.5</center>" in body
    task.wait_for('"GET / HTTP/1.1" 200 615 "-" "curl/7.88.1" "-"')
    assert re.search(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /missing', task.stdout, re.M)
    assert "Configuration complete; ready for start up" in task.stdout
    assert "[notice]" in task.stderr and "nginx/1.25.5" in task.stderr
    assert task.stop(signal.SIGTERM) == 0
    assert "signal 15 (SIGTERM) received, exiting" in task.stderr


def test_nginx_latest_and_sigquit(start: StartFn) -> None:
    task = start("nginx:alpine")
    _, headers, _ = http_get(task.port)
    assert re.fullmatch(r"nginx/1\.2\d\.\d+", headers["Server"])
    # keep-alive: two requests on one connection
    with socket.create_connection(("127.0.0.1", task.port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert f.readline().startswith(b"HTTP/1.1 200")
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            assert len(f.read(length)) == 615
    assert task.stop(signal.SIGQUIT) == 0
    assert "signal 3 (SIGQUIT) received, shutting down" in task.stderr


def test_httpd_it_works(start: StartFn) -> None:
    task = start("httpd:2.4")
    status, headers, body = http_get(task.port)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Server"] == "Apache/2.4.62 (Unix)"
    assert body == b"<html><body><h1>It works!</h1></body></html>\n"
    task.wait_for('"GET / HTTP/1.1" 200 45')
    assert "AH00094: Command line: 'httpd -D FOREGROUND'" in task.stderr
    assert task.stop(signal.SIGWINCH) == 0
    assert "caught SIGWINCH, shutting down gracefully" in task.stderr


def test_whoami_output_format(start: StartFn) -> None:
    task = start("traefik/whoami")
    status, headers, body = http_get(task.port, "/?x=1", {"x-custom": "v", "Accept-Language": "en"})
    assert status == "HTTP/1.1 200 OK"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    text = body.decode()
    lines = text.split("\n")
    assert lines[0] == f"Hostname: {socket.gethostname()}"
    ips = [line[4:] for line in lines if line.startswith("IP: ")]
    assert "127.0.0.1" in ips
    remote = next(line for line in lines if line.startswith("RemoteAddr: "))
    assert re.fullmatch(r"RemoteAddr: 127\.0\.0\.1:\d+", remote)
    dump = text.split(remote + "\n", 1)[1]
    assert dump == (
        "GET /?x=1 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{task.port}\r\n"
        "User-Agent: curl/7.88.1\r\n"
        "Accept: */*\r\n"
        "Accept-Language: en\r\n"
        "Connection: close\r\n"
        "X-Custom: v\r\n"
        "\r\n"
    )
    _, _, api = http_get(task.port, "/api")
    data = json.loads(api)
    assert data["hostname"] == socket.gethostname() and "127.0.0.1" in data["ip"]
    assert "Starting up on port" in task.stderr
    assert task.stop() == 0


def test_whoami_name_flag(start: StartFn) -> None:
    task = start("traefik/whoami", "--name", "blue")
    _, _, body = http_get(task.port)
    assert body.decode().split("\n")[1] == "Name: blue"


def test_flask_page(start: StartFn) -> None:
    task = start("sposigor/app-flask-teste:1")
    status, headers, body = http_get(task.port)
    assert status == "HTTP/1.1 200 OK"
    assert headers["Server"].startswith("Werkzeug/")
    assert b"<html" in body and socket.gethostname().encode() in body
    task.wait_for('"GET / HTTP/1.1" 200 -', stream="stderr")
    assert task.stop() == 0


def test_helloworld_node(start: StartFn) -> None:
    task = start("drhelius/helloworld-node-microservice")
    status, headers, body = http_get(task.port)
    assert (status, body) == ("HTTP/1.1 200 OK", b"Hello World!")
    assert headers["X-Powered-By"] == "Express"
    assert http_get(task.port, "/nope")[0] == "HTTP/1.1 404 Not Found"
    assert task.stop() == 0
