"""The long-lived labagent never maps ``cryptography`` (nor ``_bcrypt`` / ``_cffi_backend``): a real netns
lab (manager1 + worker1) driven by the docker CLI through init, join, a service, promote and demote, which
create keys and sign certificates in short-lived ``agents.pki.tool`` processes. Then each agent's
``/proc/<pid>/maps`` is read. Skipped without the docker client or netns privileges.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labfixtures import DockerNode, LabHandle, eventually, lab_home, unique_lab

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client binary is not installed"),
]

FORBIDDEN = ("cryptography", "_bcrypt", "_cffi_backend")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabHandle, list[DockerNode]]]:
    home = lab_home(tmp_path)
    next(home)
    handle = LabHandle({
        "name": unique_lab("nocr"), "swarm": "bare", "timing": {"node_heartbeat_s": 0.5},
        "nodes": [{"name": "manager1", "role": "manager"}, {"name": "worker1", "role": "worker"}],
    })
    try:
        record = handle.up()
        provider = handle.provider
        yield handle, [DockerNode(provider.docker_host(n.name), str(n.ip), n.name) for n in record.spec.nodes]
    finally:
        handle.destroy_and_check()
        next(home, None)


def _mapped(pid: int) -> list[str]:
    """Paths in ``pid``'s memory map that belong to a forbidden package."""
    paths = {line.split(maxsplit=5)[5] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if len(line.split(maxsplit=5)) == 6}
    return sorted(p for p in paths if any(f in p for f in FORBIDDEN))


def _rss_kb(pid: int) -> int:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert m
    return int(m.group(1))


def test_agents_never_load_cryptography(lab: tuple[LabHandle, list[DockerNode]]) -> None:
    handle, (manager, worker) = lab
    manager.docker("swarm", "init", "--advertise-addr", manager.ip)
    token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    assert worker.docker("swarm", "join", "--token", token, f"{manager.ip}:2377").stdout == (
        "This node joined a swarm as a worker.\n")
    eventually(lambda: manager.docker("node", "ls").stdout.count("Ready") == 2, what="2 ready nodes")
    manager.docker("service", "create", "-d", "--name", "web", "--replicas", "2", "nginx")
    eventually(lambda: "2/2" in manager.docker("service", "ls").stdout, 60, "2/2 replicas")
    # Promotion and demotion renew worker1's certificate (a CSR from the tool, signed by the tool).
    manager.docker("node", "promote", "worker1")
    eventually(lambda: "Reachable" in manager.docker("node", "ls").stdout, 60, "worker1 reachable as manager")
    assert worker.docker("node", "ls", check=False).returncode == 0  # it holds a manager certificate now
    manager.docker("node", "demote", "worker1")
    eventually(lambda: worker.docker("node", "ls", check=False).returncode == 1, 60, "worker1 a worker again")
    assert manager.docker("swarm", "join-token", "-q", "manager").stdout.startswith("SWMTKN-1-")

    provider = handle.provider
    for node in ("manager1", "worker1"):
        pid = provider.agent_pid(node)
        assert pid is not None, f"no agent running on {node}"
        assert _mapped(pid) == [], f"the agent on {node} mapped {_mapped(pid)}"
        print(f"{node}: agent pid {pid}, VmRSS {_rss_kb(pid) / 1024:.1f} MB")
