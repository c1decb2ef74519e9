"""In-process swarm nodes for API tests: the Docker API on a unix socket plus a real ``SwarmNode``
(Raft, dispatcher, control loops, worker) on a random ``127.A.B.x`` loopback address, each in its own
event loop thread. Faster than spawning ``labagent`` and independent of the ``/swarm`` endpoints, so the
service/task API can be tested against a real cluster with the docker SDK or CLI.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from agents.api.nodelogs import run_node_log_server
from agents.api.server import ApiServer, build_app
from agents.config import AgentConfig
from agents.context import NodeContext
from agents.state.objects import Cluster
from agents.swarmnode import SwarmNode, SwarmTiming

from .fakeexec import FakeExecutor

T = TypeVar("T")


def loopback_subnet() -> str:
    """``127.A.B`` picked at random so parallel tests never share addresses (ports 2377-2379)."""
    return f"127.{random.randint(10, 250)}.{random.randint(1, 250)}"


class InProcessNode:
    def __init__(self, root: Path, name: str, ip: str) -> None:
        self.root, self.name, self.ip = root, name, ip
        (root / "state").mkdir(parents=True, exist_ok=True)
        cfg = AgentConfig(node_name=name, state_dir=root / "state", socket_path=root / "docker.sock", addr=ip)
        self.ctx = NodeContext.create(cfg)
        self.sock = cfg.socket_path
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        # Tasks must not touch the host's own network: a stand-in executor runs them as plain processes.
        self.executor = FakeExecutor()
        self.swarm = SwarmNode(cfg.state_dir, name, timing=SwarmTiming(), fsync=False,
                               executor_factory=lambda _state_dir: self.executor, network_plane=False)
        self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.server = await ApiServer.start(build_app(self.ctx), self.sock)
        self.ctx.swarm = self.swarm
        await self.swarm.start()
        self._logs = asyncio.ensure_future(run_node_log_server(self.ctx))

    async def _stop(self) -> None:
        self._logs.cancel()
        await asyncio.gather(self._logs, return_exceptions=True)
        await self.swarm.stop()
        await self.executor.close()
        await self.server.close()

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def init(self) -> None:
        self.run(self.swarm.init(self.ip))

    def join(self, manager: InProcessNode, role: str = "worker") -> None:
        assert manager.swarm.manager is not None
        tokens = manager.swarm.manager.store.list(Cluster)[0].root_ca.join_tokens
        token = tokens.worker if role == "worker" else tokens.manager
        self.run(self.swarm.join(token, f"{manager.ip}:2377", self.ip), timeout=60)

    @property
    def base_url(self) -> str:
        return f"unix://{self.sock}"

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(HOME=str(self.root), DOCKER_CONFIG=str(self.root / "cfg"), DOCKER_HOST=self.base_url)
        p = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {p.returncode}\n{p.stdout}{p.stderr}")
        return p
