"""Standalone containers: ``docker run [-d] [-it] [--rm] [-p HOST:CONTAINER] [--name N] [-e K=V] IMAGE [CMD...]``
on a node, in or out of a swarm (Docker's non-swarm containers), and ``docker start [-a]``/``restart``.

They run with the node's `ProcessExecutor` code, but in their own executor instance and state directory
(``<state>/standalone``) so the swarm worker never adopts them as tasks (and vice versa), and on their own
bridge, ``docker0`` with Docker's default bridge subnet 172.17.0.0/16 (the node is 172.17.0.1), so their
addresses never collide with the swarm worker's fallback ``tasks0`` subnet.

A container (`StandaloneContainer`, what the API sees) keeps its id, name and create config for its whole
life; each time it runs, the executor runs it as a fresh executor container (a *run*) built from that
config -- an executor container starts once, while ``docker start`` of an exited container must run it
again with the same config. The first run's id is the container's id, the hostname stays its short id,
and the previous run's log is carried over, so ``docker logs`` shows every run as Docker does.

Each run is a synthetic `Task` (no service) carrying the config's image, entrypoint, cmd, env, working dir,
user, hostname and labels. A container created for attaching (``docker run`` without ``-d``, ``-i``,
``-t``, or one started while an attach waits) runs behind its console (`agents.worker.console`: stdin,
a pty, live output to attached clients; `agents.worker.consolerun` builds that run's task); the start
connects to the console before its program runs and hands the connection to the waiting attach.

Published ports (``-p``) are served by a userspace TCP proxy in the node's network namespace
(`agents.mesh.proxy.PortProxy`, like dockerd's userland-proxy): it listens on ``HostIp:HostPort`` (all
addresses by default) while the container runs and forwards to the container's address. The proxy lives
in the agent process, so nothing outlives the node. ``HostConfig.AutoRemove`` (``--rm``) removes the
container once it exited. The container's id, name, config and ports travel in ``standalone.json`` in its
run's directory, so a restarted agent adopts running containers with their ports (the executor deletes
the directory with the run).
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
import shutil
from collections.abc import AsyncIterator, Callable
from typing import Any

from agents.mesh.proxy import PortProxy
from agents.state.objects import SECOND, Annotations, ContainerSpec, Task, TaskSpec
from agents.worker import consolerun
from agents.worker.attach import ConsoleConnection
from agents.worker.executor import base
from agents.worker.executor import logs as logfiles
from agents.worker.executor.base import Container, Executor, LogQuery, StartFailed, TaskRejected
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


def parse_port_bindings(config: dict[str, Any]) -> list[dict[str, Any]]:
    """``HostConfig.PortBindings`` (+ ``PublishAllPorts``) of a create body -> the bindings to serve."""
    host_config = config.get("HostConfig") or {}
    if not isinstance(host_config, dict):
        raise ValueError("invalid HostConfig")
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
        if not isinstance(items, list | type(None)):
            raise ValueError(f"invalid port bindings for \"{key}\"")
        for b in items or [{}]:
            b = b if isinstance(b, dict) else {}
            host_port = str(b.get("HostPort") or "")
            if host_port and not host_port.isdigit():
                raise ValueError(f"invalid host port: \"{host_port}\"")
            out.append({"HostIp": str(b.get("HostIp") or ""), "HostPort": host_port, "PrivatePort": private, "Type": proto})
    if host_config.get("PublishAllPorts"):
        have = {(b["PrivatePort"], b["Type"]) for b in out}
        exposed = config.get("ExposedPorts") or {}
        for key in exposed if isinstance(exposed, dict) else {}:
            port_text, _, proto = str(key).partition("/")
            if port_text.isdigit() and (int(port_text), proto or "tcp") not in have:
                out.append({"HostIp": "", "HostPort": "", "PrivatePort": int(port_text), "Type": proto or "tcp"})
    return out


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"invalid JSON: expected a string or an array of strings, got {type(value).__name__}")
    return [str(w) for w in value]


def task_for(config: dict[str, Any], name: str, *, hostname: str | None = None) -> Task:
    """The synthetic task (no service) that carries a create config to the executor."""
    labels = config.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ValueError("invalid JSON: Labels must be an object")
    stop_timeout = config.get("StopTimeout")
    cs = ContainerSpec(
        image=str(config.get("Image", "")),
        command=_words(config.get("Entrypoint")),
        args=_words(config.get("Cmd")),
        env=_words(config.get("Env")),
        hostname=str(config.get("Hostname") or hostname or ""),
        dir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        stop_signal=str(config.get("StopSignal") or ""),
        stop_grace_period=int(stop_timeout) * SECOND if isinstance(stop_timeout, int) and stop_timeout >= 0 else 10 * SECOND,
    )
    tid = _secrets.token_hex(13)[:25]
    return Task(id=tid, spec=TaskSpec(container=cs), annotations=Annotations(name=name))


def _fixed(target: tuple[str, int]) -> Callable[[], list[tuple[str, int]]]:
    return lambda: [target]


class StandaloneContainer:
    """One standalone container across its runs: identity and config here, runtime state from ``run``
    (the current executor container)."""

    def __init__(self, cid: str, name: str, config: dict[str, Any], ports: list[dict[str, Any]], created: float,
                 run: Container, console_dir: str, console: bool) -> None:
        self.id = cid
        self.name = name
        self.config = config
        self.task = task_for(config, name)
        """The container as configured (real image and command); runs may differ (console)."""
        self.image = str(config.get("Image", ""))
        cs = self.task.spec.container
        try:
            self.argv = catalog.build_argv(catalog.resolve(cs.image), cs.command or None, None, cs.args)
        except catalog.ImageError:
            self.argv = [*cs.command, *cs.args]
        self.created = created
        self.labels = dict(cs.labels)
        self.env = list(cs.env)
        self.requested_ports = list(ports)
        """Requested bindings: {"HostIp", "HostPort" (str, "" = any), "PrivatePort", "Type"}."""
        self.port_bindings: list[dict[str, Any]] = []
        self.proxies: list[PortProxy] = []
        self.run = run
        self.console_dir = console_dir
        self.console = console
        """Whether the current run has a console (`agents.worker.console`)."""
        host_config = config.get("HostConfig") or {}
        self.auto_remove = bool(isinstance(host_config, dict) and host_config.get("AutoRemove"))
        self.exits = 0
        self.removed = asyncio.Event()
        self.watcher: asyncio.Task[None] | None = None
        self.attach_waiters: list[asyncio.Future[ConsoleConnection | None]] = []
        self.lock = asyncio.Lock()
        self._changed = asyncio.Event()

    # --- runtime state of the current run
    @property
    def state(self) -> str:
        return self.run.state

    @property
    def running(self) -> bool:
        return self.run.running

    @property
    def pid(self) -> int:
        return self.run.pid

    @property
    def started_at(self) -> float:
        return self.run.started_at

    @property
    def finished_at(self) -> float:
        return self.run.finished_at

    @property
    def exit_code(self) -> int | None:
        return self.run.exit_code

    @property
    def addresses(self) -> list[str]:
        return self.run.addresses

    @property
    def hostname(self) -> str:
        return self.run.hostname or self.id[:12]

    @property
    def error(self) -> str:
        return self.run.error

    @property
    def exited(self) -> asyncio.Event:
        return self.run.exited

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    # --- waiting
    def notify(self) -> None:
        """Wake everyone waiting for a change (start, exit, removal)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait(self, condition: str) -> int:
        """``POST /containers/{id}/wait``: ``not-running`` (now if exited), ``next-exit`` (the current
        run's exit, or the next run's if it is not running), ``removed``; the exit code."""
        if condition == "removed":
            await self.removed.wait()
        elif not (condition == "not-running" and self.state == "exited"):
            target = self.exits + 1
            await self.wait_for(lambda: self.exits >= target or self.removed.is_set())
        return int(self.exit_code or 0)


class StandaloneContainers:
    """The node's standalone containers (see the module docstring); the API's ``docker run`` side."""

    def __init__(self, state_dir: str, executor: Executor | None = None) -> None:
        self.state_dir = os.path.join(state_dir, "standalone")
        if executor is None:
            from agents.worker.executor.process import ProcessExecutor

            executor = ProcessExecutor(self.state_dir, fallback_subnet=SUBNET, fallback_bridge=BRIDGE)
        self.executor: Executor = executor
        self.consoles_dir = os.path.join(self.state_dir, "consoles")
        self._views: dict[str, StandaloneContainer] = {}
        self._started = False
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Adopt the standalone containers a previous agent left (running ones get their ports back)."""
        async with self._lock:
            if self._started:
                return
            self._started = True
            groups: dict[str, list[tuple[Container, dict[str, Any]]]] = {}
            for c in await self.executor.restore():
                meta = self._load_meta(c.id)
                groups.setdefault(str(meta.get("id") or c.id), []).append((c, meta))
            for cid, runs in groups.items():
                runs.sort(key=lambda r: r[0].created)
                for stale, _ in runs[:-1]:  # an agent stopped between a restart's two steps
                    with contextlib.suppress(Exception):
                        await self.executor.remove(stale)
                c, meta = runs[-1]
                saved = meta.get("config")
                config: dict[str, Any] = saved if isinstance(saved, dict) else _config_of(c.task)
                view = StandaloneContainer(
                    cid, str(meta.get("name") or c.task.annotations.name), config, list(meta.get("ports") or []),
                    float(meta.get("created") or c.created), c,
                    str(meta.get("console_dir") or os.path.join(self.consoles_dir, cid[:16])), bool(meta.get("console")),
                )
                view.exits = 0 if c.running else 1
                self._views[cid] = view
                if c.running:
                    try:
                        await self._publish(view)
                    except PortAllocated as e:
                        log.warning("container %s: %s", view.short_id, e)
                    view.watcher = asyncio.get_running_loop().create_task(self._watch(view, c))

    async def close(self) -> None:
        """Agent shutdown: stop serving ports and watching (containers keep running for the next agent)."""
        for view in self._views.values():
            if view.watcher is not None:
                view.watcher.cancel()
            await self._unpublish(view)
            for fut in view.attach_waiters:
                if not fut.done():
                    fut.set_result(None)
        close = getattr(self.executor, "close", None)
        if close is not None:
            await close()
        self._started = False

    # ---------------------------------------------------------------------------------------- run

    def _run_task(self, config: dict[str, Any], name: str, *, console_dir: str | None, hostname: str) -> Task:
        """The task one run hands the executor: the config as is, or (``console_dir``) behind its console."""
        public = task_for(config, name, hostname=hostname)
        if console_dir is None:
            return public
        return consolerun.console_task(public, config, console_dir) or public

    async def _new_run(self, config: dict[str, Any], name: str, console_dir: str, console: bool,
                       hostname: str) -> tuple[Container, bool]:
        task = self._run_task(config, name, console_dir=console_dir if console else None, hostname=hostname)
        console = consolerun.is_console(task)
        if console:
            os.makedirs(console_dir, mode=0o700, exist_ok=True)
        try:
            return await self.executor.create(task, []), console
        except TaskRejected as e:
            raise ValueError(str(e)) from None

    async def create(self, config: dict[str, Any], name: str) -> StandaloneContainer:
        """``POST /containers/create``: the container exists (state ``created``) but nothing runs yet."""
        await self.start()
        ports = parse_port_bindings(config)
        task_for(config, name)  # the config's shape, checked before anything is created
        console_dir = os.path.join(self.consoles_dir, _secrets.token_hex(8))
        c, console = await self._new_run(config, name, console_dir, consolerun.wants_console(config), "")
        view = StandaloneContainer(c.id, name, config, ports, c.created, c, console_dir, console)
        self._views[view.id] = view
        self._save_meta(view, c)
        return view

    async def start_container(self, ref: str) -> StandaloneContainer:
        """``POST /containers/{id}/start``: bind the published ports, then start the program; an exited
        container runs again (a new run, same config)."""
        view = self._view(ref)
        async with view.lock:
            if view.running:
                return view
            if view.state == "exited" or (view.attach_waiters and not view.console):
                await self._renew(view)
            try:
                await self._publish(view)
            except PortAllocated as e:
                raise PortAllocated(
                    f"failed to set up container networking: driver failed programming external connectivity on "
                    f"endpoint {view.name} ({view.id}): {e}"
                ) from None
            try:
                await self.executor.start(view.run)
            except StartFailed:
                await self._unpublish(view)
                view.exits += 1
                view.notify()
                if view.auto_remove:
                    with contextlib.suppress(LookupError):
                        await self.remove_container(view.id, force=True)
                raise
            view.watcher = asyncio.get_running_loop().create_task(self._watch(view, view.run))
            view.notify()
            if view.console:
                await self._connect_console(view)
            return view

    async def restart_container(self, ref: str, timeout: float | None = None, sig: str | int | None = None) -> None:
        """``docker restart``: stop (if running), then start again."""
        await self.stop_container(ref, timeout, sig)
        await self.start_container(ref)

    async def _renew(self, view: StandaloneContainer) -> None:
        old = view.run
        console = consolerun.wants_console(view.config) or bool(view.attach_waiters)
        hostname = str(view.config.get("Hostname") or view.id[:12])
        try:
            new, console = await self._new_run(view.config, view.name, view.console_dir, console, hostname)
        except ValueError as e:
            raise StartFailed(str(e)) from None
        self._carry_logs(old, new)
        self._save_meta(view, new)
        view.run, view.console = new, console
        with contextlib.suppress(Exception):
            await self.executor.remove(old)

    async def _connect_console(self, view: StandaloneContainer) -> None:
        """Hand the attach requests that wait for this start their console connections; with none, just
        release the console (it starts its program once someone connected)."""
        waiters, view.attach_waiters = view.attach_waiters, []
        handed = False
        for fut in waiters:
            if fut.done():
                continue
            try:
                conn: ConsoleConnection | None = await ConsoleConnection.open(view.console_dir, consolerun.CONSOLE_WAIT_S)
            except OSError as e:
                log.warning("container %s: console: %s", view.short_id, e)
                conn = None
            if fut.done() and conn is not None:
                await conn.detach()
                continue
            fut.set_result(conn)
            handed = handed or conn is not None
        if not handed:
            try:
                conn = await ConsoleConnection.open(view.console_dir, consolerun.CONSOLE_WAIT_S)
            except OSError as e:
                log.warning("container %s: console: %s", view.short_id, e)
                return
            await conn.detach()

    async def console_connection(self, view: StandaloneContainer, gone: asyncio.Event) -> ConsoleConnection | None:
        """For an attach: a connection to the container's console once it runs (now if it runs; else at
        its next start). None when it has no console, was removed, or ``gone`` (the client left) is set."""
        if view.running:
            if not view.console:
                return None
            try:
                return await ConsoleConnection.open(view.console_dir, 2.0)
            except OSError:
                return None
        if view.removed.is_set():
            return None
        fut: asyncio.Future[ConsoleConnection | None] = asyncio.get_running_loop().create_future()
        view.attach_waiters.append(fut)
        left: asyncio.Future[Any] = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait([fut, left], return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            if fut in view.attach_waiters:
                view.attach_waiters.remove(fut)
        if not fut.done():
            fut.cancel()
            return None
        return fut.result()

    async def resize(self, view: StandaloneContainer, height: int, width: int) -> None:
        """``POST /containers/{id}/resize``: the console's pty size (nothing without one)."""
        if not (view.console and view.running):
            return
        try:
            conn = await ConsoleConnection.open(view.console_dir, 2.0)
        except OSError:
            return
        await conn.resize(height, width)
        await conn.detach()

    async def _watch(self, view: StandaloneContainer, run: Container) -> None:
        await run.exited.wait()
        if view.run is not run:
            return
        view.exits += 1
        await self._unpublish(view)
        view.notify()
        if view.auto_remove and self._views.get(view.id) is view:
            await self.remove_container(view.id, force=True)

    async def _publish(self, view: StandaloneContainer) -> None:
        c = view.run
        address = c.addresses[0].partition("/")[0] if c.addresses else ""
        actual: list[dict[str, Any]] = []
        try:
            for b in view.requested_ports:
                if b["Type"] != "tcp":
                    log.warning("container %s: %s/%s not published (only tcp is)", view.short_id, b["PrivatePort"], b["Type"])
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
                view.proxies.append(proxy)
                server = getattr(proxy, "_server", None)
                if port == 0 and server is not None and server.sockets:
                    port = int(server.sockets[0].getsockname()[1])
                    proxy.port = port
                actual.append({**b, "HostIp": host, "HostPort": str(port)})
        except BaseException:
            await self._unpublish(view)
            raise
        view.port_bindings = actual

    async def _unpublish(self, view: StandaloneContainer) -> None:
        proxies, view.proxies = view.proxies, []
        for p in proxies:
            with contextlib.suppress(Exception):
                await p.stop()
        view.port_bindings = []

    async def stop_container(self, ref: str, timeout: float | None = None, sig: str | int | None = None) -> bool:
        """``docker stop``: the stop signal, SIGKILL after the grace period. False if it was not running."""
        view = self._view(ref)
        c = view.run
        if not c.running:
            return False
        cs = view.task.spec.container
        grace = timeout if timeout is not None and timeout >= 0 else cs.stop_grace_period / SECOND
        signum = base.stop_signal(cs, sig)
        with contextlib.suppress(ProcessLookupError):
            await base.stop(self.executor, c, grace, signum)
        await self._unpublish(view)
        return True

    async def kill(self, ref: str, sig: int = 9) -> None:
        view = self._view(ref)
        if not view.running:
            raise RuntimeError(f"cannot kill container: {ref}: container {view.id} is not running")
        await self.executor.signal(view.run, sig)

    async def remove_container(self, ref: str, force: bool = False) -> None:
        """``docker rm [-f]``: a running container needs ``force`` (then it is killed)."""
        view = self._view(ref)
        if view.running and not force:
            raise RuntimeError(
                f'cannot remove container "/{view.name}": container is running: '
                "stop the container before removing or force remove"
            )
        if view.watcher is not None and view.watcher is not asyncio.current_task():
            view.watcher.cancel()
        await self._unpublish(view)
        await self.executor.remove(view.run)
        if self._views.get(view.id) is view:
            del self._views[view.id]
        await asyncio.to_thread(shutil.rmtree, view.console_dir, True)
        for fut in view.attach_waiters:
            if not fut.done():
                fut.set_result(None)
        view.removed.set()
        view.notify()

    # ------------------------------------------------------------------------------------ lookups

    def _containers(self) -> list[StandaloneContainer]:
        return list(self._views.values())

    def owns(self, c: Any) -> bool:
        return any(v is c for v in self._views.values())

    def names(self) -> set[str]:
        return {v.name for v in self._views.values()}

    def _view(self, ref: str) -> StandaloneContainer:
        name = ref.lstrip("/")
        matches = []
        for v in self._views.values():
            if v.id == ref or v.task.id == ref or v.name == name:
                return v
            if ref and v.id.startswith(ref):
                matches.append(v)
        if len(matches) == 1:
            return matches[0]
        raise NoSuchContainer(ref)

    def find(self, ref: str) -> StandaloneContainer:
        return self._view(ref)

    def logs(self, ref: str, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]:
        return self.executor.logs(self.find(ref).run, query)

    # --------------------------------------------------------------------------------------- disk

    def _carry_logs(self, old: Container, new: Container) -> None:
        """The previous run's log becomes the start of the new run's (the supervisor appends)."""
        path = getattr(self.executor, "log_path", None)
        if not callable(path):
            return
        try:
            with open(path(new.id), "ab") as out:
                for name in logfiles.log_files(path(old.id)):
                    with contextlib.suppress(FileNotFoundError), open(name, "rb") as fh:
                        shutil.copyfileobj(fh, out)
        except OSError as e:
            log.warning("container %s: previous logs not kept: %s", new.short_id, e)

    def _meta_path(self, cid: str) -> str | None:
        cdir = getattr(self.executor, "container_dir", None)
        return os.path.join(cdir(cid), META_FILE) if callable(cdir) else None

    def _save_meta(self, view: StandaloneContainer, run: Container) -> None:
        path = self._meta_path(run.id)
        if path is None:
            return
        meta = {
            "id": view.id,
            "name": view.name,
            "ports": view.requested_ports,
            "config": view.config,
            "created": view.created,
            "console_dir": view.console_dir,
            "console": consolerun.is_console(run.task),
        }
        with contextlib.suppress(OSError, TypeError, ValueError), open(path, "w") as fh:
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


def _config_of(task: Task) -> dict[str, Any]:
    """A create config for a run recorded before configs were kept (its task carries the same fields)."""
    cs = task.spec.container
    return {
        "Image": cs.image,
        "Entrypoint": list(cs.command) or None,
        "Cmd": list(cs.args) or None,
        "Env": list(cs.env),
        "WorkingDir": cs.dir,
        "User": cs.user,
        "Hostname": cs.hostname,
        "Labels": dict(cs.labels),
    }
