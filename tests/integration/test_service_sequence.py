"""A command right after ``docker service create -d`` / ``update`` must not run "out of sequence".

Scripts do ``docker service create -d --name web -p 8080:80 nginx`` and at once ``docker service scale
web=3``: the CLI reads the service (its version) and posts the change with that version. If the manager
wrote the service again in between (the allocator recording its endpoint a moment after the create), the
update fails with dockerd's "update out of sequence". The endpoint (VIPs, auto-assigned ports) is now
allocated in the create/update changeset itself, so the version a client reads after the create stays
current. Real labagent on a one-node netns lab, driven by the real docker CLI and the docker SDK.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from docker.types import EndpointSpec, ServiceMode

from tests.labfixtures import DockerNode, LabHandle, eventually, lab_home, unique_lab

pytestmark = [
    pytest.mark.timeout(400),
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("docker") is None, reason="the docker client binary is not installed"),
]

SETTLE_S = 0.6
"""Longer than the allocator loop's batch window plus a Raft commit: what it would write, it has written."""


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerNode]:
    home = lab_home(tmp_path_factory.mktemp("seq"))
    next(home)
    lab = LabHandle({"name": unique_lab("seq"), "nodes": [{"name": "manager1", "role": "manager"}]})
    try:
        record = lab.up()
        node = record.spec.nodes[0]
        member = DockerNode(lab.provider.docker_host(node.name), str(node.ip), node.name)
        eventually(lambda: "Leader" in member.docker("node", "ls", check=False).stdout, what="a leader")
        yield member
    finally:
        lab.destroy_and_check()
        next(home, None)


@pytest.fixture
def client(manager: DockerNode) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=manager.docker_host, version="1.45", timeout=30)
    try:
        yield c
    finally:
        for svc in c.services.list():
            svc.remove()
        c.close()


def inspect(client: docker.DockerClient, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = client.api.inspect_service(ref)
    return out


def scale_at(client: docker.DockerClient, sid: str, version: int, replicas: int) -> None:
    """What ``docker service scale`` posts: the spec it read, with the version it read."""
    client.api.update_service(sid, version, mode=ServiceMode("replicated", replicas), fetch_current_spec=True)


def test_create_then_scale_or_update_at_once_with_the_cli(manager: DockerNode, client: docker.DockerClient) -> None:
    failures: list[str] = []
    for i in range(24):
        name = f"web{i}"
        manager.docker("service", "create", "-d", "--name", name, "-p", f"{8100 + i}:80", "nginx")
        if i % 2:
            second = manager.docker("service", "update", "-d", "--env-add", f"ROUND={i}", name, check=False)
        else:
            second = manager.docker("service", "scale", "-d", f"{name}=2", check=False)
        if second.returncode != 0:
            failures.append(f"{name}: {second.stderr.strip()}")
        manager.docker("service", "rm", name)
    assert failures == []


def test_the_version_read_after_create_stays_current(client: docker.DockerClient) -> None:
    ports = [
        {"Protocol": "tcp", "PublishedPort": 8201, "TargetPort": 80},
        {"Protocol": "tcp", "TargetPort": 81},  # auto-assigned from 30000
    ]
    for round_ in range(4):  # each round reuses 8201 right after the previous service was removed
        svc = client.services.create("nginx", name=f"pinned{round_}", mode=ServiceMode("replicated", 1),
                                     endpoint_spec=EndpointSpec(ports=ports))
        first = inspect(client, svc.id)
        ep = first["Endpoint"]
        assert [v["Addr"].startswith("10.0.0.") for v in ep.get("VirtualIPs", [])] == [True], ep
        published = sorted(p["PublishedPort"] for p in ep["Ports"])
        assert published[0] >= 8201 and 30000 <= published[1] <= 32767, ep
        time.sleep(SETTLE_S)
        later = inspect(client, svc.id)
        assert later["Version"] == first["Version"], "the service was written again after its create"
        assert later["Endpoint"] == ep
        scale_at(client, svc.id, first["Version"]["Index"], 2)  # the version read at once still holds
        assert inspect(client, svc.id)["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
        svc.remove()


def test_the_version_read_after_a_port_or_network_update_stays_current(
    manager: DockerNode, client: docker.DockerClient
) -> None:
    client.networks.create("seqnet", driver="overlay")
    eventually(lambda: bool(client.api.inspect_network("seqnet").get("IPAM", {}).get("Config")),
               what="the overlay's subnet")
    net_id = client.api.inspect_network("seqnet")["Id"]
    try:
        svc = client.services.create("nginx", name="idle", mode=ServiceMode("replicated", 0))
        changes = [("--publish-add", "8301:80"), ("--publish-add", "82"), ("--network-add", "seqnet"),
                   ("--publish-rm", "80")]
        for flag, value in changes:
            manager.docker("service", "update", "-d", flag, value, "idle")
            first = inspect(client, svc.id)
            time.sleep(SETTLE_S)
            later = inspect(client, svc.id)
            assert later["Version"] == first["Version"], f"written again after {flag} {value}"
            assert later["Endpoint"] == first["Endpoint"]
            scale_at(client, svc.id, first["Version"]["Index"], 0)
        ep = inspect(client, svc.id)["Endpoint"]
        assert {v["NetworkID"] for v in ep["VirtualIPs"]} >= {net_id}, json.dumps(ep)
        assert [p["TargetPort"] for p in ep["Ports"]] == [82] and ep["Ports"][0]["PublishedPort"] >= 30000, ep
        svc.remove()
    finally:
        for s in client.services.list():
            s.remove()
        eventually(lambda: _remove_network(client, "seqnet"), what="the network removed")


def _remove_network(client: docker.DockerClient, name: str) -> bool:
    try:
        client.api.remove_network(name)
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError:
        return False
    return True

