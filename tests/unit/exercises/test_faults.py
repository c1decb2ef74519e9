"""Faults: provider calls for nodes and network; a task's container killed through the Docker API."""

from __future__ import annotations

import pytest

from labctl import faults
from labctl.errors import LabError
from labctl.exercises.model import KillTask
from tests.unit.exercises.fakedocker import swarm_lab


def test_node_and_network_faults() -> None:
    _cluster, target = swarm_lab(managers=1, workers=2)
    d = target.driver
    manager = lambda: target.docker("manager1")  # noqa: E731
    assert faults.apply("halt", "worker1", d, manager, target.docker) == "worker1 halted"
    assert faults.apply("start", "worker1", d, manager, target.docker) == "worker1 started"
    assert faults.apply("kill", "worker2", d, manager, target.docker) == "agent on worker2 killed"
    assert faults.apply("partition", [["manager1"], ["worker1", "worker2"]], d, manager, target.docker) == \
        "manager1 | worker1,worker2 partitioned"
    assert faults.apply("heal", True, d, manager, target.docker) == "network healed"
    slept: list[float] = []
    assert faults.apply("wait", 2.0, d, manager, target.docker, sleep=slept.append) == "waited 2s"
    assert slept == [2.0]
    assert [c[0] for c in d.calls] == ["halt", "start", "kill", "partition", "heal"]


def test_kill_task_removes_the_container_on_its_node() -> None:
    cluster, target = swarm_lab(managers=1, workers=2)
    cluster.add_service("web", replicas=3)
    cluster.run_replicas("web", ["worker1", "worker2", "manager1"], 3)
    manager = target.docker("manager1")
    done = faults.kill_task(manager, target.docker, "web", node="worker2")
    victim = next(t for t in cluster.tasks if cluster.node("worker2")["ID"] == t["NodeID"])
    cid = victim["Status"]["ContainerStatus"]["ContainerID"]
    assert cluster.containers[cid].removed and "on worker2" in done
    assert sum(c.removed for c in cluster.containers.values()) == 1
    done = faults.apply("kill_task", KillTask(service="web", slot=3), target.driver, lambda: manager, target.docker)
    assert "(web.3) on manager1" in done


def test_kill_task_errors() -> None:
    cluster, target = swarm_lab(managers=1, workers=1)
    manager = target.docker("manager1")
    with pytest.raises(LabError, match="cannot list the tasks of web"):
        faults.kill_task(manager, target.docker, "web")
    cluster.add_service("web", replicas=1)
    with pytest.raises(LabError, match="no running task of web on worker1"):
        faults.kill_task(manager, target.docker, "web", node="worker1")
    cluster.run_replicas("web", ["worker1"], 1)
    cluster.down.add("worker1")
    with pytest.raises(LabError, match="cannot kill the container of task"):
        faults.kill_task(manager, target.docker, "web")
