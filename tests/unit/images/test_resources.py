"""Each program starts quickly and stays small (100 replicas share 2 cores), using only the stdlib."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time

import pytest

from agents.worker.images import catalog
from tests.unit.images.conftest import StartFn, http_get

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LISTENING = [
    ("nginx", {}),
    ("httpd", {}),
    ("traefik/whoami", {}),
    ("sposigor/app-flask-teste:1", {}),
    ("drhelius/helloworld-node-microservice", {}),
    ("redis", {}),
    ("mysql:5.7", {"MYSQL_ROOT_PASSWORD": "pw"}),
]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize(("ref", "env"), LISTENING, ids=[r for r, _ in LISTENING])
def test_small_fast_and_clean_exit(start: StartFn, ref: str, env: dict[str, str]) -> None:
    t0 = time.perf_counter()
    task = start(ref, env=env)
    elapsed = time.perf_counter() - t0
    if not ref.startswith(("redis", "mysql")):
        assert http_get(task.port)[0].startswith("HTTP/1.1 ")
    time.sleep(0.05)
    rss = rss_mb(task.proc.pid)
    print(f"{ref}: listening after {elapsed * 1000:.0f} ms, RSS {rss:.1f} MB")
    assert rss < 15, f"{ref} uses {rss:.1f} MB"
    assert elapsed < 3, f"{ref} took {elapsed:.2f}s to listen"  # ~0.1 s here; generous for a loaded CI
    assert task.stop() == 0


def test_programs_import_only_the_standard_library() -> None:
    stdlib = sysconfig.get_paths()["stdlib"]
    code = (
        f"import sys; sys.path.insert(0, {REPO!r})\n"
        "import agents.worker.images.run\n"
        "for m in ('nginx','httpd','redis','mysql','whoami','flaskapp','nodehello','hello'):\n"
        "    __import__('agents.worker.images.programs.' + m)\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    f = getattr(mod, '__file__', None)\n"
        "    if f: print(f)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True, timeout=30)
    for path in out.stdout.split():
        assert path.startswith((stdlib, os.path.join(REPO, "agents"))), path
    assert catalog.RUN_PY.startswith(os.path.join(REPO, "agents"))
