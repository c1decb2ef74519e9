"""Start catalog images as real processes on loopback, and always reap them.

Programs are spawned exactly as the executor will (`catalog.host_argv`: ``python -I -S run.py``),
moved to a free 127.0.0.1 port with the test-only ``LABCTL_IMAGE_PORT``/``LABCTL_IMAGE_BIND``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.worker.images import catalog


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Task:
    """One running image: its process, port and captured logs."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, out: Path, err: Path) -> None:
        self.proc, self.port, self._out, self._err = proc, port, out, err

    @property
    def stdout(self) -> str:
        return self._out.read_text()

    @property
    def stderr(self) -> str:
        return self._err.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_for(self, text: str, stream: str = "stdout", timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while text not in getattr(self, stream):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in {stream}: {getattr(self, stream)!r}")
            time.sleep(0.02)


StartFn = Callable[..., Task]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartFn]:
    """``start(ref, *cmd, env={}, listen=True)`` -> `Task`; every process is killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def _start(ref: str, *cmd: str, env: dict[str, str] | None = None, listen: bool = True) -> Task:
        spec = catalog.resolve(ref)
        argv = catalog.host_argv(spec, catalog.build_argv(spec, None, None, list(cmd) or None))
        port = free_port()
        full_env = {
            **os.environ,
            **spec.env_dict(),
            "PATH": os.environ.get("PATH", catalog.DEFAULT_PATH),
            **(env or {}),
            "LABCTL_IMAGE_PORT": str(port),
            "LABCTL_IMAGE_BIND": "127.0.0.1",
        }
        n = len(procs)
        out, err = tmp_path / f"out{n}", tmp_path / f"err{n}"
        with out.open("wb") as fo, err.open("wb") as fe:
            proc = subprocess.Popen(argv, env=full_env, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
        procs.append(proc)
        task = Task(proc, port, out, err)
        if listen:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise AssertionError(f"{ref} exited {proc.returncode}: {task.stderr}") from None
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{ref} never listened on {port}") from None
                    time.sleep(0.01)
        return task

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def http_get(port: int, path: str = "/", headers: dict[str, str] | None = None, method: str = "GET") -> tuple[str, dict[str, str], bytes]:
    """A raw HTTP/1.1 request (so tests see headers exactly as sent); returns status line, headers, body."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "User-Agent: curl/7.88.1", "Accept: */*"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines.append("Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *hlines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for h in hlines:
        k, _, v = h.partition(":")
        hdrs[k.strip()] = v.strip()
    return status, hdrs, body
