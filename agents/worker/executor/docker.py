"""The executor over a real Docker engine (a VM lab with Docker installed), through the docker SDK.

Same contract as the process executor:

* `create` makes the container with the labels dockerd puts on swarm task containers and the task as
  JSON (``com.labctl.task``) so a restarted agent can adopt it. There is no registry: images come from
  ``docker load``/``docker import``; a missing one is REJECTED with the engine's own "No such image" text.
  A tag pinned to a digest (``busybox:latest@sha256:...``, as `docker service create` sends it, from the
  agent's catalog) falls back to the engine's own copy of the tag, since no registry served it that digest.
* Network: ``--network none``, then, once the container runs, its namespace is wired from outside
  exactly as a process task's (`dockernet`): ``eth0`` on the node's bridge of each network the manager
  allocated an address on (else on the node-private ``tasks0`` subnet), the overlay MTU, the default route
  via the node, and the mesh's resolv.conf bind-mounted at /etc/resolv.conf. So VIPs, DNS and the
  published ports of the routing mesh (ours, on nftables) reach docker tasks as they reach process tasks;
  the engine's own bridge, iptables and port mapping stay out of the way (VM labs run dockerd with
  ``--bridge=none --iptables=false``). Never ``host``: a task could then take the node's own ports. The
  one difference: the engine starts the program before the agent can wire it, so its first few
  milliseconds see only loopback (`start` returns, and the task is RUNNING, once it is wired).
* Secrets: written into a per-task tmpfs on the node before the container exists and bind-mounted
  read-only at /run/secrets (`secretfs`): never on the node's disk, and present before the task's
  first instruction. Docker's own secret store is swarm-mode only.
* Exits and logs are long-lived requests, so they go through aiohttp on the engine's socket (one
  coroutine per running container, cancellable) instead of SDK calls parked in threads: the loop's
  default thread pool has ``cpu + 4`` workers and would be exhausted by a handful of running tasks.
  Short calls (create/start/kill/remove/inspect) are SDK calls in that pool.

The SDK is imported lazily: it is not among the node agent's required packages. Its client is pinned to
API 1.41 (Docker 20.10+), so it is made without asking an engine that may still be starting with the node;
`restore` waits for the engine (tasks are adopted before any starts), `create` rejects while it is down.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import functools
import json
import logging
import os
import struct
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from agents.state.objects import SECOND, Task
from agents.worker.executor import dockernet, secretfs
from agents.worker.executor.base import Container, LogQuery, SecretFile, StartFailed, TaskRejected
from agents.worker.executor.logs import LogEntry, rfc3339_nano
from agents.worker.executor.netns import (
    FALLBACK_BRIDGE,
    FALLBACK_SUBNET,
    Attachment,
    NetworkError,
    TaskNetworking,
    attachment_for,
)
from agents.worker.executor.rtnetlink import NetlinkError
from agents.worker.views import container_name, labels

DEFAULT_ENGINE = "unix:///var/run/docker.sock"
TASK_LABEL = "com.docker.swarm.task.id"
SPEC_LABEL = "com.labctl.task"
"""The task as JSON, for adoption by a restarted agent (only containers carrying it are ours)."""
NETWORK_LABEL = "com.labctl.attachments"
"""The task's interfaces as JSON ``[[bridge, address, gateway], ...]``: the engine knows nothing of them."""
PROBE_API = "1.24"
"""The oldest API the SDK speaks: enough to read ``/version`` from any engine."""
API_VERSION = "1.41"
"""Docker 20.10's API, which every engine since accepts: fixed, so the client is made without asking an
engine that may still be starting with the node (the SDK's "auto" would fail the worker for good)."""
_STREAMS = {1: "stdout", 2: "stderr"}
log = logging.getLogger(__name__)


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
    """See the module docstring. ``node_netns``: the namespace holding the node's task bridges (None: the
    agent's own, as on a VM; the tests' engine has a namespace of its own)."""

    name = "docker"

    def __init__(
        self,
        base_url: str = DEFAULT_ENGINE,
        state_dir: str = "/var/lib/docker",
        *,
        node_netns: str | None = None,
        fallback_subnet: str = FALLBACK_SUBNET,
        fallback_bridge: str = FALLBACK_BRIDGE,
    ) -> None:
        import docker
        import requests

        self._errors = docker.errors
        self._unreachable = (requests.exceptions.RequestException, docker.errors.DockerException)
        self.base_url = base_url
        self.client = docker.DockerClient(base_url=base_url, timeout=60, version=API_VERSION)
        self.api = self.client.api
        self.secrets_dir = os.path.join(state_dir, "docker-executor", "secrets")
        self.resolv_dir = os.path.join(state_dir, "docker-executor", "resolv")
        self.net = TaskNetworking(node_netns, fallback_subnet, fallback_bridge)
        """Also the routing mesh's hook for DNS (``net.resolv_conf``), set by the swarm node."""
        self._live: dict[str, Container] = {}
        """This executor's containers by task id (their addresses are taken)."""
        self._claims: dict[str, list[str]] = {}
        """Addresses of tasks being created (before the engine returned an id), by task id."""
        self._http_root, self._connector = _http_endpoint(base_url)
        self._session: Any = None
        self._watches: dict[str, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------------------------ lifecycle

    async def create(self, task: Task, secrets: list[SecretFile]) -> Container:
        cs = task.spec.container
        c = Container(id="", task=task, image=cs.image, argv=[*cs.command, *cs.args], created=time.time())
        try:
            atts = self._attachments(task)
        except NetworkError as e:
            raise TaskRejected(f"network setup failed: {e}") from None
        c.addresses = [a.address for a in atts]
        self._claims[task.id] = c.addresses  # before any await: concurrent creates see them as taken
        try:
            made = await self._create_container(c, atts, secrets)
        finally:
            self._claims.pop(task.id, None)
        c.id = made["Id"]
        c.hostname = cs.hostname or c.id[:12]
        self._live[task.id] = c
        return c

    def _attachments(self, task: Task) -> list[Attachment]:
        """The process executor's rule: the manager's address on each network, else a node-private one."""
        atts = [attachment_for(n.network_id, a) for n in task.networks for a in n.addresses[:1] if n.network_id]
        return atts or [self.net.fallback_attachment(self._used_addresses())]

    def _used_addresses(self) -> set[str]:
        live = [a for c in self._live.values() if c.state != "exited" for a in c.addresses]
        return {a.partition("/")[0] for a in [*live, *(a for v in self._claims.values() for a in v)]}

    async def _create_container(
        self, c: Container, atts: list[Attachment], secrets: list[SecretFile]
    ) -> dict[str, Any]:
        task = c.task
        host: dict[str, Any] = {"network_mode": "none", "mounts": []}
        src = self._secrets_path(task.id)
        if secrets:
            try:
                await asyncio.to_thread(secretfs.mount, src, secrets)
            except (OSError, ValueError) as e:
                raise TaskRejected(f"secrets for the task could not be prepared: {e}") from None
            host["mounts"].append({"Type": "bind", "Source": src, "Target": "/run/secrets", "ReadOnly": True})
        resolv = self.net.resolv_text(atts)
        if resolv:
            path = self._resolv_path(task.id)
            await asyncio.to_thread(_write_file, path, resolv)
            host["mounts"].append({"Type": "bind", "Source": path, "Target": "/etc/resolv.conf", "ReadOnly": True})
        labels_extra = {NETWORK_LABEL: json.dumps([[a.bridge, a.address, a.gateway] for a in atts])}
        try:
            made: dict[str, Any] = await asyncio.to_thread(self._create, c, host, labels_extra)
        except self._unreachable as e:
            await asyncio.to_thread(self._free_files, task.id)
            if isinstance(e, self._errors.APIError):  # the engine's refusal, in its own words
                raise TaskRejected(_explain(e)) from None
            raise TaskRejected(f"the Docker engine at {self.base_url} did not answer: {_explain(e)}") from None
        return made

    def _create(self, c: Container, host: dict[str, Any], extra_labels: dict[str, str]) -> dict[str, Any]:
        """``POST /containers/create`` (in a worker thread): what dockerd's swarm executor would ask for."""
        task, cs = c.task, c.task.spec.container
        lim = task.spec.resources.limits
        if lim.memory_bytes:
            host["mem_limit"] = lim.memory_bytes
        if lim.nano_cpus:
            host["nano_cpus"] = lim.nano_cpus
        if task.spec.log_driver is not None and task.spec.log_driver.name:
            host["log_config"] = {"Type": task.spec.log_driver.name, "Config": dict(task.spec.log_driver.options)}
        create = functools.partial(
            self.api.create_container,
            command=cs.args or None,
            entrypoint=cs.command or None,
            environment=list(cs.env),
            hostname=cs.hostname or None,
            working_dir=cs.dir or None,
            user=cs.user or None,
            labels={**labels(c), SPEC_LABEL: json.dumps(task.to_dict(), separators=(",", ":")), **extra_labels},
            name=container_name(c),
            stop_signal=cs.stop_signal or None,
            stop_timeout=max(0, int(cs.stop_grace_period / SECOND)) if cs.stop_grace_period else None,
            host_config=self.api.create_host_config(**host),
        )
        try:
            made: dict[str, Any] = create(image=cs.image)
            return made
        except self._errors.ImageNotFound as e:
            missing = e
        local = _tagged_without_digest(cs.image)
        if local is None:
            raise missing
        try:  # the CLI pinned the tag to a digest no registry served to this engine: its own copy of the tag
            made = create(image=local)
        except self._errors.ImageNotFound:
            raise missing from None
        return made

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
        c.argv = _argv(info) or c.argv
        await self._wire(c, info)

    async def _wire(self, c: Container, info: dict[str, Any]) -> None:
        """Give the running container its interfaces; a container that exited meanwhile needs none.
        On failure the container is killed: a task without its network must not run as if it had one."""
        atts = _attachments_of(info)
        if not atts or not info["State"].get("Running"):
            return
        try:
            for att in atts:
                await self.net.ensure_bridge(att)
            netns = await asyncio.to_thread(dockernet.task_netns, c.pid, c.id)
            if netns is None:
                return  # the program exited already (its namespace is gone): the watch reports it
            await asyncio.to_thread(dockernet.wire, self.net.node_netns, netns, self.net.wiring(c.id, atts))
        except (NetworkError, OSError) as e:
            if await asyncio.to_thread(dockernet.task_netns, c.pid, c.id) is None:
                return  # it exited while being wired (its namespace went away): not a wiring failure
            with contextlib.suppress(self._errors.APIError):
                await asyncio.to_thread(self.api.kill, c.id, "SIGKILL")
            await c.exited.wait()
            why = e.strerror if isinstance(e, NetlinkError) else str(e)
            raise StartFailed(f"network setup failed: {why}") from None

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
        """Force-remove the container (a running one is killed: exit 137), then free its secrets and resolv.conf."""
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
        if self._live.get(c.task.id) is c:
            del self._live[c.task.id]
        await asyncio.to_thread(self._free_files, c.task.id)

    # ---------------------------------------------------------------------------------- re-adoption

    async def prewarm(self) -> None:
        """Nothing to do: the engine is already running."""

    async def restore(self) -> list[Container]:
        """This executor's containers already on the engine (it keeps them across agent restarts).

        Running ones are adopted and watched, stopped ones returned as exited. One still ``created``
        (the agent died while starting it) is removed: the task is below RUNNING for the manager, so
        the worker starts it afresh. Secret mounts without a container are freed."""
        out = []
        found = await self._our_containers()
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
                addresses=[a.address for a in _attachments_of(info)],
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
            self._live[task.id] = c
            out.append(c)
        await asyncio.to_thread(self._free_orphan_files, {c.task.id for c in out})
        return out

    async def _our_containers(self) -> list[dict[str, Any]]:
        """This executor's containers on the engine, waiting for an engine that does not answer yet (it
        starts with the node): tasks must be adopted before any is started, or they would be duplicated."""
        waited = False
        while True:
            try:
                found: list[dict[str, Any]] = await asyncio.to_thread(
                    self.api.containers, all=True, filters={"label": SPEC_LABEL})
                if waited:
                    log.info("the Docker engine at %s answers", self.base_url)
                return found
            except self._errors.APIError:
                raise
            except self._unreachable as e:
                if not waited:
                    log.warning("the Docker engine at %s does not answer (%s): no task is adopted or started "
                                "until it does", self.base_url, _explain(e))
                    waited = True
            await asyncio.sleep(1.0)

    def _free_files(self, task_id: str) -> None:
        """The task's secrets tmpfs and resolv.conf on the node (blocking)."""
        secretfs.unmount(self._secrets_path(task_id))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._resolv_path(task_id))

    def _free_orphan_files(self, keep: set[str]) -> None:
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.secrets_dir):
                if name not in keep:
                    secretfs.unmount(os.path.join(self.secrets_dir, name))
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.resolv_dir):
                if name.split(".", 1)[0] not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.resolv_dir, name))

    # ------------------------------------------------------------------------------------------ logs

    def logs(self, c: Container, query: LogQuery = LogQuery()) -> AsyncIterator[LogEntry]:
        """The engine's logs of the container, both streams in their order (following ends at exit)."""
        params = {
            "stdout": "1" if query.stdout else "0",
            "stderr": "1" if query.stderr else "0",
            "timestamps": "1",
            "follow": "1" if query.follow and query.until is None else "0",
            "tail": "all" if query.tail is None else str(max(0, query.tail)),
        }
        if query.since:
            params["since"] = f"{query.since:.9f}"
        if query.until:
            params["until"] = f"{query.until:.9f}"
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

    def _resolv_path(self, task_id: str) -> str:
        return os.path.join(self.resolv_dir, f"{task_id}.conf")


def _http_endpoint(base_url: str) -> tuple[str, Any]:
    """``unix:///run/x.sock`` or ``tcp://host:port`` -> (HTTP root, aiohttp connector factory)."""
    import aiohttp

    if base_url.startswith("unix://"):
        path = base_url.removeprefix("unix://")
        return "http://docker", lambda: aiohttp.UnixConnector(path=path)
    if base_url.startswith(("tcp://", "http://")):
        return "http://" + base_url.split("://", 1)[1].rstrip("/"), aiohttp.TCPConnector
    raise ValueError(f"unsupported Docker engine address {base_url!r}: use unix:// or tcp://")


def _tagged_without_digest(image: str) -> str | None:
    """``name:tag@sha256:...`` -> ``name:tag``; None without a digest or without a tag.

    `docker service create` pins the tag to the digest the manager's /distribution answered (the agent's
    offline catalog), which names no image an engine without a registry has: its images were loaded or
    imported under their tags. A reference with a digest but no tag is left alone."""
    name, at, _digest = image.partition("@")
    if not at or ":" not in name.rsplit("/", 1)[-1]:
        return None
    return name


def _explain(e: Any) -> str:
    return str(getattr(e, "explanation", None) or e)


def _attachments_of(info: dict[str, Any]) -> list[Attachment]:
    """The interfaces recorded on the container at create (`NETWORK_LABEL`); [] for anything unreadable."""
    try:
        raw = json.loads(((info.get("Config") or {}).get("Labels") or {}).get(NETWORK_LABEL) or "[]")
        return [Attachment(str(b), str(a), str(g)) for b, a, g in raw]
    except (ValueError, TypeError):
        return []


def _write_file(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


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
