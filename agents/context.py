"""Per-node state shared by the API handlers and (later) the swarm manager and worker.

One :class:`NodeContext` exists per agent process. The API server stores it in the aiohttp app so
every handler reaches the config and the swarm handles without globals; the manager/worker issues fill
in ``swarm`` (and their own handles) when they land.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agents.config import AgentConfig

ENGINE_ID_FILE = "engine-id"
"""Like dockerd, the daemon ID lives in ``<root>/engine-id`` so it survives restarts."""


class SwarmHandle(Protocol):
    """What the system endpoints need from the swarm side of the node."""

    def ping_status(self) -> str:
        """Value of the ``Swarm`` header of /_ping: inactive, pending, error, locked, active/worker, active/manager."""
        ...

    def info(self) -> dict[str, Any]:
        """The ``Swarm`` object of /info (a SwarmInfo in the API spec)."""
        ...


def inactive_swarm_info() -> dict[str, Any]:
    """SwarmInfo of a node that is in no swarm, as dockerd reports it."""
    return {
        "NodeID": "",
        "NodeAddr": "",
        "LocalNodeState": "inactive",
        "ControlAvailable": False,
        "Error": "",
        "RemoteManagers": None,
    }


@dataclass
class NodeContext:
    """Config plus live handles of one agent; handlers get it via ``agents.api.server.node_context``."""

    config: AgentConfig
    engine_id: str
    started_at: float = field(default_factory=time.time)
    swarm: SwarmHandle | None = None
    """Set by the manager/worker once the swarm code exists; None means "not in a swarm"."""
    manager: Any = None
    """The swarm manager handle (a later issue types it)."""
    worker: Any = None
    """The worker/executor handle (a later issue types it)."""

    @classmethod
    def create(cls, config: AgentConfig) -> NodeContext:
        """Context for ``config``, with the engine ID loaded from (or first written to) the state dir."""
        return cls(config=config, engine_id=load_or_create_engine_id(config.state_dir))

    def swarm_status(self) -> str:
        return self.swarm.ping_status() if self.swarm is not None else "inactive"

    def swarm_info(self) -> dict[str, Any]:
        return self.swarm.info() if self.swarm is not None else inactive_swarm_info()


def load_or_create_engine_id(state_dir: Path) -> str:
    """Read ``<state_dir>/engine-id`` or create it with a fresh UUID (atomically)."""
    path = state_dir / ENGINE_ID_FILE
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    new_id = str(uuid.uuid4())
    tmp = path.with_name(f".{ENGINE_ID_FILE}.{os.getpid()}.tmp")
    tmp.write_text(new_id + "\n")
    os.replace(tmp, path)
    return new_id
