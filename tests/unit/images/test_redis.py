"""redis: raw RESP, and the real redis-cli when Debian's redis-tools is installed."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from tests.unit.images.conftest import StartFn


class Resp:
    """A minimal RESP2 client, so the test does not depend on the server's own parser."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")

    def __call__(self, *args: str | bytes) -> object:
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        self.sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
        return self.read()

    def read(self) -> object:
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Exception(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise AssertionError(line)


def test_resp_commands(start: StartFn) -> None:
    task = start("redis:7.2")
    r = Resp(task.port)
    assert r("PING") == "PONG"
    assert r("ECHO", "hey") == b"hey"
    assert r("SET", "k", "v") == "OK"
    assert r("GET", "k") == b"v"
    assert r("EXISTS", "k", "nope") == 1
    assert r("DEL", "k") == 1
    assert r("GET", "k") is None
    assert r("INCR", "hits") == 1
    assert r("INCR", "hits") == 2
    assert r("INCRBY", "hits", "10") == 12
    assert str(r("INCR", "hits2") and r("SET", "s", "x") and r("INCR", "s")).startswith("ERR value is not an integer")
    assert r("SET", "t", "1", "EX", "100") == "OK" and 0 < int(r("TTL", "t")) <= 100  # type: ignore[call-overload]
    assert r("RPUSH", "l", "a", "b") == 2 and r("LRANGE", "l", "0", "-1") == [b"a", b"b"]
    assert r("HSET", "h", "f", "1") == 1 and r("HGETALL", "h") == [b"f", b"1"]
    assert str(r("GET", "l")).startswith("WRONGTYPE")
    info = r("INFO", "server")
    assert isinstance(info, bytes) and b"redis_version:7.2.6\r\n" in info
    assert isinstance(r("COMMAND"), list)
    assert r("CLIENT", "SETNAME", "me") == "OK" and r("CLIENT", "GETNAME") == b"me"
    hello = r("HELLO", "2")
    assert isinstance(hello, list) and hello[:4] == [b"server", b"redis", b"version", b"7.2.6"]
    assert r("MULTI") == "OK" and r("INCR", "m") == "QUEUED" and r("EXEC") == [1]
    assert str(r("NOSUCH", "a")).startswith("ERR unknown command 'NOSUCH', with args beginning with: 'a'")
    assert r("QUIT") == "OK"
    assert r.f.read() == b""  # server closed the connection
    task.wait_for("Ready to accept connections tcp")
    assert "Redis version=7.2.6" in task.stdout
    assert task.stop() == 0
    assert "Redis is now ready to exit, bye bye..." in task.stdout


def test_inline_commands_and_requirepass(start: StartFn) -> None:
    task = start("redis", "--requirepass", "pw")
    with socket.create_connection(("127.0.0.1", task.port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(b"PING\r\n")
        assert f.readline() == b"-NOAUTH Authentication required.\r\n"
        s.sendall(b"AUTH wrong\r\n")
        assert f.readline().startswith(b"-WRONGPASS")
        s.sendall(b"AUTH pw\r\nPING\r\n")
        assert f.readline() == b"+OK\r\n" and f.readline() == b"+PONG\r\n"


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli (Debian package redis-tools)")
def test_redis_cli(start: StartFn) -> None:
    task = start("redis:7")
    cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(task.port)]

    def run(*args: str, stdin: str | None = None, extra: tuple[str, ...] = ()) -> str:
        return subprocess.run([*cli, *extra, *args], input=stdin, capture_output=True, text=True, timeout=20, check=True).stdout

    assert run("ping") == "PONG\n"
    assert run("set", "a", "1") == "OK\n"
    assert run("incr", "a") == "2\n"
    assert run("get", "a", extra=("-c",)) == "2\n"
    assert "redis_version:7.4.1" in run("info", "server")
    # scripted "interactive" session on stdin
    out = run(stdin="set b x\nget b\nexists b\ndel b\nquit\n")
    assert out.split() == ["OK", "x", "1", "1"]
