"""Run a cluster of ``python -m agents.raft.kv`` processes on 127.0.0.1 (tests and benchmarks).

Every process runs in its own session (process group) and is killed with SIGKILL by :meth:`close`, which
also removes the temporary directory; :meth:`close` is registered with ``atexit`` as a last resort, so a
failing test or an interrupted benchmark leaves neither processes nor directories behind.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from agents.raft.devcerts import make_cluster_certs
from agents.raft.kv import KVClient
from agents.raft.types import NodeId

_REPO = Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    """Ports the kernel considers free right now (bound together so they are distinct)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    def __init__(
        self,
        ids: tuple[NodeId, ...] = (1, 2, 3),
        *,
        tls: bool = True,
        fsync: bool = True,
        tick_ms: float = 100.0,
        election_ticks: int = 10,
        extra_args: tuple[str, ...] = (),
        profile_dir: Path | None = None,
        forward: bool = False,
    ) -> None:
        self.ids = ids
        self.tls = tls
        self.fsync = fsync
        self.tick_ms = tick_ms
        self.election_ticks = election_ticks
        self.extra_args = extra_args
        self.profile_dir = profile_dir
        self.forward = forward
        self.root = Path(tempfile.mkdtemp(prefix="raftkv-"))
        ports = free_ports(2 * len(ids))
        self.raft_ports = {nid: ports[2 * i] for i, nid in enumerate(ids)}
        self.client_ports = {nid: ports[2 * i + 1] for i, nid in enumerate(ids)}
        self.procs: dict[NodeId, subprocess.Popen[bytes]] = {}
        self._closed = False
        if tls:
            make_cluster_certs(self.root / "tls", ids)
        atexit.register(self.close)

    def data_dir(self, nid: NodeId) -> Path:
        return self.root / f"data-{nid}"

    def peers_arg(self) -> str:
        return ",".join(f"{nid}=127.0.0.1:{self.raft_ports[nid]}" for nid in self.ids)

    def command(self, nid: NodeId, *extra: str) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "agents.raft.kv",
            "--id",
            str(nid),
            "--peers",
            self.peers_arg(),
            "--data-dir",
            str(self.data_dir(nid)),
            "--client-port",
            str(self.client_ports[nid]),
            "--tick-ms",
            str(self.tick_ms),
            "--election-ticks",
            str(self.election_ticks),
        ]
        cmd += ["--tls-dir", str(self.root / "tls")] if self.tls else ["--insecure"]
        if not self.fsync:
            cmd.append("--no-fsync")
        if self.forward:
            cmd += ["--forward-to", ",".join(f"{n}=127.0.0.1:{self.client_ports[n]}" for n in self.ids)]
        if self.profile_dir is not None:
            cmd += ["--profile", str(self.profile_dir / f"kv-{nid}.prof")]
        return [*cmd, *self.extra_args, *extra]

    def start(self) -> None:
        for nid in self.ids:
            self.start_node(nid)

    def start_node(self, nid: NodeId, *extra: str) -> None:
        old = self.procs.get(nid)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"node {nid} is still running")
        logf = open(self.root / f"kv-{nid}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.procs[nid] = subprocess.Popen(
                self.command(nid, *extra),
                cwd=_REPO,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(_REPO)},
            )
        finally:
            logf.close()

    def kill(self, nid: NodeId, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(nid)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def alive(self, nid: NodeId) -> bool:
        proc = self.procs.get(nid)
        return proc is not None and proc.poll() is None

    def log_tail(self, nid: NodeId, lines: int = 30) -> str:
        path = self.root / f"kv-{nid}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop_all(self, timeout: float = 5.0) -> None:
        """SIGTERM everyone (lets profiles and WALs close), SIGKILL stragglers."""
        for nid in list(self.procs):
            if self.alive(nid):
                self.kill(nid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for nid in list(self.procs):
            self.kill(nid)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for nid in list(self.procs):
            self.kill(nid)
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.close)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ async helpers

    async def client(self, nid: NodeId, timeout: float = 10.0) -> KVClient:
        """Connect to a member's client port, waiting for the process to listen."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await KVClient.connect("127.0.0.1", self.client_ports[nid], timeout=1.0)
            except OSError:
                if not self.alive(nid):
                    raise RuntimeError(f"kv node {nid} exited:\n{self.log_tail(nid)}") from None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def statuses(self, nodes: tuple[NodeId, ...] | None = None) -> dict[NodeId, dict[str, Any]]:
        out: dict[NodeId, dict[str, Any]] = {}
        for nid in nodes or self.ids:
            if not self.alive(nid):
                continue
            try:
                c = await KVClient.connect("127.0.0.1", self.client_ports[nid], timeout=0.5)
            except (TimeoutError, OSError):
                continue
            try:
                out[nid] = await c.status(timeout=1.0)
            except (TimeoutError, OSError, ConnectionError):
                pass
            finally:
                await c.close()
        return out

    async def wait_leader(self, timeout: float = 15.0, among: tuple[NodeId, ...] | None = None) -> NodeId:
        """The id of a leader that the live members (``among``) agree on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = await self.statuses(among)
            leaders = {s["id"] for s in st.values() if s["role"] == "leader"}
            if len(leaders) == 1:
                (lid,) = leaders
                return int(lid)
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout}s: {await self.statuses(among)}")
