"""What every provider (netns, vagrant, ssh) offers the CLI, faults and exercises.

A node is a machine: it can be powered off (`halt`), powered on (`start`), have its agent crash (`kill`),
be cut off from other nodes (`partition`/`heal`), and run commands (`exec`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from labctl.registry import LabRecord

Progress = Callable[[str], None]
"""Called with a short description as each step of a long operation completes."""


def no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class NodeStatus:
    name: str
    role: str
    ip: str
    state: str  # running | starting | stopped (agent dead) | halted
    swarm: str  # the agent's LocalNodeState (inactive, active, …) or "-" when it does not answer
    leader: bool | None = None
    node_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Provider(ABC):
    """One lab's machines. Implementations keep no state in memory between calls: the CLI creates a
    provider per command, so everything needed later is on disk (LABCTL_HOME) or in /run/labctl."""

    def __init__(self, record: LabRecord) -> None:
        self.record = record
        self.spec = record.spec

    @abstractmethod
    def create(self, progress: Progress = no_progress) -> None:
        """Build and start every node; on failure remove whatever was built, then raise."""

    @abstractmethod
    def destroy(self, progress: Progress = no_progress) -> list[str]:
        """Remove everything the lab owns; returns problems met (the rest is still removed)."""

    @abstractmethod
    def start(self, node: str) -> None: ...

    @abstractmethod
    def halt(self, node: str) -> None: ...

    @abstractmethod
    def kill(self, node: str) -> None: ...

    @abstractmethod
    def partition(self, groups: Sequence[Sequence[str]]) -> None: ...

    @abstractmethod
    def heal(self) -> None: ...

    @abstractmethod
    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """The host command line that runs `argv` inside `node` (as a shell on that machine would)."""

    @abstractmethod
    def docker_host(self, node: str) -> str:
        """The DOCKER_HOST value that points the docker CLI at the node's agent from the host."""

    @abstractmethod
    def status(self) -> list[NodeStatus]: ...
