"""Start-up time and memory of each catalog program (100 replicas on 2 cores must be cheap).

For every listening image: spawn it the way the executor does (`catalog.host_argv`, i.e.
``python -I -S run.py``) on a loopback port, time until the port accepts a connection, then read
VmRSS from /proc after one request. Prints one line per image; median of a few runs.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents.worker.images import catalog

IMAGES = [
    ("nginx:1.25", {}, b"GET / HTTP/1.0\r\n\r\n"),
    ("httpd:2.4", {}, b"GET / HTTP/1.0\r\n\r\n"),
    ("traefik/whoami", {}, b"GET / HTTP/1.0\r\n\r\n"),
    ("sposigor/app-flask-teste:1", {}, b"GET / HTTP/1.0\r\n\r\n"),
    ("drhelius/helloworld-node-microservice", {}, b"GET / HTTP/1.0\r\n\r\n"),
    ("redis:7.2", {}, b"PING\r\n"),
    ("mysql:5.7", {"MYSQL_ROOT_PASSWORD": "pw"}, b""),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure(ref: str, env: dict[str, str], probe: bytes) -> tuple[float, int]:
    spec = catalog.resolve(ref)
    argv = catalog.host_argv(spec, catalog.build_argv(spec))
    port = free_port()
    full_env = {**os.environ, **spec.env_dict(), **env, "LABCTL_IMAGE_PORT": str(port), "LABCTL_IMAGE_BIND": "127.0.0.1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    elapsed = time.perf_counter() - t0
                    if probe:
                        s.sendall(probe)
                    s.recv(4096)
                    break
            except ConnectionRefusedError:
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError(f"{ref} did not listen") from None
                time.sleep(0.002)
        time.sleep(0.05)
        return elapsed, rss_kb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(5)


def floor() -> tuple[float, int]:
    """A bare ``python -I -S`` that binds and listens: the interpreter's own share of the numbers."""
    port = free_port()
    code = f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(30)"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code])
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return time.perf_counter() - t0, rss_kb(proc.pid)
            except ConnectionRefusedError:
                time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(5)


def main() -> None:
    print(f"{'image':42} {'listen ms':>10} {'RSS MB':>8}")
    runs = [floor() for _ in range(5)]
    print(f"{'(bare python -I -S listening)':42} {statistics.median(r[0] for r in runs) * 1000:10.1f} "
          f"{statistics.median(r[1] for r in runs) / 1024:8.1f}")
    for ref, env, probe in IMAGES:
        runs = [measure(ref, env, probe) for _ in range(5)]
        ms = statistics.median(r[0] for r in runs) * 1000
        rss = statistics.median(r[1] for r in runs) / 1024
        print(f"{ref:42} {ms:10.1f} {rss:8.1f}")


if __name__ == "__main__":
    main()
