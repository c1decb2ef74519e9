"""The executor over a real Docker engine (a VM lab with Docker installed), through the docker SDK.

Same contract as the process executor:

* `create` makes the container with the labels dockerd puts on swarm task containers and the task as
  JSON (``com.labctl.task``) so a restarted agent can adopt it. There is no registry: images come from
  ``docker load``/``docker import``; a missing one is REJECTED with the engine's own "No such image" text.
* Network: the engine's default network when it has a ``bridge`` network; on an engine started with
  ``--bridge=none`` tasks get ``--network none`` (loopback only). Never ``host``: a task could then
  take the node's own ports (2377, 2379, the agent's socket).
* Secrets: written into a per-task tmpfs on the node before the container exists and bind-mounted
  read-only at /run/secrets (`secretfs`): never on the node's disk, and present before the task's
  first instruction. Docker's own secret store is swarm-mode only.
* Exits and logs are long-lived requests, so they go through aiohttp on the engine's socket (one
  coroutine per running container, cancellable) instead of SDK calls parked in threads: the loop's
  default thread pool has ``cpu + 4`` workers and would be exhausted by a handful of running tasks.
  Short calls (create/start/kill/remove/inspect) are SDK calls in that pool.

The SDK is imported lazily: it is not among the node agent's required packages.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import os
import struct
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from agents.state.objects import SECOND, Task
from agents.worker.executor import secretfs
from agents.worker.executor.base import Container, SecretFile, StartFailed, TaskRejected
from agents.worker.executor.logs import LogEntry, rfc3339_nano
from agents.worker.views import container_name, labels

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
TASK_LABEL = "com.docker.swarm.task.id"
SPEC_LABEL = "com.labctl.task"
"""The task as JSON, for adoption by a restarted agent (only containers carrying it are ours)."""
PROBE_API = "1.24"
"""The oldest API the SDK speaks: enough to read ``/version`` from any engine."""
_STREAMS = {1: "stdout", 2: "stderr"}


def engine_reachable(base_url: str = DEFAULT_ENGINE, timeout: float = 3.0) -> str | None:
    """None if a Docker engine (not a labagent) answers at ``base_url``, else why not (skips, logs)."""
    try:
        import docker
    except ImportError:
        return "the docker SDK (Python package 'docker') is not installed"
    if base_url.startswith("unix://") and not os.path.exists(base_url.removeprefix("unix://")):
        return f"no Docker engine at {base_url}: no such socket"
    try:
        api = docker.APIClient(base_url=base_url, timeout=timeout, version=PROBE_API)
        try:
            ver = api.version(api_version=False)
        finally:
            api.close()
    except Exception as e:
        return f"no Docker engine at {base_url}: {type(e).__name__}: {e}"
    names = {str(c.get("Name", "")).lower() for c in ver.get("Components") or [] if isinstance(c, dict)}
    if "labagent" in names or "labctl" in str(ver.get("Platform", {}).get("Name", "")).lower():
        return f"{base_url} is a labagent (this project's node agent), not a Docker engine"
    return None


class Choice(NamedTuple):
    kind: str
    """``process`` or ``docker``."""
    engine: str
    """The engine's address when ``kind`` is ``docker``."""
    reason: str


def choose_executor(environ: Mapping[str, str], probe: Any = engine_reachable) -> Choice:
    """Which executor this node runs tasks with.

    ``LABAGENT_EXECUTOR``: ``process`` or ``docker`` force one; ``auto`` (the default) takes the engine
    at ``LABAGENT_DOCKER_HOST`` when one answers there. Only an address given explicitly is probed:
    on every lab node ``/var/run/docker.sock`` is the agent's own socket, so an engine on a node
    listens elsewhere, and probing our own socket from the event loop would stall it."""
    mode = environ.get("LABAGENT_EXECUTOR", "auto") or "auto"
    engine = environ.get("LABAGENT_DOCKER_HOST", "")
    if mode == "process":
        return Choice("process", "", "LABAGENT_EXECUTOR=process")
    if mode == "docker":
        return Choice("docker", engine or DEFAULT_ENGINE, "LABAGENT_EXECUTOR=docker")
    if mode != "auto":
        raise ValueError(f"invalid LABAGENT_EXECUTOR {mode!r}: use process, docker or auto")
    if not engine:
        return Choice("process", "", "no Docker engine configured (LABAGENT_DOCKER_HOST is not set)")
    why = probe(engine)
    if why is None:
        return Choice("docker", engine, f"a Docker engine answers at {engine}")
    return Choice("process", "", why)


class DockerExecutor:
    name = "docker"

    def __init__(self, base_url: str = DEFAULT_ENGINE, state_dir: str = "/var/lib/docker") -> None:
        import docker
        import requests

        self._errors = docker.errors
        self._unreachable = (requests.exceptions.RequestException, docker.errors.DockerException)
        self.base_url = base_url
        self.client = docker.DockerClient(base_url=base_url, timeout=60)
        self.api = self.client.api
        self.secrets_dir = os.path.join(state_dir, "docker-executor", "secrets")
        self._http_root, self._connector = _http_endpoint(base_url)
        self._session: Any = None
        self._network_mode: str | bool | None = False
        """None = the engine's default network, "none" = no bridge on the engine; False = not asked yet."""
        self._watches: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------------------------ lifecycle

    async def create(self, task: Task, secrets: list[SecretFile]) -> Container:
        cs = task.spec.container
        c = Container(id="", task=task, image=cs.image, argv=[*cs.command, *cs.args], created=time.time())
        host: dict[str, Any] = {}
        try:
            mode = await self._default_network_mode()
        except self._unreachable as e:
            raise TaskRejected(f"the Docker engine at {self.base_url} did not answer: {_explain(e)}") from None
        if mode is not None:
            host["network_mode"] = mode
        src = self._secrets_path(task.id)
        if secrets:
            try:
                await asyncio.to_thread(secretfs.mount, src, secrets)
            except (OSError, ValueError) as e:
                raise TaskRejected(f"secrets for the task could not be prepared: {e}") from None
            host["mounts"] = [{"Type": "bind", "Source": src, "Target": "/run/secrets", "ReadOnly": True}]
        try:
            made = await asyncio.to_thread(self._create, c, host)
        except self._unreachable as e:  # the engine's refusal (APIError: its own text) or no engine
            if secrets:
                await asyncio.to_thread(secretfs.unmount, src)
            raise TaskRejected(_explain(e)) from None
        c.id = made["Id"]
        c.hostname = cs.hostname or c.id[:12]
        return c

    def _create(self, c: Container, host: dict[str, Any]) -> dict[str, Any]:
        """``POST /containers/create`` (in a worker thread): what dockerd's swarm executor would ask for."""
        task, cs = c.task, c.task.spec.container
        lim = task.spec.resources.limits
        if lim.memory_bytes:
            host["mem_limit"] = lim.memory_bytes
        if lim.nano_cpus:
            host["nano_cpus"] = lim.nano_cpus
        if task.spec.log_driver is not None and task.spec.log_driver.name:
            host["log_config"] = {"Type": task.spec.log_driver.name, "Config": dict(task.spec.log_driver.options)}
        made: dict[str, Any] = self.api.create_container(
            image=cs.image,
            command=cs.args or None,
            entrypoint=cs.command or None,
            environment=list(cs.env),
            hostname=cs.hostname or None,
            working_dir=cs.dir or None,
            user=cs.user or None,
            labels={**labels(c), SPEC_LABEL: json.dumps(task.to_dict(), separators=(",", ":"))},
            name=container_name(c),
            stop_signal=cs.stop_signal or None,
            stop_timeout=max(0, int(cs.stop_grace_period / SECOND)) if cs.stop_grace_period else None,
            host_config=self.api.create_host_config(**host),
        )
        return made

    async def _default_network_mode(self) -> str | None:
        if self._network_mode is False:
            nets = await asyncio.to_thread(self.api.networks, names=["bridge"])
            self._network_mode = None if any(n.get("Name") == "bridge" for n in nets) else "none"
        return self._network_mode if isinstance(self._network_mode, str) else None

    async def start(self, c: Container) -> None:
        try:
            await asyncio.to_thread(self.api.start, c.id)
        except self._errors.APIError as e:
            code = 128
            with contextlib.suppress(Exception):
                code = int((await asyncio.to_thread(self.api.inspect_container, c.id))["State"]["ExitCode"]) or 128
            c.state, c.exit_code, c.finished_at = "exited", code, time.time()
            c.exited.set()
            raise StartFailed(f"starting container failed: {_explain(e)}") from None
        c.state, c.started_at = "running", time.time()
        self._watch(c)
        try:
            info = await asyncio.to_thread(self.api.inspect_container, c.id)
        except self._errors.APIError:
            return  # removed already: the watch reports the exit
        c.pid = int(info["State"].get("Pid") or 0)
        c.started_at = _epoch(info["State"].get("StartedAt", "")) or c.started_at
        c.addresses = _addresses(info)
        c.argv = _argv(info) or c.argv

    def _watch(self, c: Container) -> None:
        self._watches[c.id] = asyncio.get_running_loop().create_task(self._wait_exit(c), name=f"docker-wait-{c.short_id}")

    async def _wait_exit(self, c: Container) -> None:
        code = await self._engine_wait(c.id)
        self._watches.pop(c.id, None)
        c.state, c.exit_code, c.finished_at = "exited", 137 if code is None else code, time.time()
        c.exited.set()

    async def _engine_wait(self, cid: str) -> int | None:
        """The exit code once the container stops; None if it was removed first. Rides out engine restarts."""
        import aiohttp

        url = self._url(f"/containers/{cid}/wait")
        while True:
            try:
                async with self._http().post(url, params={"condition": "not-running"}) as r:
                    if r.status == 404:
                        return None
                    body = await r.json(content_type=None)
                    if r.status < 300:
                        return int(body.get("StatusCode", 137))
            except (aiohttp.ClientError, OSError, ValueError):
                pass
            await asyncio.sleep(1.0)  # engine restarting or refusing: ask again

    async def signal(self, c: Container, sig: int) -> None:
        if c.state != "running":
            raise ProcessLookupError(c.id)
        try:
            await asyncio.to_thread(self.api.kill, c.id, sig)
        except self._errors.APIError as e:
            raise ProcessLookupError(_explain(e)) from None

    async def remove(self, c: Container) -> None:
        """Force-remove the container (a running one is killed: exit 137), then free its secrets."""
        if c.id:
            try:
                await asyncio.to_thread(self.api.remove_container, c.id, force=True)
            except self._errors.NotFound:
                pass
            except self._errors.APIError as e:
                if "already in progress" not in _explain(e):
                    raise
            if c.state == "running":
                if c.id in self._watches:
                    await c.exited.wait()
                else:  # not watched (this executor was closed): the removal killed it
                    c.state, c.exit_code, c.finished_at = "exited", 137, time.time()
                    c.exited.set()
        await asyncio.to_thread(secretfs.unmount, self._secrets_path(c.task.id))

    # ---------------------------------------------------------------------------------- re-adoption

    async def restore(self) -> list[Container]:
        """This executor's containers already on the engine (it keeps them across agent restarts).

        Running ones are adopted and watched, stopped ones returned as exited. One still ``created``
        (the agent died while starting it) is removed: the task is below RUNNING for the manager, so
        the worker starts it afresh. Secret mounts without a container are freed."""
        out = []
        found = await asyncio.to_thread(self.api.containers, all=True, filters={"label": SPEC_LABEL})
        for item in found:
            try:
                info = await asyncio.to_thread(self.api.inspect_container, item["Id"])
                task = Task.from_dict(json.loads(info["Config"]["Labels"][SPEC_LABEL]))
            except self._errors.NotFound:
                continue
            except (ValueError, TypeError, KeyError):
                continue  # not a task container this agent can read: leave it alone
            st = info["State"]
            c = Container(
                id=info["Id"],
                task=task,
                image=info["Config"].get("Image", ""),
                argv=_argv(info),
                created=_epoch(info.get("Created", "")) or time.time(),
                pid=int(st.get("Pid") or 0),
                started_at=_epoch(st.get("StartedAt", "")),
                finished_at=_epoch(st.get("FinishedAt", "")),
                addresses=_addresses(info),
                hostname=info["Config"].get("Hostname", ""),
                error=st.get("Error", ""),
                adopted=True,
            )
            if st.get("Status") == "created":
                await self.remove(c)
                continue
            if st.get("Running"):
                c.state = "running"
                self._watch(c)
            else:
                c.state, c.exit_code = "exited", int(st.get("ExitCode") or 0)
                c.exited.set()
            out.append(c)
        await asyncio.to_thread(self._free_orphan_secrets, {c.task.id for c in out})
        return out

    def _free_orphan_secrets(self, keep: set[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.secrets_dir):
                if name not in keep:
                    secretfs.unmount(os.path.join(self.secrets_dir, name))

    # ------------------------------------------------------------------------------------------ logs

    def logs(
        self,
        c: Container,
        *,
        follow: bool = False,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
        stdout: bool = True,
        stderr: bool = True,
    ) -> AsyncIterator[LogEntry]:
        """The engine's logs of the container, both streams in their order (following ends at exit)."""
        params = {
            "stdout": "1" if stdout else "0",
            "stderr": "1" if stderr else "0",
            "timestamps": "1",
            "follow": "1" if follow and until is None else "0",
            "tail": "all" if tail is None else str(max(0, tail)),
        }
        if since:
            params["since"] = f"{since:.9f}"
        if until:
            params["until"] = f"{until:.9f}"
        return self._log_entries(self._url(f"/containers/{c.id}/logs"), params)

    async def _log_entries(self, url: str, params: dict[str, str]) -> AsyncIterator[LogEntry]:
        import aiohttp

        if params["stdout"] == params["stderr"] == "0":
            return
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._http().get(url, params=params, timeout=timeout) as r:
            if r.status >= 300:
                return  # the container is gone: no logs
            while True:
                try:
                    head = await r.content.readexactly(8)
                    kind, size = head[0], struct.unpack(">I", head[4:])[0]
                    payload = await r.content.readexactly(size)
                except asyncio.IncompleteReadError:
                    return
                stream = _STREAMS.get(kind)
                if stream is None:
                    continue
                ts, sep, data = payload.partition(b" ")
                if not sep:
                    ts, data = b"", payload
                yield LogEntry(stream, ts.decode("ascii", "replace") or rfc3339_nano(time.time_ns()), data)

    # ------------------------------------------------------------------------------------ plumbing

    async def close(self) -> None:
        """Stop watching (containers keep running: the next agent adopts them)."""
        watches, self._watches = list(self._watches.values()), {}
        for t in watches:
            t.cancel()
        for t in watches:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.to_thread(self.client.close)

    def _http(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=self._connector(), timeout=aiohttp.ClientTimeout(total=None, connect=10)
            )
        return self._session

    def _url(self, path: str) -> str:
        return f"{self._http_root}/v{self.api.api_version}{path}"

    def _secrets_path(self, task_id: str) -> str:
        return os.path.join(self.secrets_dir, task_id)


def _http_endpoint(base_url: str) -> tuple[str, Any]:
    """``unix:///run/x.sock`` or ``tcp://host:port`` -> (HTTP root, aiohttp connector factory)."""
    import aiohttp

    if base_url.startswith("unix://"):
        path = base_url.removeprefix("unix://")
        return "http://docker", lambda: aiohttp.UnixConnector(path=path)
    if base_url.startswith(("tcp://", "http://")):
        return "http://" + base_url.split("://", 1)[1].rstrip("/"), aiohttp.TCPConnector
    raise ValueError(f"unsupported Docker engine address {base_url!r}: use unix:// or tcp://")


def _explain(e: Any) -> str:
    return str(getattr(e, "explanation", None) or e)


def _addresses(info: dict[str, Any]) -> list[str]:
    nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
    return [f"{n['IPAddress']}/{n.get('IPPrefixLen', 0)}" for n in nets.values() if n.get("IPAddress")]


def _argv(info: dict[str, Any]) -> list[str]:
    """What the container runs (the image's entrypoint/cmd resolved by the engine)."""
    return [info["Path"], *(info.get("Args") or [])] if info.get("Path") else []


def _epoch(ts: str) -> float:
    """Docker's ``2024-06-01T12:00:00.123456789Z`` -> epoch seconds; its zero time -> 0.0."""
    if not ts or ts.startswith("0001-"):
        return 0.0
    base, _, frac = ts.rstrip("Z").partition(".")
    try:
        secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return 0.0
    digits = "".join(ch for ch in frac if ch.isdigit())
    return secs + (int(digits) / 10 ** len(digits) if digits else 0.0)
