"""`labctl doctor`: can this host run netns labs? Each check says what is missing and how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return res.returncode == 0, (res.stderr or res.stdout).strip().splitlines()[-1:][0] if (res.stderr or res.stdout).strip() else ""


def run_checks() -> list[Check]:
    checks = [
        Check("python", sys.version_info >= (3, 11), sys.version.split()[0], "Python 3.11 or newer"),
        Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run labctl as root (sudo)"),
    ]
    for binary, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux"), ("unshare", "util-linux")):
        path = shutil.which(binary)
        checks.append(Check(binary, path is not None, path or "not found", f"apt-get install {pkg}"))
    docker = shutil.which("docker")
    checks.append(Check("docker CLI", docker is not None, docker or "not found",
                        "apt-get install docker-cli (students use the standard docker CLI)", required=False))
    checks.append(_netns_check())
    checks.append(_nft_check())
    checks.append(_cgroup_check())
    checks.append(_mesh_check())
    return checks


def _mesh_check() -> Check:
    """Which routing mesh the agents will use: nftables (kernel NAT) or the userspace TCP proxy."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return Check("routing mesh", True, "userspace-proxy (nftables unusable: needs root and nft)",
                     "run as root with nftables for the kernel mesh", required=False)
    table = f"labctl-doctor-{uuid.uuid4().hex[:6]}"
    script = (f"add table ip {table}\nadd chain ip {table} p {{ type nat hook prerouting priority -100; }}\n"
              f"add rule ip {table} p tcp dport 1 dnat ip to numgen inc mod 1 map {{ 0 : 127.0.0.1 }}\n"
              f"delete table ip {table}\n")
    res = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
    if res.returncode == 0:
        return Check("routing mesh", True, "nftables (numgen DNAT, VXLAN overlay)", required=False)
    return Check("routing mesh", True, "userspace-proxy (nft NAT failed: " + res.stderr.strip()[:80] + ")",
                 "a kernel with nf_tables nat", required=False)


def _netns_check() -> Check:
    if os.geteuid() != 0:
        return Check("network namespaces", False, "not checked", "needs root")
    name = f"lc-doctor-{uuid.uuid4().hex[:6]}"
    ok, detail = _run(["ip", "netns", "add", name])
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return Check("network namespaces", ok, "ip netns add works" if ok else detail, "a kernel with CONFIG_NET_NS")


def _nft_check() -> Check:
    if shutil.which("nft") is None:
        return Check("nftables", False, "nft not found", "apt-get install nftables")
    table = f"lc_doctor_{uuid.uuid4().hex[:6]}"
    try:
        res = subprocess.run(["nft", "-f", "-"], input=f"table bridge {table}\ndelete table bridge {table}\n",
                             text=True, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("nftables", False, str(e), "apt-get install nftables")
    ok = res.returncode == 0
    return Check("nftables (bridge family)", ok, "partitions use nft bridge tables" if ok else res.stderr.strip(),
                 "a kernel with nf_tables and nf_tables bridge support")


def _cgroup_check() -> Check:
    from labctl.providers.netns import cgroup2_root

    root = cgroup2_root()
    if root is None:
        return Check("cgroup v2", False, "no cgroup2 mount", "mount cgroup2 (halt then kills known pids only)",
                     required=False)
    ok = Path(root, "cgroup.procs").exists()
    return Check("cgroup v2", ok, f"{root} (halt powers a node off with cgroup.kill)", "mount cgroup2", required=False)
