"""What checks, faults and `run` commands act on: a lab's nodes and how to reach them.

`Target` is a protocol so unit tests can hand in an in-memory swarm; `LabTarget` is the real thing for a
labctl lab, reaching each node's Docker API with the docker SDK (any provider: netns, vagrant, ssh).
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from labctl.errors import LabError

API_VERSION = "1.45"
DOCKER_TIMEOUT = 5.0


@dataclass(frozen=True)
class NodeInfo:
    name: str
    role: str
    ip: str


@dataclass(frozen=True)
class LabView:
    """The lab as the exercise sees it: node names (= hostnames), planned roles and lab addresses."""

    name: str
    nodes: tuple[NodeInfo, ...]
    subnet: str | None = None

    def node(self, name: str) -> NodeInfo:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"lab {self.name} has no node {name!r}")

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def select(self, selector: str) -> list[str]:
        """A node name, or `all`, `managers`, `workers` (planned roles)."""
        if selector == "all":
            return self.names
        if selector in ("managers", "workers"):
            return [n.name for n in self.nodes if n.role == selector[:-1]]
        return [self.node(selector).name]


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: str


class FaultDriver(Protocol):
    """The provider operations faults use (a labctl `Provider` satisfies it)."""

    def halt(self, node: str) -> None: ...
    def start(self, node: str) -> None: ...
    def kill(self, node: str) -> None: ...
    def partition(self, groups: Sequence[Sequence[str]]) -> None: ...
    def heal(self) -> None: ...


class Target(Protocol):
    lab: LabView

    @property
    def driver(self) -> FaultDriver: ...

    def docker(self, node: str) -> Any:
        """A docker SDK client (or a stand-in with the same surface) for the node's engine."""

    def http_get(self, url: str, timeout: float) -> HttpResponse: ...

    def node_exec(self, node: str, command: str, timeout: float) -> tuple[int, str]:
        """Run a shell command on the node as a student's shell would (DOCKER_HOST set); (rc, output)."""


@dataclass
class LabTarget:
    """A labctl lab: docker clients through `provider.docker_host`, commands through `provider.exec_argv`."""

    provider: Any  # labctl.providers.base.Provider
    lab: LabView = field(init=False)
    _clients: dict[str, Any] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        spec = self.provider.spec
        nodes = tuple(NodeInfo(n.name, n.role, str(n.ip)) for n in spec.nodes)
        self.lab = LabView(spec.name, nodes, str(spec.subnet) if spec.subnet else None)

    @property
    def driver(self) -> FaultDriver:
        return self.provider  # type: ignore[no-any-return]

    def docker(self, node: str) -> Any:
        with self._lock:
            client = self._clients.get(node)
            if client is None:
                import docker

                client = docker.DockerClient(base_url=self.provider.docker_host(node), version=API_VERSION,
                                             timeout=DOCKER_TIMEOUT)
                self._clients[node] = client
            return client

    def http_get(self, url: str, timeout: float) -> HttpResponse:
        host = urllib.parse.urlsplit(url).hostname or ""
        if self.lab.subnet is None or ipaddress.ip_address(host) not in ipaddress.ip_network(self.lab.subnet):
            raise LabError(f"{url}: HTTP checks only reach lab addresses ({self.lab.subnet})")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        try:
            with opener.open(url, timeout=timeout) as resp:
                return HttpResponse(resp.status, dict(resp.headers.items()), resp.read(65536).decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            return HttpResponse(e.code, dict(e.headers.items()), e.read(65536).decode("utf-8", "replace"))

    def node_exec(self, node: str, command: str, timeout: float) -> tuple[int, str]:
        argv = self.provider.exec_argv(node, ["sh", "-c", command])
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout:g}s"
        return res.returncode, res.stdout + res.stderr

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                try:
                    client.close()
                except Exception:
                    pass
            self._clients.clear()
