"""``docker exec``: ``POST /containers/{id}/exec``, ``POST /exec/{id}/start``, ``/exec/{id}/resize``,
``GET /exec/{id}/json``.

An exec instance is created for a running container of this node (a swarm task's or a standalone one,
found like every container endpoint finds them), then started once: detached (``docker exec -d``:
200, output discarded) or attached over a hijacked connection (`agents.api.hijack`): with ``Tty`` the
raw pty stream, otherwise Docker's multiplexed frames; the client's bytes are stdin and its half-close
closes stdin. The process itself is `agents.worker.executor.execs` (the task's namespaces and cgroup).
The connection closes once the process has exited and its output is drained, and only after its exit
code is recorded: the docker CLI and SDK read it from ``GET /exec/{id}/json`` right after the stream ends.

As in dockerd: the instances live in the agent's memory (a restarted agent forgets them), an exec's
processes die with its container, and a client that goes away does not stop a non-TTY exec (a TTY's
shell gets SIGHUP, like a closed terminal).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agents.api.containers import find_owned
from agents.api.errors import ApiError, Conflict, InvalidParameter, NotFound, NotImplementedYet
from agents.api.hijack import STDERR, STDOUT, HijackedStream, frame, hijack, stream_content_type
from agents.api.httputil import (
    api_version,
    expect_type,
    json_response,
    optional_field,
    query_int,
    read_json_object,
)
from agents.api.routing import RouteTable
from agents.api.server import node_context
from agents.worker.executor import execs as runtime
from agents.worker.executor import fdio

routes = RouteTable("execs")

MAX_INSTANCES = 256
"""Finished instances beyond this many are forgotten, oldest first (dockerd keeps them per container)."""
DRAIN_S = 1.0
"""After the process exits, how long output still held open by its leftover children is relayed."""


@dataclass(eq=False)
class ExecInstance:
    id: str
    container: Any
    config: runtime.ExecConfig
    open_stdout: bool
    open_stderr: bool
    privileged: bool
    detach_keys: str
    size: tuple[int, int] | None
    created: float = field(default_factory=time.monotonic)
    started: bool = False
    running: bool = False
    exit_code: int | None = None
    pid: int = 0
    process: runtime.ExecProcess | None = None
    supervisor: asyncio.Task[None] | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def inspect(self) -> dict[str, Any]:
        cmd = self.config.cmd
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.config.tty,
                "entrypoint": cmd[0] if cmd else "",
                "arguments": cmd[1:],
                "privileged": self.privileged,
                "user": self.config.user,
            },
            "OpenStdin": self.config.stdin,
            "OpenStderr": self.open_stderr,
            "OpenStdout": self.open_stdout,
            "CanRemove": False,
            "ContainerID": str(getattr(self.container, "id", "")),
            "DetachKeys": self.detach_keys,
            "Pid": self.pid,
        }


class ExecStore:
    """The node's exec instances (in memory, per agent)."""

    def __init__(self) -> None:
        self._items: dict[str, ExecInstance] = {}

    def add(self, inst: ExecInstance) -> None:
        if len(self._items) >= MAX_INSTANCES:
            done = sorted((i for i in self._items.values() if i.started and not i.running), key=lambda i: i.created)
            for old in done[: len(self._items) - MAX_INSTANCES + 1]:
                self._items.pop(old.id, None)
        self._items[inst.id] = inst

    def get(self, ref: str) -> ExecInstance:
        inst = self._items.get(ref)
        if inst is None:
            raise NotFound(f"No such exec instance: {ref}")
        return inst


def exec_store(request: web.Request) -> ExecStore:
    ctx = node_context(request)
    store = getattr(ctx, "execs", None)
    if store is None:
        store = ExecStore()
        ctx.execs = store  # type: ignore[attr-defined]
    return store


# ------------------------------------------------------------------------------------------ create


def _string_list(value: Any, path: str) -> list[str]:
    """Docker's StrSlice: a string or a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    items = expect_type(value, list, path)
    return [expect_type(v, str, f"{path}[{i}]") for i, v in enumerate(items)]


def _console_size(body: dict[str, Any]) -> tuple[int, int] | None:
    value = body.get("ConsoleSize")
    if value is None:
        return None
    items = expect_type(value, list, "ConsoleSize")
    if len(items) != 2:
        raise InvalidParameter("invalid JSON: ConsoleSize must have exactly 2 items ([height, width])")
    h, w = (expect_type(v, int, f"ConsoleSize[{i}]") for i, v in enumerate(items))
    if not (0 <= h <= 0xFFFF and 0 <= w <= 0xFFFF):
        raise InvalidParameter("invalid JSON: ConsoleSize values must be between 0 and 65535")
    return h, w


def unsupported_reason(owner: Any) -> str | None:
    """Why this container's executor cannot run execs (None when it can)."""
    executor = getattr(owner, "executor", None)
    if getattr(executor, "name", "") == "docker":
        return ("docker exec is not supported for containers of the docker executor: "
                "run it against the node's Docker engine instead (docker -H unix:///var/run/docker.sock exec ...)")
    return None


@routes.post("/containers/{id}/exec")
async def create_exec(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    cmd = _string_list(body.get("Cmd"), "Cmd")
    if not cmd:
        raise InvalidParameter("No exec command specified")
    env = _string_list(body.get("Env"), "Env")
    user = optional_field(body, "User", str, "")
    workdir = optional_field(body, "WorkingDir", str, "")
    if workdir and not workdir.startswith("/"):
        raise InvalidParameter(f"the working directory '{workdir}' is invalid, it needs to be an absolute path")
    tty = optional_field(body, "Tty", bool, False)
    attach_stdin = optional_field(body, "AttachStdin", bool, False)
    attach_stdout = optional_field(body, "AttachStdout", bool, False)
    attach_stderr = optional_field(body, "AttachStderr", bool, False)
    privileged = optional_field(body, "Privileged", bool, False)
    detach_keys = optional_field(body, "DetachKeys", str, "")
    size = _console_size(body)
    ref = request.match_info["id"]
    c, owner = await find_owned(request, ref)
    reason = unsupported_reason(owner)
    if reason is not None:
        raise NotImplementedYet(reason)
    if not getattr(c, "running", False):
        raise Conflict(f"Container {getattr(c, 'id', ref)} is not running")
    config = runtime.ExecConfig(cmd=cmd, env=env, user=user, working_dir=workdir, tty=tty, stdin=attach_stdin)
    inst = ExecInstance(
        id=secrets.token_hex(32),
        container=c,
        config=config,
        open_stdout=attach_stdout,
        open_stderr=attach_stderr,
        privileged=privileged,
        detach_keys=detach_keys,
        size=size,
    )
    exec_store(request).add(inst)
    return json_response({"Id": inst.id}, status=201)


@routes.get("/exec/{id}/json")
async def inspect_exec(request: web.Request) -> web.StreamResponse:
    return json_response(exec_store(request).get(request.match_info["id"]).inspect())


@routes.post("/exec/{id}/resize")
async def resize_exec(request: web.Request) -> web.StreamResponse:
    height = query_int(request, "h", -1)
    width = query_int(request, "w", -1)
    if not (0 <= height <= 0xFFFF and 0 <= width <= 0xFFFF):
        raise InvalidParameter("invalid resize: h and w must be integers between 0 and 65535")
    inst = exec_store(request).get(request.match_info["id"])
    inst.size = (height, width)
    if inst.process is not None and inst.running:
        try:
            inst.process.resize(height, width)
        except OSError as exc:
            raise ApiError(500, f"resizing exec {inst.id[:12]}: {exc.strerror or exc}") from None
    return web.Response(status=200)


# ------------------------------------------------------------------------------------------- start


@routes.post("/exec/{id}/start")
async def start_exec(request: web.Request) -> web.StreamResponse:
    body = await read_json_object(request)
    detach = optional_field(body, "Detach", bool, False)
    framed = not optional_field(body, "Tty", bool, False)
    size = _console_size(body)
    inst = exec_store(request).get(request.match_info["id"])
    if inst.running:
        raise Conflict(f"Error: Exec command {inst.id} is already running")
    if inst.started:
        raise Conflict(f"Error: Exec command {inst.id} has already run")
    c = inst.container
    if not getattr(c, "running", False):
        raise Conflict(f"Container {getattr(c, 'id', '')} is not running")
    if size is not None:
        inst.size = size
    failure: runtime.ExecFailed | None = None
    config: dict[str, Any] = {}
    try:
        config = runtime.prepare(c, inst.config)
    except runtime.NotRunning:
        raise Conflict(f"Container {getattr(c, 'id', '')} is not running") from None
    except runtime.ExecFailed as exc:
        failure = exc
    inst.started = True
    if detach:
        if failure is not None:
            inst.exit_code = failure.exit_code
            inst.finished.set()
            raise InvalidParameter(runtime.OCI_PREFIX + str(failure) + ": unknown")
        background = await _spawn(inst, config, detached=True)
        inst.supervisor = asyncio.get_running_loop().create_task(_supervise(inst, background, None, framed))
        return web.Response(status=200)
    proc: runtime.ExecProcess | None = None
    if failure is None:
        proc = await _spawn(inst, config, detached=False)
    try:
        resp, stream = await hijack(request, stream_content_type(not framed, api_version(request)))
    except ConnectionError:  # the client went away before the stream began
        if proc is not None:
            inst.supervisor = asyncio.get_running_loop().create_task(_supervise(inst, proc, None, framed))
        return web.Response(status=204)
    if failure is not None:
        text = (runtime.OCI_PREFIX + str(failure) + ": unknown\r\n").encode()
        await stream.write(frame(STDOUT, text) if framed else text)
        inst.exit_code = failure.exit_code
        inst.finished.set()
        stream.close()
        return resp
    assert proc is not None
    await _supervise(inst, proc, stream, framed)
    return resp


async def _spawn(inst: ExecInstance, config: dict[str, Any], *, detached: bool) -> runtime.ExecProcess:
    try:
        proc = await runtime.spawn(config, size=inst.size, attach_stdin=inst.config.stdin, detached=detached)
    except OSError as exc:
        inst.started = False
        raise ApiError(500, f"starting exec in container {str(getattr(inst.container, 'id', ''))[:12]}: "
                            f"{exc.strerror or exc}") from None
    inst.process, inst.pid, inst.running = proc, proc.pid, True
    return proc


async def _supervise(inst: ExecInstance, proc: runtime.ExecProcess, stream: HijackedStream | None,
                     framed: bool) -> None:
    """Relay stdio until the process ends (and its output is drained); record its exit code."""
    loop = asyncio.get_running_loop()
    outputs: list[asyncio.Task[None]] = []
    if proc.tty:
        outputs.append(loop.create_task(_pump_out(proc.master, stream, STDOUT, framed)))
    else:
        for fd, kind in ((proc.stdout, STDOUT), (proc.stderr, STDERR)):
            if fd >= 0:
                outputs.append(loop.create_task(_pump_out(fd, stream, kind, framed)))
    feeder: asyncio.Task[None] | None = None
    if stream is not None:
        feeder = loop.create_task(_pump_in(proc, stream, inst.config.stdin))
    killer = loop.create_task(_kill_with_container(inst, proc))
    try:
        code = await proc.wait()
        if outputs:
            _, pending = await asyncio.wait(outputs, timeout=DRAIN_S)
            for t in pending:
                t.cancel()
            await asyncio.gather(*outputs, return_exceptions=True)
    finally:
        helpers = [killer] if feeder is None else [killer, feeder]
        for t in helpers:
            t.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if proc.proc.returncode is None:  # cancelled: never leave the process unreaped
            proc.signal(9)
            code = await proc.wait()
        proc.close()
        inst.exit_code, inst.running = code, False
        inst.finished.set()
        if stream is not None:
            stream.close()


async def _pump_out(fd: int, stream: HijackedStream | None, kind: int, framed: bool) -> None:
    while True:
        try:
            data = await fdio.read_fd(fd)
        except OSError:
            return
        if not data:
            return
        if stream is not None and not stream.lost:
            await stream.write(frame(kind, data) if framed else data)


async def _pump_in(proc: runtime.ExecProcess, stream: HijackedStream, wanted: bool) -> None:
    """Client bytes -> the process's stdin; a half-close closes stdin (no tty), a lost connection hangs
    up a tty (SIGHUP)."""
    target = proc.master if proc.tty else proc.stdin
    while True:
        data = await stream.read()
        if not data:
            break
        if wanted and target >= 0 and not await fdio.write_fd(target, data):
            wanted = False
    if proc.tty:
        if stream.lost:
            proc.signal(1)
    else:
        proc.close_stdin()


async def _kill_with_container(inst: ExecInstance, proc: runtime.ExecProcess) -> None:
    """An exec's processes end with its container (its cgroup is killed too, where there is one)."""
    exited = getattr(inst.container, "exited", None)
    if exited is None:
        return
    await exited.wait()
    proc.signal(9)
