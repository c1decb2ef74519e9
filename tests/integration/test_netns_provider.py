"""The embedded provider on real namespaces: lifecycle, faults, isolation, two labs, cleanup after failure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl import agentclient, lifecycle, registry
from labctl.errors import LabError
from labctl.providers import netns as netns_provider
from tests.labfixtures import LabHandle, lab_home, leftovers, unique_lab

pytestmark = pytest.mark.netns


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield from lab_home(tmp_path)


@pytest.fixture
def lab(home: Path) -> Iterator[LabHandle]:
    handle = LabHandle({
        "name": unique_lab("life"),
        "swarm": "bare",  # provider mechanics only; swarm formation is tested in test_cli
        "nodes": [
            {"name": "manager1", "role": "manager"},
            {"name": "worker1", "role": "worker"},
            {"name": "worker2", "role": "worker", "labels": {"ROOM": "N1"}},
        ],
    })
    try:
        yield handle
    finally:
        handle.destroy_and_check()


def _pings(lab: LabHandle, src: str, dst_ip: str) -> bool:
    return lab.run(src, "ping", "-c", "1", "-W", "1", dst_ip, check=False).returncode == 0


def test_node_is_a_machine(lab: LabHandle) -> None:
    record = lab.up()
    p = lab.provider
    assert [s.state for s in p.status()] == ["running"] * 3
    assert all(s.swarm == "inactive" for s in p.status())
    for node in lab.nodes:
        assert agentclient.ping(p.socket_path(node))
        assert lab.run(node, "hostname").stdout.strip() == node
    # /var/lib/docker is the node's own disk; /run is the node's own.
    lab.run("worker1", "sh", "-c", "echo disk > /var/lib/docker/mark && echo run > /run/mark")
    assert (p.node_disk("worker1") / "mark").read_text() == "disk\n"
    assert not (p.node_disk("worker2") / "mark").exists()
    assert lab.run("worker2", "sh", "-c", "test -e /run/mark || echo absent").stdout.strip() == "absent"
    assert lab.run("worker1", "sh", "-c", "test -S /run/docker.sock && echo sock").stdout.strip() == "sock"
    # DOCKER_HOST points at the node's own agent.
    assert lab.run("worker1", "sh", "-c", "echo $DOCKER_HOST").stdout.strip() == "unix:///run/docker.sock"
    # No default route; the lab subnet is reachable; the host reaches nodes over the lab bridge.
    routes = lab.run("manager1", "ip", "-4", "route").stdout
    assert "default" not in routes
    assert str(record.spec.subnet) in routes
    ips = {n.name: str(n.ip) for n in record.spec.nodes}
    assert _pings(lab, "manager1", ips["worker2"])
    assert _pings(lab, "worker2", str(record.spec.host_address))


def test_halt_start_kill(lab: LabHandle) -> None:
    record = lab.up()
    ips = {n.name: str(n.ip) for n in record.spec.nodes}
    lab.run("worker1", "sh", "-c", "echo kept > /var/lib/docker/kept && echo gone > /run/gone")
    lab.provider.halt("worker1")
    states = {s.name: s.state for s in lab.provider.status()}
    assert states == {"manager1": "running", "worker1": "halted", "worker2": "running"}
    assert not _pings(lab, "manager1", ips["worker1"])
    with pytest.raises(LabError, match="halted"):
        lab.provider.exec_argv("worker1", ["true"])
    with pytest.raises(LabError, match="already halted"):
        lab.provider.halt("worker1")
    lab.provider.start("worker1")
    assert {s.name: s.state for s in lab.provider.status()}["worker1"] == "running"
    assert lab.run("worker1", "cat", "/var/lib/docker/kept").stdout == "kept\n"
    assert lab.run("worker1", "sh", "-c", "test -e /run/gone || echo cleared").stdout.strip() == "cleared"
    assert _pings(lab, "manager1", ips["worker1"])

    # kill: the agent dies with no cleanup; what else runs on the node (its tasks) is left alone.
    lab.run("worker2", "sh", "-c", "setsid sleep 300 >/dev/null 2>&1 < /dev/null & echo $! > /var/lib/docker/task.pid")
    task_pid = int((lab.provider.node_disk("worker2") / "task.pid").read_text())
    lab.provider.kill("worker2")
    assert {s.name: s.state for s in lab.provider.status()}["worker2"] == "stopped"
    assert Path(f"/proc/{task_pid}").exists()
    with pytest.raises(LabError, match="not running"):
        lab.provider.kill("worker2")
    lab.provider.start("worker2")
    assert {s.name: s.state for s in lab.provider.status()}["worker2"] == "running"
    # halt powers everything off, tasks included.
    lab.provider.halt("worker2")
    deadline = time.monotonic() + 5
    while Path(f"/proc/{task_pid}/cmdline").exists() and Path(f"/proc/{task_pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "a task survived halt"
        time.sleep(0.05)
    lab.provider.start("worker2")


def test_partition_and_heal(lab: LabHandle) -> None:
    record = lab.up()
    ips = {n.name: str(n.ip) for n in record.spec.nodes}
    host = str(record.spec.host_address)
    lab.provider.partition([["manager1"], ["worker1", "worker2"]])
    assert not _pings(lab, "manager1", ips["worker1"])
    assert not _pings(lab, "worker2", ips["manager1"])
    assert _pings(lab, "worker1", ips["worker2"])
    assert _pings(lab, "manager1", host)
    # A new partition replaces the old one.
    lab.provider.partition([["manager1", "worker1"], ["worker2"]])
    assert _pings(lab, "manager1", ips["worker1"])
    assert not _pings(lab, "worker1", ips["worker2"])
    lab.provider.heal()
    assert _pings(lab, "worker1", ips["worker2"])
    lab.provider.heal()  # healing a healed network is fine
    with pytest.raises(LabError, match="no node"):
        lab.provider.partition([["manager1"], ["nosuch"]])
    with pytest.raises(LabError, match="two groups"):
        lab.provider.partition([["manager1"], ["manager1", "worker1"]])


def test_second_up_is_a_no_op(lab: LabHandle) -> None:
    lab.up()
    record, created = lifecycle.up(lab.spec)
    assert not created
    assert record.status == "up"


def test_two_labs_side_by_side(home: Path) -> None:
    a = LabHandle({"name": unique_lab("a"), "managers": 1, "workers": 1, "swarm": "bare"})
    b = LabHandle({"name": unique_lab("b"), "managers": 1, "workers": 1, "swarm": "bare"})
    try:
        ra, rb = a.up(), b.up()
        assert ra.spec.subnet != rb.spec.subnet
        assert not ra.spec.subnet.overlaps(rb.spec.subnet)  # type: ignore[union-attr]
        assert a.provider.socket_path("manager1") != b.provider.socket_path("manager1")
        assert a.run("manager1", "hostname").stdout.strip() == "manager1"
        # A lab may not take another lab's subnet.
        c = LabHandle({"name": unique_lab("c"), "subnet": str(ra.spec.subnet), "managers": 1, "swarm": "bare"})
        with pytest.raises(LabError, match="overlaps an existing route"):
            c.up()
        assert leftovers(c.spec.name, c.nodes) == []
        a.destroy_and_check()
        assert [s.state for s in b.provider.status()] == ["running", "running"]
        assert b.run("worker1", "ping", "-c", "1", "-W", "1", str(rb.spec.nodes[0].ip)).returncode == 0
    finally:
        a.destroy_and_check()
        b.destroy_and_check()


def test_failed_up_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns_provider, "agent_command", lambda: ["false"])
    monkeypatch.setattr(netns_provider, "AGENT_READY_TIMEOUT", 1.0)
    bad = LabHandle({"name": unique_lab("fail"), "managers": 1, "workers": 1, "swarm": "bare"})
    with pytest.raises(LabError, match="did not answer"):
        bad.up()
    assert leftovers(bad.spec.name, bad.nodes) == []
    assert bad.spec.name not in registry.names()
