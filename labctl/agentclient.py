"""A tiny Docker Engine API client over a node's unix socket, for labctl's own needs (ping, info).

labctl polls many sockets during `up` and `status`; the standard library's http.client is enough and keeps
start-up fast. Exercises use the real docker SDK instead.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from typing import Any


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(path: str, method: str, url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = _UnixConnection(path, timeout)
    try:
        conn.request(method, url)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ping(socket_path: str, timeout: float = 1.0) -> bool:
    try:
        status, body = request(socket_path, "GET", "/_ping", timeout)
    except OSError:
        return False
    except http.client.HTTPException:
        return False
    return status == 200 and body == b"OK"


def info(socket_path: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        status, body = request(socket_path, "GET", "/v1.45/info", timeout)
        if status != 200:
            return None
        data = json.loads(body)
        return data if isinstance(data, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None


def leader_hostname(socket_path: str, timeout: float = 2.0) -> str | None:
    """The hostname of the swarm's leader, as a manager's GET /nodes reports it (None if unknown)."""
    try:
        status, body = request(socket_path, "GET", '/v1.45/nodes?filters={"role":["manager"]}', timeout)
        if status != 200:
            return None
        for node in json.loads(body):
            if (node.get("ManagerStatus") or {}).get("Leader"):
                return str((node.get("Description") or {}).get("Hostname") or "") or None
    except (OSError, http.client.HTTPException, ValueError, TypeError, AttributeError):
        return None
    return None


def wait_ping(socket_paths: list[str], timeout: float, interval: float = 0.02) -> list[str]:
    """Poll until every socket answers /_ping; returns those still silent at the deadline."""
    pending = list(socket_paths)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not ping(p, timeout=0.5)]
        if pending:
            time.sleep(interval)
    return pending
