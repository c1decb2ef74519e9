"""`StandaloneContainers` (docker run) with the fake executor: create/start/stop/rm, names, published ports
(a userspace proxy on 127.0.0.1 here), dockerd's "port is already allocated"."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from agents.worker.standalone import PortAllocated, StandaloneContainers, parse_port_bindings, task_for
from tests.unit.agent.fakeexec import FakeExecutor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_port_bindings_and_task() -> None:
    cfg = {"Image": "alpine", "Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1"], "ExposedPorts": {"53/udp": {}},
           "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}, "PublishAllPorts": True}}
    assert parse_port_bindings(cfg) == [
        {"HostIp": "", "HostPort": "8080", "PrivatePort": 80, "Type": "tcp"},
        {"HostIp": "", "HostPort": "", "PrivatePort": 53, "Type": "udp"},
    ]
    t = task_for(cfg, "hello")
    assert t.annotations.name == "hello" and t.spec.container.args == ["sh", "-c", "echo hi"]
    assert t.spec.container.env == ["A=1"] and not t.service_id
    with pytest.raises(ValueError):
        parse_port_bindings({"HostConfig": {"PortBindings": {"x/tcp": [{}]}}})


def test_run_publish_conflict_stop_remove(tmp_path: Path) -> None:
    async def main() -> None:
        owner = StandaloneContainers(str(tmp_path), FakeExecutor())
        port = _free_port()
        binding = {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}}
        c = await owner.create({"Image": "alpine", "Cmd": ["sleep", "30"], "HostConfig": binding}, "one")
        assert c.state == "created" and owner.find("one") is c and owner.find(c.id[:6]) is c
        await owner.start_container("one")
        assert c.running and vars(c)["port_bindings"] == [
            {"HostIp": "127.0.0.1", "HostPort": str(port), "PrivatePort": 80, "Type": "tcp"}
        ]
        other = await owner.create({"Image": "alpine", "Cmd": ["sleep", "30"], "HostConfig": binding}, "two")
        with pytest.raises(PortAllocated, match=f"Bind for 127.0.0.1:{port} failed: port is already allocated"):
            await owner.start_container(other.id)
        assert other.state == "created"
        with pytest.raises(RuntimeError, match="container is running"):
            await owner.remove_container("one")
        assert await owner.stop_container("one", 1) is True
        assert not c.running and vars(c)["port_bindings"] == []
        await owner.start_container("two")  # the port is free again
        await owner.remove_container("two", force=True)
        await owner.remove_container("one")
        with pytest.raises(LookupError):
            owner.find("one")
        assert owner._containers() == []
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # released
        await owner.close()

    asyncio.run(main())
