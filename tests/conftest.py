"""Suite-wide options and markers.

`--soak` turns the Raft simulation from the CI budget (>= 500 seeds) into the soak budget (10,000+).
Tests marked `netns` need root, iproute2 and nftables; they are skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False, help="run the long Raft soak (10,000+ seeds)")
    parser.addoption("--seed", action="store", default=None, help="replay one simulation seed")


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "nft", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"needs the '{tool}' binary"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


# ------------------------------------------------------------------------------------------ leak guard
# Labs are leak-checked one by one by the tests that build them (tests/labfixtures.py). This guard looks
# for what only a misbehaving in-process test can leave: task networking, mesh tables, task cgroups and
# task supervisors in the host's *own* namespaces (labs keep all of those inside their nodes). It never
# touches labs, so other test runs and a teacher's labs on the same machine are safe.
LEAKY_LINK = re.compile(r"^(tn[a-z0-9]{6,}|vxm\d+|tasks0|v[0-9a-f]{13})$")
HOST_TABLES = ("labctl-mesh", "labctl-run")


def host_leftovers() -> list[str]:
    found: list[str] = []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if LEAKY_LINK.match(name):
            found.append(f"link {name}")
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        found += [f"nft {line}" for line in tables.splitlines() if line.split()[-1:] and line.split()[-1] in HOST_TABLES]
    for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (root / "tasks").is_dir() and (root / "cgroup.procs").exists():
            found.append(f"cgroup {root / 'tasks'}")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue
        if b"executor/shim.py" in cmd and "0::/tasks/" in cgroup:
            found.append(f"process {proc.name}: {cmd[:80].decode(errors='replace')}")
        elif b"executor/launcher.py" in cmd and _orphaned_launcher(proc, cmd, cgroup):
            found.append(f"process {proc.name}: {cmd[:120].decode(errors='replace')}")
    return found


def _orphaned_launcher(proc: Path, cmd: bytes, cgroup: str) -> bool:
    """A task launcher (or a shim it forked: same command line) whose state directory is gone: its test
    removed the directory but not the processes. Labs' launchers (own cgroup and mount namespace) are
    never considered."""
    try:
        same_mounts = os.readlink(proc / "ns" / "mnt") == os.readlink("/proc/self/ns/mnt")
    except OSError:
        return False
    words = cmd.split(b" ")
    sock = next((w for w in words if w.endswith(b"launcher.sock")), b"")
    return same_mounts and "0::/labctl/" not in cgroup and bool(sock) and not os.path.isdir(os.path.dirname(sock))


def clean_host(found: list[str]) -> None:
    """Remove leftovers so one leaky run does not poison the next (the run still fails)."""
    for item in found:
        kind, _, rest = item.partition(" ")
        if kind == "process":
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(rest.split(":")[0]), signal.SIGKILL)
    for item in found:
        kind, _, rest = item.partition(" ")
        if kind == "link":
            subprocess.run(["ip", "link", "del", rest], capture_output=True)
        elif kind == "nft":
            subprocess.run(["nft", "delete", *rest.split()], capture_output=True)
        elif kind == "cgroup":
            for d in sorted(Path(rest).rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if d.is_dir():
                    with contextlib.suppress(OSError):
                        (d / "cgroup.kill").write_text("1")
                        d.rmdir()
            with contextlib.suppress(OSError):
                Path(rest).rmdir()


_BEFORE: set[str] = set()


def _leftover_key(item: str) -> str:
    return item.split(":")[0]  # a process is known by its pid


def pytest_sessionstart(session: pytest.Session) -> None:
    if hasattr(session.config, "workerinput") or netns_unavailable_reason() is not None:
        return
    _BEFORE.update(_leftover_key(i) for i in host_leftovers())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or netns_unavailable_reason() is not None:
        return  # the controller checks once, after every worker is done
    found = [i for i in host_leftovers() if _leftover_key(i) not in _BEFORE]
    if found:
        sys.stderr.write("\nLEAK: the test suite left these in the host's own namespaces:\n  " + "\n  ".join(found) + "\n")
        clean_host(found)
        session.exitstatus = 1
