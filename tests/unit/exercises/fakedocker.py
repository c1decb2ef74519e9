"""An in-memory swarm with the docker SDK surface the checks and faults use (`info()`, `swarm.attrs`,
`nodes.list()`, `services.list()/get()`, `service.tasks()`, `secrets.list()`, `containers.get()` with
`exec_run`/`remove`), plus a fake `Target` (HTTP, node shells, fault driver)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from labctl.exercises.target import HttpResponse, LabView, NodeInfo

NS = 1_000_000_000
_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):023d}"


class NotFound(Exception):
    """Like docker.errors.NotFound."""

    status_code = 404


class EngineDown(Exception):
    """Like the SDK's ConnectionError when a node is halted."""


@dataclass
class Obj:
    attrs: dict[str, Any]


@dataclass
class ExecResult:
    exit_code: int
    output: bytes


@dataclass
class FakeContainer:
    id: str
    files: dict[str, str] = field(default_factory=dict)
    removed: bool = False
    shell: Callable[[str], tuple[int, str]] | None = None

    def exec_run(self, cmd: Sequence[str]) -> ExecResult:
        if cmd[:1] == ["cat"]:
            path = cmd[1]
            if path in self.files:
                return ExecResult(0, self.files[path].encode())
            return ExecResult(1, f"cat: {path}: No such file or directory\n".encode())
        if cmd[:2] == ["sh", "-c"] and self.shell is not None:
            rc, out = self.shell(cmd[2])
            return ExecResult(rc, out.encode())
        return ExecResult(127, b"not found\n")

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeCluster:
    def __init__(self, lab: str = "t") -> None:
        self.lab = lab
        self.nodes: dict[str, dict[str, Any]] = {}  # id → attrs
        self.services: dict[str, dict[str, Any]] = {}
        self.tasks: list[dict[str, Any]] = []
        self.secrets: list[dict[str, Any]] = []
        self.containers: dict[str, FakeContainer] = {}  # container id → container
        self.container_node: dict[str, str] = {}  # container id → node name
        self.local_state: dict[str, str] = {}  # node name → LocalNodeState
        self.down: set[str] = set()  # engines that do not answer
        self.reads = 0

    # ----- building state ----------------------------------------------------------------------------------
    def add_node(self, name: str, role: str = "worker", leader: bool = False, ip: str = "") -> str:
        nid = new_id("n")
        attrs: dict[str, Any] = {
            "ID": nid, "Spec": {"Role": role, "Availability": "active", "Labels": {}},
            "Description": {"Hostname": name}, "Status": {"State": "ready", "Addr": ip},
        }
        if role == "manager":
            attrs["ManagerStatus"] = {"Leader": leader, "Reachability": "reachable", "Addr": f"{ip}:2377"}
        self.nodes[nid] = attrs
        self.local_state[name] = "active"
        return nid

    def node(self, name: str) -> dict[str, Any]:
        return next(n for n in self.nodes.values() if n["Description"]["Hostname"] == name)

    def set_leader(self, name: str | None) -> None:
        for n in self.nodes.values():
            if "ManagerStatus" in n:
                n["ManagerStatus"]["Leader"] = n["Description"]["Hostname"] == name

    def add_service(self, name: str, image: str = "nginx:latest", replicas: int | None = 1,
                    ports: Sequence[tuple[int, int]] = (), constraints: Sequence[str] = (),
                    update: dict[str, Any] | None = None, mode: str = "replicated") -> str:
        sid = new_id("s")
        mode_spec: dict[str, Any] = {"Replicated": {"Replicas": replicas}} if mode == "replicated" else {"Global": {}}
        spec: dict[str, Any] = {
            "Name": name, "Mode": mode_spec,
            "TaskTemplate": {"ContainerSpec": {"Image": image + "@sha256:" + "ab" * 32},
                             "Placement": {"Constraints": list(constraints)}},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": t, "PublishedPort": p,
                                                        "PublishMode": "ingress"} for p, t in ports]},
        }
        if update is not None:
            spec["UpdateConfig"] = update
        self.services[sid] = {"ID": sid, "Spec": spec, "Endpoint": {"Ports": spec["EndpointSpec"]["Ports"]}}
        return sid

    def service_id(self, name: str) -> str:
        return next(s for s, a in self.services.items() if a["Spec"]["Name"] == name)

    def add_task(self, service: str, node: str, slot: int | None = None, state: str = "running",
                 desired: str = "running", err: str = "", files: dict[str, str] | None = None,
                 shell: Callable[[str], tuple[int, str]] | None = None) -> dict[str, Any]:
        cid = new_id("c")
        self.containers[cid] = FakeContainer(cid, dict(files or {}), shell=shell)
        self.container_node[cid] = node
        task = {"ID": new_id("t"), "ServiceID": self.service_id(service), "NodeID": self.node(node)["ID"],
                "Slot": slot, "DesiredState": desired,
                "Status": {"State": state, "Message": state, "Err": err, "ContainerStatus": {"ContainerID": cid}}}
        self.tasks.append(task)
        return task

    def run_replicas(self, service: str, nodes: Sequence[str], n: int) -> None:
        for i in range(n):
            self.add_task(service, nodes[i % len(nodes)], slot=i + 1)

    def client(self, node: str) -> FakeClient:
        return FakeClient(self, node)


class _Nodes:
    def __init__(self, c: FakeClient) -> None:
        self.c = c

    def list(self) -> list[Obj]:
        self.c.manager_only()
        return [Obj(a) for a in self.c.cluster.nodes.values()]


class _Service(Obj):
    def __init__(self, cluster: FakeCluster, attrs: dict[str, Any]) -> None:
        super().__init__(attrs)
        self.cluster = cluster

    def tasks(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self.cluster.reads += 1
        out = [t for t in self.cluster.tasks if t["ServiceID"] == self.attrs["ID"]]
        if filters and "desired-state" in filters:
            out = [t for t in out if t["DesiredState"] == filters["desired-state"]]
        return out


class _Services:
    def __init__(self, c: FakeClient) -> None:
        self.c = c

    def list(self) -> list[_Service]:
        self.c.manager_only()
        return [_Service(self.c.cluster, a) for a in self.c.cluster.services.values()]

    def get(self, name: str) -> _Service:
        for s in self.list():
            if s.attrs["Spec"]["Name"] == name or s.attrs["ID"] == name:
                return s
        raise NotFound(f"service {name} not found")


class _Secrets:
    def __init__(self, c: FakeClient) -> None:
        self.c = c

    def list(self) -> list[Obj]:
        self.c.manager_only()
        return [Obj(s) for s in self.c.cluster.secrets]


class _Containers:
    def __init__(self, c: FakeClient) -> None:
        self.c = c

    def get(self, cid: str) -> FakeContainer:
        self.c.alive()
        if self.c.cluster.container_node.get(cid) != self.c.node or self.c.cluster.containers[cid].removed:
            raise NotFound(f"No such container: {cid}")
        return self.c.cluster.containers[cid]


class FakeClient:
    def __init__(self, cluster: FakeCluster, node: str) -> None:
        self.cluster = cluster
        self.node = node
        self.nodes = _Nodes(self)
        self.services = _Services(self)
        self.secrets = _Secrets(self)
        self.containers = _Containers(self)

    def alive(self) -> None:
        self.cluster.reads += 1
        if self.node in self.cluster.down:
            raise EngineDown(f"Cannot connect to the Docker daemon of {self.node}")

    def _me(self) -> dict[str, Any] | None:
        return next((n for n in self.cluster.nodes.values() if n["Description"]["Hostname"] == self.node), None)

    def manager_only(self) -> None:
        self.alive()
        me = self._me()
        if me is None or me["Spec"]["Role"] != "manager":
            raise RuntimeError("This node is not a swarm manager.")

    def info(self) -> dict[str, Any]:
        self.alive()
        me = self._me()
        state = self.cluster.local_state.get(self.node, "inactive")
        manager = me is not None and me["Spec"]["Role"] == "manager" and state == "active"
        return {"Name": self.node, "Swarm": {"LocalNodeState": state, "NodeID": me["ID"] if me else "",
                                             "ControlAvailable": manager}}

    @property
    def swarm(self) -> Obj:
        self.manager_only()
        return Obj({"ID": "swarm1", "JoinTokens": {"Worker": "SWMTKN-w", "Manager": "SWMTKN-m"}})


@dataclass
class FakeDriver:
    cluster: FakeCluster
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def halt(self, node: str) -> None:
        self.calls.append(("halt", node))
        self.cluster.down.add(node)

    def start(self, node: str) -> None:
        self.calls.append(("start", node))
        self.cluster.down.discard(node)

    def kill(self, node: str) -> None:
        self.calls.append(("kill", node))
        self.cluster.down.add(node)

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        self.calls.append(("partition", [list(g) for g in groups]))

    def heal(self) -> None:
        self.calls.append(("heal", None))


class FakeTarget:
    """A lab of named nodes on 10.9.0.0/24 backed by a FakeCluster."""

    def __init__(self, cluster: FakeCluster, nodes: Sequence[tuple[str, str]]) -> None:
        self.cluster = cluster
        infos = tuple(NodeInfo(n, role, f"10.9.0.{11 + i}") for i, (n, role) in enumerate(nodes))
        self.lab = LabView(cluster.lab, infos, "10.9.0.0/24")
        self._driver = FakeDriver(cluster)
        self.http: Callable[[str], HttpResponse] = lambda url: HttpResponse(200, {"Server": "nginx/1.27"}, "Welcome to nginx!")
        self.shell: Callable[[str, str], tuple[int, str]] = lambda node, cmd: (0, "")
        self.commands: list[tuple[str, str]] = []

    @property
    def driver(self) -> FakeDriver:
        return self._driver

    def docker(self, node: str) -> FakeClient:
        return self.cluster.client(node)

    def http_get(self, url: str, timeout: float) -> HttpResponse:
        return self.http(url)

    def node_exec(self, node: str, command: str, timeout: float) -> tuple[int, str]:
        self.commands.append((node, command))
        return self.shell(node, command)


def swarm_lab(managers: int = 1, workers: int = 1, lab: str = "t") -> tuple[FakeCluster, FakeTarget]:
    """A formed swarm: manager1 leads; every node ready and active."""
    cluster = FakeCluster(lab)
    nodes = [(f"manager{i}", "manager") for i in range(1, managers + 1)]
    nodes += [(f"worker{i}", "worker") for i in range(1, workers + 1)]
    target = FakeTarget(cluster, nodes)
    for info in target.lab.nodes:
        cluster.add_node(info.name, info.role, leader=info.name == "manager1", ip=info.ip)
    return cluster, target
