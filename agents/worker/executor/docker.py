"""The executor over a real Docker engine (a VM lab with Docker installed), through the docker SDK.

Same contract as the process executor: `create` resolves the image locally (there is no registry:
images come from ``docker load``/``docker import``; a missing one is REJECTED with the engine's
"No such image" text), `start` runs the container, exits are noticed by a ``wait`` in a thread, logs
come from the engine. Secrets are mounted as a tmpfs at /run/secrets and written from memory through
``put_archive`` before the container starts (Docker's own secret store is swarm-mode only), so they
never touch the node's disk. Containers carry the swarm labels so ``docker ps`` on the node shows them
as dockerd would. The SDK is imported lazily: it is not a dependency of the node agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tarfile
import time
from collections.abc import AsyncIterator
from typing import Any

from agents.state.objects import Task
from agents.worker.executor.base import Container, SecretFile, StartFailed, TaskRejected
from agents.worker.executor.logs import LogEntry, rfc3339_nano
from agents.worker.views import labels

LABEL = "com.docker.swarm.task.id"


def engine_reachable(base_url: str = "unix:///var/run/docker.sock") -> str | None:
    """None if a Docker engine answers at ``base_url``, else why not (for skips and logs)."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed"
    try:
        client = docker.DockerClient(base_url=base_url, timeout=3)
        client.ping()
        if "labctl" in str(client.version().get("Components", "")).lower():
            return f"{base_url} is a labagent, not a Docker engine"
        client.close()
    except Exception as e:
        return f"no Docker engine at {base_url}: {type(e).__name__}"
    return None


class DockerExecutor:
    name = "docker"

    def __init__(self, base_url: str = "unix:///var/run/docker.sock") -> None:
        import docker

        self._docker = docker
        self.client = docker.DockerClient(base_url=base_url, timeout=60)
        self._objs: dict[str, Any] = {}
        self._secrets: dict[str, list[SecretFile]] = {}

    async def create(self, task: Task, secrets: list[SecretFile]) -> Container:
        cs = task.spec.container
        c = Container(id="", task=task, image=cs.image, argv=[*cs.command, *cs.args], created=time.time())
        try:
            await asyncio.to_thread(self.client.images.get, cs.image)
        except self._docker.errors.ImageNotFound:
            raise TaskRejected(f"No such image: {_with_tag(cs.image)}") from None
        lim = task.spec.resources.limits
        kwargs: dict[str, Any] = {
            "image": cs.image,
            "command": cs.args or None,
            "entrypoint": cs.command or None,
            "environment": cs.env,
            "hostname": cs.hostname or None,
            "working_dir": cs.dir or None,
            "user": cs.user or None,
            "labels": {**labels(c), LABEL: task.id, "com.labctl.task": json.dumps(task.to_dict())},
            "name": task.annotations.name or None,
            "stop_signal": cs.stop_signal or None,
            "detach": True,
        }
        if secrets:
            kwargs["tmpfs"] = {"/run/secrets": "mode=0755"}
        if lim.memory_bytes:
            kwargs["mem_limit"] = lim.memory_bytes
        if lim.nano_cpus:
            kwargs["nano_cpus"] = lim.nano_cpus
        try:
            obj = await asyncio.to_thread(self.client.containers.create, **kwargs)
        except self._docker.errors.APIError as e:
            raise TaskRejected(str(e.explanation or e)) from None
        c.id = obj.id
        if not cs.hostname:
            c.hostname = obj.id[:12]
        self._objs[c.id] = obj
        self._secrets[c.id] = secrets
        return c

    async def start(self, c: Container) -> None:
        obj = self._objs[c.id]
        secrets = self._secrets.pop(c.id, [])
        try:
            await asyncio.to_thread(obj.start)
            if secrets:  # the tmpfs exists once the container runs; write the files from memory
                await asyncio.to_thread(obj.put_archive, "/run/secrets", _tar(secrets))
            await asyncio.to_thread(obj.reload)
        except self._docker.errors.APIError as e:
            c.state, c.exit_code, c.finished_at = "exited", 128, time.time()
            c.exited.set()
            raise StartFailed(f"starting container failed: {e.explanation or e}") from None
        c.pid = int(obj.attrs["State"].get("Pid") or 0)
        c.state, c.started_at = "running", time.time()
        c.addresses = [
            f"{n['IPAddress']}/{n['IPPrefixLen']}"
            for n in (obj.attrs.get("NetworkSettings", {}).get("Networks") or {}).values()
            if n.get("IPAddress")
        ]
        asyncio.get_running_loop().create_task(self._wait(c, obj))

    async def _wait(self, c: Container, obj: Any) -> None:
        try:
            res = await asyncio.to_thread(obj.wait)
            code = int(res.get("StatusCode", 137))
        except Exception:
            code = 137
        c.state, c.exit_code, c.finished_at = "exited", code, time.time()
        c.exited.set()

    async def signal(self, c: Container, sig: int) -> None:
        if c.state != "running":
            raise ProcessLookupError(c.id)
        try:
            await asyncio.to_thread(self._objs[c.id].kill, sig)
        except self._docker.errors.APIError as e:
            raise ProcessLookupError(str(e)) from None

    async def remove(self, c: Container) -> None:
        obj = self._objs.pop(c.id, None)
        if obj is not None:
            with contextlib.suppress(self._docker.errors.NotFound):
                await asyncio.to_thread(obj.remove, force=True)
            if c.state == "running":
                await c.exited.wait()

    async def restore(self) -> list[Container]:
        """Task containers the engine already has (the engine keeps them running across agent restarts)."""
        out = []
        found = await asyncio.to_thread(self.client.containers.list, all=True, filters={"label": LABEL})
        for obj in found:
            task_dict = None
            with contextlib.suppress(Exception):
                task_dict = json.loads(obj.labels.get("com.labctl.task", "null"))
            if task_dict is None:
                continue
            c = Container(id=obj.id, task=Task.from_dict(task_dict), image=obj.attrs["Config"]["Image"],
                          argv=list(obj.attrs["Config"].get("Cmd") or []), created=time.time(), adopted=True)
            self._objs[c.id] = obj
            if obj.status == "running":
                c.state, c.pid, c.started_at = "running", int(obj.attrs["State"]["Pid"]), time.time()
                asyncio.get_running_loop().create_task(self._wait(c, obj))
            else:
                c.state, c.exit_code = "exited", int(obj.attrs["State"]["ExitCode"])
                c.exited.set()
            out.append(c)
        return out

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
        obj = self._objs[c.id]

        async def gen() -> AsyncIterator[LogEntry]:
            for stream, on in (("stdout", stdout), ("stderr", stderr)):
                if not on:
                    continue
                kw: dict[str, Any] = {"stdout": stream == "stdout", "stderr": stream == "stderr",
                                      "timestamps": True, "tail": "all" if tail is None else tail}
                if since:
                    kw["since"] = since
                if until:
                    kw["until"] = until
                raw = await asyncio.to_thread(obj.logs, **kw)
                for line in raw.splitlines(keepends=True):
                    ts, _, data = line.partition(b" ")
                    yield LogEntry(stream, ts.decode() or rfc3339_nano(time.time_ns()), data)

        return gen()

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)


def _with_tag(ref: str) -> str:
    last = ref.rsplit("/", 1)[-1]
    return ref if (":" in last or "@" in ref) else f"{ref}:latest"


def _tar(secrets: list[SecretFile]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for s in secrets:
            info = tarfile.TarInfo(s.name)
            info.size, info.mode, info.uid, info.gid = len(s.data), s.mode, s.uid, s.gid
            tar.addfile(info, io.BytesIO(s.data))
    return buf.getvalue()
