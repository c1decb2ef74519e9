"""``docker service ...`` with the real docker CLI against a real netns lab (manager1 + worker1).

The lab comes up bare; the test forms the swarm itself (``docker swarm init`` + ``join``), then walks the
tutorials' service commands and checks what the CLI prints. Tasks run in the nodes' own namespaces, as
in a classroom, and the lab is destroyed (with a leak check) afterwards. Skipped without the docker
client or the privileges netns labs need.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labfixtures import DockerNode as Member
from tests.labfixtures import LabHandle, eventually, lab_home, unique_lab

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client binary is not installed"),
]


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[tuple[Member, Member]]:
    home = lab_home(tmp_path)
    next(home)
    lab = LabHandle({
        "name": unique_lab("svc"), "swarm": "bare",
        "nodes": [{"name": "manager1", "role": "manager"}, {"name": "worker1", "role": "worker"}],
    })
    try:
        record = lab.up()
        provider = lab.provider
        members = [Member(provider.docker_host(n.name), str(n.ip), n.name) for n in record.spec.nodes]
        manager, worker = members
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        worker.docker("swarm", "join", "--token", token, f"{manager.ip}:2377")
        eventually(
            lambda: manager.docker("node", "ls", check=False).stdout.count("Ready") == 2, what="2 ready nodes"
        )
        yield manager, worker
    finally:
        lab.destroy_and_check()
        next(home, None)


def replicas(manager: Member, service: str) -> str:
    for line in manager.docker("service", "ls").stdout.splitlines()[1:]:
        cols = line.split()
        if cols[1] == service:
            return cols[3]
    return ""


def running_tasks(manager: Member, service: str) -> list[list[str]]:
    """``service ps`` rows (NAME, IMAGE, NODE, ...) of tasks meant to run."""
    out = manager.docker("service", "ps", "--filter", "desired-state=running", "--format",
                         "{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.CurrentState}}", service).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def test_service_lifecycle_with_the_cli(swarm: tuple[Member, Member]) -> None:
    manager, _worker = swarm
    created = manager.docker("service", "create", "--name", "web", "--replicas", "3", "-p", "8080:80", "nginx")
    assert "verify: Service" in created.stdout and "converged" in created.stdout
    assert replicas(manager, "web") == "3/3"
    ls = manager.docker("service", "ls").stdout
    assert re.search(r"web\s+replicated\s+3/3\s+nginx:latest\s+\*:8080->80/tcp", ls), ls

    pretty = manager.docker("service", "inspect", "--pretty", "web").stdout
    assert re.search(r"Name:\s+web", pretty) and re.search(r"Replicas:\s+3", pretty)
    assert "PublishedPort = 8080" in pretty

    ps = manager.docker("service", "ps", "web").stdout
    assert re.search(r"web\.1\s+nginx:latest\s+(manager1|worker1)\s+Running\s+Running", ps), ps
    assert {row[2] for row in running_tasks(manager, "web")} <= {"manager1", "worker1"}

    manager.docker("service", "scale", "-d", "web=5")
    eventually(lambda: replicas(manager, "web") == "5/5", what="5/5")

    manager.docker("service", "update", "-d", "--image", "nginx:1.25", "--update-parallelism", "1",
                   "--update-delay", "1s", "web")
    eventually(lambda: all(r[1] == "nginx:1.25" and r[3].startswith("Running") for r in running_tasks(manager, "web"))
               and len(running_tasks(manager, "web")) == 5, timeout=60, what="the rolling update")
    history = manager.docker("service", "ps", "web").stdout
    assert re.search(r"\\_ web\.\d\s+nginx:latest\s+\S+\s+Shutdown", history), history

    manager.docker("service", "update", "-d", "--publish-add", "9090:80", "web")
    eventually(lambda: "*:9090->80/tcp" in manager.docker("service", "ls").stdout, what="the new port")

    manager.docker("service", "update", "-d", "--constraint-add", "node.role==worker", "web")
    eventually(lambda: {r[2] for r in running_tasks(manager, "web")} == {"worker1"}
               and all(r[3].startswith("Running") for r in running_tasks(manager, "web")),
               timeout=60, what="all tasks on the worker")

    manager.docker("service", "rollback", "-d", "web")
    spec = manager.docker("service", "inspect", "--format", "{{.Spec.TaskTemplate.Placement.Constraints}}",
                          "web").stdout
    assert "node.role==worker" not in spec

    conflict = manager.docker("service", "create", "--name", "web2", "-p", "8080:80", "nginx", check=False)
    assert conflict.returncode != 0
    assert ("rpc error: code = InvalidArgument desc = port '8080' is already in use by service 'web'"
            in conflict.stderr), conflict.stderr

    assert manager.docker("service", "rm", "web").stdout.strip() == "web"
    assert "web" not in manager.docker("service", "ls", "--format", "{{.Name}}").stdout.split()


def test_global_random_name_logs_and_worker_refusal(swarm: tuple[Member, Member]) -> None:
    manager, worker = swarm
    manager.docker("service", "create", "-d", "--mode", "global", "--name", "pinger",
                   "alpine", "ping", "127.0.0.1")
    eventually(lambda: replicas(manager, "pinger") == "2/2", what="one task per node")
    assert {r[2] for r in running_tasks(manager, "pinger")} == {"manager1", "worker1"}

    def logged() -> bool:
        out = manager.docker("service", "logs", "--tail", "1", "pinger").stdout
        return "@manager1" in out and "@worker1" in out and "bytes from 127.0.0.1" in out

    eventually(logged, what="log lines from both nodes")

    sid = manager.docker("service", "create", "-d", "alpine", "sleep", "1000").stdout.strip()
    name = manager.docker("service", "inspect", "--format", "{{.Spec.Name}}", sid).stdout.strip()
    assert re.fullmatch(r"[a-z]+_[a-z]+", name), name

    refused = worker.docker("service", "ls", check=False)
    assert refused.returncode != 0
    assert "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state" in refused.stderr


def test_docker_rm_force_on_a_node_replaces_the_task(swarm: tuple[Member, Member]) -> None:
    manager, worker = swarm
    manager.docker("service", "create", "-d", "--name", "app", "--replicas", "2",
                   "--constraint", "node.role==worker", "nginx")
    eventually(lambda: replicas(manager, "app") == "2/2", what="2/2")
    ps = worker.docker("ps", "--filter", "label=com.docker.swarm.service.name=app").stdout
    assert re.search(r"nginx:latest\s+.*Up .*app\.\d\.[0-9a-z]{25}", ps), ps
    cid = ps.splitlines()[1].split()[0]
    assert worker.docker("rm", "-f", cid).stdout.strip() == cid

    def replaced() -> bool:
        out = manager.docker("service", "ps", "app").stdout
        return "task: non-zero exit (137)" in out and replicas(manager, "app") == "2/2"

    eventually(replaced, what="the killed task to be replaced")
