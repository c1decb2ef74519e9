"""Standalone containers: ``docker run -d [-p HOST:CONTAINER] [--name N] [-e K=V] IMAGE [CMD...]`` on a node,
in or out of a swarm (Docker's non-swarm containers).

They run with the node's `ProcessExecutor` code, but in their own executor instance and state directory
(``<state>/standalone``) so the swarm worker never adopts them as tasks (and vice versa), and on their own
bridge, ``docker0`` with Docker's default bridge subnet 172.17.0.0/16 (the node is 172.17.0.1), so their
addresses never collide with the swarm worker's fallback ``tasks0`` subnet.

Each container is a synthetic `Task` (no service) carrying the create config's image, entrypoint, cmd, env,
working dir, user, hostname and labels. Published ports (``-p``) are served by a userspace TCP proxy in
the node's network namespace (`agents.mesh.proxy.PortProxy`, like dockerd's userland-proxy): it listens
on ``HostIp:HostPort`` (all addresses by default) while the container runs and forwards to the
container's address. The proxy lives in the agent process, so nothing outlives the node. The port
bindings and name travel in ``standalone.json`` in the container's directory, so a restarted agent adopts
running containers with their ports (the executor deletes the directory with the container).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import secrets as _secrets
import signal as _signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from agents.mesh.proxy import PortProxy
from agents.state.objects import SECOND, Annotations, ContainerSpec, Task, TaskSpec
from agents.worker.executor import base
from agents.worker.executor.base import Container, Executor, StartFailed, TaskRejected
from agents.worker.executor.logs import LogEntry
from agents.worker.images import catalog

log = logging.getLogger(__name__)

BRIDGE = "docker0"
SUBNET = "172.17.0.0/16"
META_FILE = "standalone.json"
NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


class NoSuchContainer(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"No such container: {ref}")


class PortAllocated(Exception):
    """A published port cannot be bound; the message is dockerd's."""


@dataclass(eq=False)
class _Entry:
    container: Container
    ports: list[dict[str, Any]] = field(default_factory=list)
    """Requested bindings: {"HostIp", "HostPort" (str, "" = any), "PrivatePort", "Type"}."""
    proxies: list[PortProxy] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None


def parse_port_bindings(config: dict[str, Any]) -> list[dict[str, Any]]:
    """``HostConfig.PortBindings`` (+ ``PublishAllPorts``) of a create body -> the bindings to serve."""
    host_config = config.get("HostConfig") or {}
    bindings = host_config.get("PortBindings") or {}
    if not isinstance(bindings, dict):
        raise ValueError("invalid port bindings")
    out: list[dict[str, Any]] = []
    for key, items in bindings.items():
        port_text, _, proto = str(key).partition("/")
        proto = proto or "tcp"
        try:
            private = int(port_text)
        except ValueError:
            raise ValueError(f"invalid port specification: \"{key}\"") from None
        for b in items or [{}]:
            b = b or {}
            host_port = str(b.get("HostPort") or "")
            if host_port and not host_port.isdigit():
                raise ValueError(f"invalid host port: \"{host_port}\"")
            out.append({"HostIp": str(b.get("HostIp") or ""), "HostPort": host_port, "PrivatePort": private, "Type": proto})
    if host_config.get("PublishAllPorts"):
        have = {(b["PrivatePort"], b["Type"]) for b in out}
        for key in config.get("ExposedPorts") or {}:
            port_text, _, proto = str(key).partition("/")
            if port_text.isdigit() and (int(port_text), proto or "tcp") not in have:
                out.append({"HostIp": "", "HostPort": "", "PrivatePort": int(port_text), "Type": proto or "tcp"})
    return out


def task_for(config: dict[str, Any], name: str) -> Task:
    """The synthetic task (no service) that carries a create config to the executor."""
    entrypoint = config.get("Entrypoint")
    if isinstance(entrypoint, str):
        entrypoint = [entrypoint]
    cmd = config.get("Cmd")
    if isinstance(cmd, str):
        cmd = [cmd]
    stop_timeout = config.get("StopTimeout")
    cs = ContainerSpec(
        image=str(config.get("Image", "")),
        command=[str(w) for w in entrypoint or []],
        args=[str(w) for w in cmd or []],
        env=[str(e) for e in config.get("Env") or []],
        hostname=str(config.get("Hostname") or ""),
        dir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
        labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
        stop_signal=str(config.get("StopSignal") or ""),
        stop_grace_period=int(stop_timeout) * SECOND if isinstance(stop_timeout, int) and stop_timeout >= 0 else 10 * SECOND,
    )
    tid = _secrets.token_hex(13)[:25]
    return Task(id=tid, spec=TaskSpec(container=cs), annotations=Annotations(name=name))


def _fixed(target: tuple[str, int]) -> Callable[[], list[tuple[str, int]]]:
    return lambda: [target]


class StandaloneContainers:
    """The node's standalone containers (see the module docstring); the API's ``docker run`` side."""

    def __init__(self, state_dir: str, executor: Executor | None = None) -> None:
        self.state_dir = os.path.join(state_dir, "standalone")
        if executor is None:
            from agents.worker.executor.process import ProcessExecutor

            executor = ProcessExecutor(self.state_dir, fallback_subnet=SUBNET, fallback_bridge=BRIDGE)
        self.executor: Executor = executor
        self._entries: dict[str, _Entry] = {}
        self._started = False
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Adopt the standalone containers a previous agent left (running ones get their ports back)."""
        async with self._lock:
            if self._started:
                return
            self._started = True
            for c in await self.executor.restore():
                meta = self._load_meta(c.id)
                self._decorate(c, meta.get("name") or c.task.annotations.name, meta.get("ports") or [])
                entry = _Entry(c, ports=list(meta.get("ports") or []))
                self._entries[c.id] = entry
                if c.running:
                    try:
                        await self._publish(entry)
                    except PortAllocated as e:
                        log.warning("container %s: %s", c.short_id, e)
                    entry.watcher = asyncio.get_running_loop().create_task(self._watch(entry))

    async def close(self) -> None:
        """Agent shutdown: stop serving ports and watching (containers keep running for the next agent)."""
        for entry in self._entries.values():
            if entry.watcher is not None:
                entry.watcher.cancel()
            await self._unpublish(entry)
        close = getattr(self.executor, "close", None)
        if close is not None:
            await close()
        self._started = False

    # ---------------------------------------------------------------------------------------- run

    async def create(self, config: dict[str, Any], name: str) -> Container:
        """``POST /containers/create``: the container exists (state ``created``) but nothing runs yet."""
        await self.start()
        ports = parse_port_bindings(config)
        task = task_for(config, name)
        try:
            c = await self.executor.create(task, [])
        except TaskRejected as e:
            raise ValueError(str(e)) from None
        self._decorate(c, name, ports)
        c.env = list(task.spec.container.env)  # type: ignore[attr-defined]
        self._entries[c.id] = _Entry(c, ports=ports)
        self._save_meta(c.id, {"name": name, "ports": ports})
        return c

    async def start_container(self, ref: str) -> Container:
        """``POST /containers/{id}/start``: bind the published ports, then start the program."""
        entry = self._entry(ref)
        c = entry.container
        if c.running:
            return c
        try:
            await self._publish(entry)
        except PortAllocated as e:
            raise PortAllocated(
                f"failed to set up container networking: driver failed programming external connectivity on "
                f"endpoint {getattr(c, 'name', c.short_id)} ({c.id}): {e}"
            ) from None
        try:
            await self.executor.start(c)
        except StartFailed:
            await self._unpublish(entry)
            raise
        entry.watcher = asyncio.get_running_loop().create_task(self._watch(entry))
        return c

    async def _watch(self, entry: _Entry) -> None:
        await entry.container.exited.wait()
        await self._unpublish(entry)

    async def _publish(self, entry: _Entry) -> None:
        c = entry.container
        address = c.addresses[0].partition("/")[0] if c.addresses else ""
        actual: list[dict[str, Any]] = []
        try:
            for b in entry.ports:
                if b["Type"] != "tcp":
                    log.warning("container %s: %s/%s not published (only tcp is)", c.short_id, b["PrivatePort"], b["Type"])
                    continue
                host = b["HostIp"] or "0.0.0.0"
                port = int(b["HostPort"] or 0)
                target = (address, int(b["PrivatePort"]))
                proxy = PortProxy(port, _fixed(target), host=host)
                try:
                    await proxy.start()
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        raise PortAllocated(f"Bind for {host}:{port} failed: port is already allocated") from None
                    raise PortAllocated(f"Bind for {host}:{port} failed: {e.strerror or e}") from None
                entry.proxies.append(proxy)
                server = getattr(proxy, "_server", None)
                if port == 0 and server is not None and server.sockets:
                    port = int(server.sockets[0].getsockname()[1])
                    proxy.port = port
                actual.append({**b, "HostIp": host, "HostPort": str(port)})
        except BaseException:
            await self._unpublish(entry)
            raise
        c.port_bindings = actual  # type: ignore[attr-defined]

    async def _unpublish(self, entry: _Entry) -> None:
        proxies, entry.proxies = entry.proxies, []
        for p in proxies:
            with contextlib.suppress(Exception):
                await p.stop()
        entry.container.port_bindings = []  # type: ignore[attr-defined]

    async def stop_container(self, ref: str, timeout: float | None = None, sig: str | int | None = None) -> bool:
        """``docker stop``: the stop signal, SIGKILL after the grace period. False if it was not running."""
        entry = self._entry(ref)
        c = entry.container
        if not c.running:
            return False
        cs = c.task.spec.container
        grace = timeout if timeout is not None and timeout >= 0 else cs.stop_grace_period / SECOND
        name = sig or cs.stop_signal
        if not name:
            with contextlib.suppress(catalog.ImageError):
                name = catalog.resolve(cs.image).stop_signal
        try:
            signum = base.parse_signal(name)
        except ValueError:
            signum = _signal.SIGTERM
        with contextlib.suppress(ProcessLookupError):
            await base.stop(self.executor, c, grace, signum)
        await self._unpublish(entry)
        return True

    async def kill(self, ref: str, sig: int = 9) -> None:
        c = self._entry(ref).container
        if not c.running:
            raise RuntimeError(f"cannot kill container: {ref}: container {c.id} is not running")
        await self.executor.signal(c, sig)

    async def remove_container(self, ref: str, force: bool = False) -> None:
        """``docker rm [-f]``: a running container needs ``force`` (then it is killed)."""
        entry = self._entry(ref)
        c = entry.container
        if c.running and not force:
            raise RuntimeError(
                f'cannot remove container "/{getattr(c, "name", c.short_id)}": container is running: '
                "stop the container before removing or force remove"
            )
        if entry.watcher is not None:
            entry.watcher.cancel()
        await self._unpublish(entry)
        await self.executor.remove(c)
        self._entries.pop(c.id, None)

    # ------------------------------------------------------------------------------------ lookups

    def _containers(self) -> list[Container]:
        return [e.container for e in self._entries.values()]

    def owns(self, c: Any) -> bool:
        return any(e.container is c for e in self._entries.values())

    def names(self) -> set[str]:
        return {str(getattr(e.container, "name", "")) for e in self._entries.values()}

    def _entry(self, ref: str) -> _Entry:
        name = ref.lstrip("/")
        matches = []
        for e in self._entries.values():
            c = e.container
            if c.id == ref or c.task.id == ref or getattr(c, "name", None) == name:
                return e
            if ref and c.id.startswith(ref):
                matches.append(e)
        if len(matches) == 1:
            return matches[0]
        raise NoSuchContainer(ref)

    def find(self, ref: str) -> Container:
        return self._entry(ref).container

    def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
        stdout: bool = True,
        stderr: bool = True,
    ) -> AsyncIterator[LogEntry]:
        c = self.find(ref)
        return self.executor.logs(c, follow=follow, tail=tail, since=since, until=until, stdout=stdout, stderr=stderr)

    # --------------------------------------------------------------------------------------- disk

    def _decorate(self, c: Container, name: str, ports: list[dict[str, Any]]) -> None:
        c.name = name  # type: ignore[attr-defined]
        c.labels = dict(c.task.spec.container.labels)  # type: ignore[attr-defined]
        c.requested_ports = list(ports)  # type: ignore[attr-defined]
        c.port_bindings = []  # type: ignore[attr-defined]
        c.env = list(c.task.spec.container.env)  # type: ignore[attr-defined]

    def _meta_path(self, cid: str) -> str | None:
        cdir = getattr(self.executor, "container_dir", None)
        return os.path.join(cdir(cid), META_FILE) if callable(cdir) else None

    def _save_meta(self, cid: str, meta: dict[str, Any]) -> None:
        path = self._meta_path(cid)
        if path is None:
            return
        with contextlib.suppress(OSError), open(path, "w") as fh:
            json.dump(meta, fh)

    def _load_meta(self, cid: str) -> dict[str, Any]:
        path = self._meta_path(cid)
        if path is None:
            return {}
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}
