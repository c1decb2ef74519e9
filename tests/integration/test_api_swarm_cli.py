"""A real three-node netns lab (node1..3, swarm bare) driven by the unmodified docker CLI: what a student
types to build a swarm, and what Docker prints back. The lab is destroyed and leak-checked afterwards.

Skipped only when the docker client binary is absent (`make deps` installs it) or netns labs can't run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.labfixtures import LabHandle, lab_home, unique_lab

pytestmark = [pytest.mark.timeout(240), pytest.mark.netns]

DOCKER = shutil.which("docker")
needs_docker = pytest.mark.skipif(DOCKER is None, reason="the docker client binary is not installed")

WORKER_MSG = (
    "Error response from daemon: This node is not a swarm manager. Worker nodes can't be used to view or "
    "modify cluster state. Please run this command on a manager node or promote the current node to a manager."
)


@dataclass
class Agent:
    name: str
    ip: str
    root: Path  # the student's docker client config lives here
    docker_host: str

    def docker(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert DOCKER is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(HOME=str(self.root), DOCKER_CONFIG=str(self.root / "cfg"), DOCKER_HOST=self.docker_host)
        p = subprocess.run([DOCKER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=90)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on {self.name} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def agents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Agent]]:
    home = lab_home(tmp_path)
    next(home)
    lab = LabHandle({
        "name": unique_lab("sc"), "swarm": "bare", "timing": {"node_heartbeat_s": 0.5},
        "nodes": [{"name": "node1", "role": "manager"}, {"name": "node2", "role": "manager"},
                  {"name": "node3", "role": "worker"}],
    })
    try:
        record = lab.up()
        provider = lab.provider
        started = []
        for n in record.spec.nodes:
            (tmp_path / n.name).mkdir()
            started.append(Agent(n.name, str(n.ip), tmp_path / n.name, provider.docker_host(n.name)))
        yield started
    finally:
        lab.destroy_and_check()
        next(home, None)


def node_rows(out: str) -> dict[str, list[str]]:
    """`docker node ls` rows by hostname: [id-with-star, status, availability, manager status]."""
    rows = {}
    for line in out.splitlines()[1:]:
        cols = re.split(r"\s{2,}", line.strip())
        star = " * " in line
        ident = cols[0].replace(" *", "")
        host = cols[1]
        rest = cols[2:]
        manager_status = rest[2] if len(rest) == 4 else ""
        rows[host] = [ident + (" *" if star else ""), rest[0], rest[1], manager_status]
    return rows


@needs_docker
def test_swarm_from_the_cli(agents: list[Agent]) -> None:
    n1, n2, n3 = agents

    # --- init ------------------------------------------------------------------------------------
    out = n1.docker("swarm", "init", "--advertise-addr", n1.ip).stdout
    m = re.match(r"Swarm initialized: current node \(([0-9a-z]{25})\) is now a manager\.\n\n", out)
    assert m, out
    node1_id = m.group(1)
    assert "To add a worker to this swarm, run the following command:\n\n    docker swarm join --token SWMTKN-1-" in out
    assert f" {n1.ip}:2377\n\n" in out
    assert "To add a manager to this swarm, run 'docker swarm join-token manager' and follow the instructions." in out
    again = n1.docker("swarm", "init", "--advertise-addr", n1.ip, check=False)
    assert again.returncode == 1 and "This node is already part of a swarm" in again.stderr

    worker_token = n1.docker("swarm", "join-token", "-q", "worker").stdout.strip()
    manager_token = n1.docker("swarm", "join-token", "-q", "manager").stdout.strip()
    assert worker_token.startswith("SWMTKN-1-") and manager_token != worker_token
    shown = n1.docker("swarm", "join-token", "manager").stdout
    assert shown == (f"To add a manager to this swarm, run the following command:\n\n"
                     f"    docker swarm join --token {manager_token} {n1.ip}:2377\n\n")

    # --- join ------------------------------------------------------------------------------------
    assert n2.docker("swarm", "join", "--token", manager_token, f"{n1.ip}:2377").stdout == (
        "This node joined a swarm as a manager.\n")
    assert n3.docker("swarm", "join", "--token", worker_token, f"{n1.ip}:2377").stdout == (
        "This node joined a swarm as a worker.\n")

    # --- node ls on the leader, on the follower (forwarded), refused on the worker --------------------
    def settled() -> bool:
        rows = node_rows(n1.docker("node", "ls").stdout)
        return len(rows) == 3 and rows["node2"][3] == "Reachable" and all(r[1] == "Ready" for r in rows.values())

    wait_until(settled, 30, "three ready nodes")
    rows = node_rows(n1.docker("node", "ls").stdout)
    assert rows["node1"] == [f"{node1_id} *", "Ready", "Active", "Leader"]
    assert rows["node2"][1:] == ["Ready", "Active", "Reachable"] and not rows["node2"][0].endswith("*")
    assert rows["node3"][1:] == ["Ready", "Active", ""]
    follower = node_rows(n2.docker("node", "ls").stdout)
    assert follower["node2"][0].endswith(" *") and follower["node1"][3] == "Leader"
    refused = n3.docker("node", "ls", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == WORKER_MSG

    pretty = n2.docker("node", "inspect", "--pretty", "node1").stdout
    assert re.search(r"Manager Status:\n Address:\s+" + re.escape(f"{n1.ip}:2377") + r"\n Raft Status:\s+Reachable\n"
                     r" Leader:\s+Yes\n", pretty), pretty
    assert re.search(r"Hostname:\s+node1\n", pretty)

    # --- docker info ---------------------------------------------------------------------------------
    info = n1.docker("info").stdout
    for line in (" Swarm: active", f"  NodeID: {node1_id}", "  Is Manager: true", "  Managers: 2", "  Nodes: 3",
                 "  Raft:", "   Election Tick: 10", "  Dispatcher:", "  CA Configuration:",
                 f"  Node Address: {n1.ip}", "  Manager Addresses:", f"   {n1.ip}:2377", f"   {n2.ip}:2377"):
        assert line + "\n" in info, line
    assert re.search(r"  ClusterID: [0-9a-z]{25}\n", info)
    worker_info = n3.docker("info").stdout
    assert "  Is Manager: false\n" in worker_info and f"  Node Address: {n3.ip}\n" in worker_info

    # --- node update / promote / demote / rm -------------------------------------------------------
    assert n2.docker("node", "update", "--availability", "drain", "node3").stdout == "node3\n"
    assert n1.docker("node", "update", "--label-add", "ROOM=N1", "node3").stdout == "node3\n"
    spec = n1.docker("node", "inspect", "-f", "{{json .Spec}}", "node3").stdout.strip()
    assert spec == '{"Labels":{"ROOM":"N1"},"Role":"worker","Availability":"drain"}'
    assert node_rows(n1.docker("node", "ls").stdout)["node3"][2] == "Drain"
    n1.docker("node", "update", "--label-rm", "ROOM", "--availability", "active", "node3")
    rm = n1.docker("node", "rm", "node3", check=False)
    assert rm.returncode == 1 and "is not down and can't be removed" in rm.stderr
    rm = n1.docker("node", "rm", "node2", check=False)
    assert rm.returncode == 1 and "must be demoted to worker before removal" in rm.stderr
    assert n1.docker("node", "promote", "node3").stdout == "Node node3 promoted to a manager in the swarm.\n"
    assert n1.docker("node", "demote", "node3").stdout == "Manager node3 demoted in the swarm.\n"
    assert n1.docker("node", "inspect", "-f", "{{.Spec.Role}}", "node3").stdout.strip() == "worker"

    # --- token rotation ------------------------------------------------------------------------------
    rotated = n2.docker("swarm", "join-token", "--rotate", "worker").stdout
    assert rotated.startswith("Successfully rotated worker join token.\n\n")
    assert n1.docker("swarm", "join-token", "-q", "worker").stdout.strip() != worker_token

    # --- secrets -------------------------------------------------------------------------------------
    secret_id = n2.docker("secret", "create", "db_pass", "-", stdin="hunter2").stdout.strip()
    assert re.fullmatch(r"[0-9a-z]{25}", secret_id)
    dup = n1.docker("secret", "create", "db_pass", "-", stdin="x", check=False)
    assert dup.stderr.strip() == "Error response from daemon: rpc error: code = AlreadyExists desc = secret db_pass already exists"
    assert "db_pass" in n1.docker("secret", "ls").stdout
    assert "hunter2" not in n1.docker("secret", "inspect", "db_pass").stdout
    assert n2.docker("secret", "rm", "db_pass").stdout.strip() == "db_pass"
    gone = n1.docker("secret", "inspect", "db_pass", check=False)
    assert gone.returncode == 1 and "secret db_pass not found" in gone.stderr, gone.stderr

    # --- networks ------------------------------------------------------------------------------------
    ls = n1.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout.split("\n")
    assert {"ingress overlay swarm", "bridge bridge local", "host host local", "none null local",
            "docker_gwbridge bridge local"} <= set(ls)
    net_id = n2.docker("network", "create", "-d", "overlay", "--attachable", "appnet").stdout.strip()
    assert re.fullmatch(r"[0-9a-z]{25}", net_id)
    assert "appnet overlay swarm" in n1.docker("network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout
    dup_net = n1.docker("network", "create", "-d", "overlay", "appnet", check=False)
    assert dup_net.stderr.strip() == "Error response from daemon: network with name appnet already exists"
    rm_bridge = n1.docker("network", "rm", "bridge", check=False)
    assert "bridge is a pre-defined network and cannot be removed" in rm_bridge.stderr
    assert n1.docker("network", "rm", "appnet").stdout.strip() == "appnet"

    # --- leave ---------------------------------------------------------------------------------------
    refusal = n2.docker("swarm", "leave", check=False)
    assert refusal.returncode == 1 and refusal.stderr.startswith(
        "Error response from daemon: You are attempting to leave the swarm on a node that is participating as a manager.")
    assert n3.docker("swarm", "leave").stdout == "Node left the swarm.\n"
    not_in = n3.docker("swarm", "leave", check=False)
    assert not_in.stderr.strip() == "Error response from daemon: This node is not part of a swarm"
    none = n3.docker("node", "ls", check=False)
    assert "Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm" in none.stderr
    assert n2.docker("swarm", "leave", "--force").stdout == "Node left the swarm.\n"
