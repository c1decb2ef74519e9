"""Helpers for tests that build real netns labs: a private LABCTL_HOME, unique lab names, leak checks.

Every lab a test builds is destroyed in a finalizer, also when the test fails, and the finalizer then
asserts nothing of it is left on the host.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from labctl import lifecycle, registry
from labctl.providers import netns as netns_provider
from labctl.registry import LabRecord
from labctl.spec import parse_spec


def unique_lab(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def leftovers(lab: str, nodes: list[str]) -> list[str]:
    """Everything a destroyed lab could have left on the host."""
    found: list[str] = []
    ns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in ns_list.splitlines() if line.startswith(f"lc-{lab}_")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {netns_provider.bridge_name(lab)} | {netns_provider.veth_name(lab, n) for n in nodes}
    for line in links.splitlines():
        ifname = line.split(":")[1].strip().split("@")[0]
        if ifname in names:
            found.append(f"link {ifname}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"labctl-{lab}" in tables.split():
        found.append(f"nft table labctl-{lab}")
    cg = netns_provider.cgroup2_root()
    if cg is not None and (cg / "labctl" / lab).exists():
        found.append(f"cgroup {cg / 'labctl' / lab}")
    if registry.lab_runtime_dir(lab).exists():
        found.append(f"runtime dir {registry.lab_runtime_dir(lab)}")
    if registry.lab_dir(lab).exists():
        found.append(f"lab dir {registry.lab_dir(lab)}")
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cgroups = (pid_dir / "cgroup").read_text()
            stat = (pid_dir / "stat").read_text()
        except OSError:
            continue
        if f"/labctl/{lab}/" in cgroups and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            found.append(f"process {pid_dir.name}")
    return found


class LabHandle:
    """A lab built for one test; `record` and `provider` are fresh reads of what is on disk."""

    def __init__(self, spec_data: dict[str, object]) -> None:
        self.spec = parse_spec(spec_data)
        self.nodes = [n.name for n in self.spec.nodes]

    def up(self) -> LabRecord:
        record, created = lifecycle.up(self.spec)
        assert created
        return record

    @property
    def record(self) -> LabRecord:
        return registry.load(self.spec.name)

    @property
    def provider(self) -> netns_provider.NetnsProvider:
        return netns_provider.NetnsProvider(self.record)

    def run(self, node: str, *argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        cmd = self.provider.exec_argv(node, list(argv))
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{argv} on {node} failed ({res.returncode}): {res.stdout}{res.stderr}")
        return res

    def destroy_and_check(self) -> None:
        if self.spec.name in registry.names():
            problems = lifecycle.down(self.spec.name)
            assert problems == [], problems
        left = leftovers(self.spec.name, self.nodes)
        assert left == [], f"lab {self.spec.name} left: {left}"


def lab_home(tmp_path: Path) -> Iterator[Path]:
    """Point LABCTL_HOME at a private directory for the test's duration."""
    old = os.environ.get("LABCTL_HOME")
    home = tmp_path / "home"
    os.environ["LABCTL_HOME"] = str(home)
    try:
        yield home
    finally:
        if old is None:
            os.environ.pop("LABCTL_HOME", None)
        else:
            os.environ["LABCTL_HOME"] = old


@dataclass
class DockerNode:
    """A lab node as the standard docker CLI on the host sees it (``DOCKER_HOST`` = its agent)."""

    docker_host: str
    ip: str
    name: str = ""

    def docker(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.docker_host
        p = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}\n{p.stdout}{p.stderr}")
        return p


def eventually(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll a condition a lab reaches asynchronously; fail the test naming it if it never holds."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")
