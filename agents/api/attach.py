"""What ``POST /containers/{id}/attach`` relays once the connection is hijacked.

* ``logs=1``: the container's log so far (json-file), then
* ``stream=1``: live stdio. A standalone container with a console (`agents.worker.console`: created
  for attaching, ``-i`` or ``-t``) gives the real thing: output as the program writes it, the client's
  bytes as its stdin, the client's half-close as stdin's EOF. If the container has not started yet (the
  CLI attaches before it starts the container: ``docker run``, ``docker start -a``) the relay waits for
  the start, which hands it a console connection before the program runs. Any other running container
  (a ``-d`` one, a swarm task's) gives its output as it reaches the log (no stdin).

Frames: with a TTY the raw bytes, otherwise Docker's multiplexed frames (`agents.api.hijack.frame`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agents.api.hijack import STDERR, STDOUT, HijackedStream, frame
from agents.api.httputil import query_bool
from agents.api.logstream import LogOptions, worker_entries
from agents.worker.attach import T_STDERR, T_STDOUT, ConsoleConnection


@dataclass(frozen=True)
class AttachOptions:
    stream: bool = False
    logs: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False

    @classmethod
    def from_request(cls, request: web.Request) -> AttachOptions:
        return cls(*(query_bool(request, k) for k in ("stream", "logs", "stdin", "stdout", "stderr")))


def _log_key(c: Any) -> str:
    task = getattr(c, "task", None)
    if task is not None and getattr(task, "service_id", None):
        return str(task.id)
    return str(getattr(c, "id", ""))


async def relay(owner: Any, c: Any, stream: HijackedStream, tty: bool, opts: AttachOptions) -> None:
    """Serve one attach until the container's output ends or the client leaves."""
    if opts.logs and (opts.stdout or opts.stderr):
        history = LogOptions(stdout=opts.stdout, stderr=opts.stderr)
        async for e in worker_entries(owner, _log_key(c), history):
            if not await _send(stream, tty, STDERR if e.stream == "stderr" else STDOUT, e.data):
                return
    if not opts.stream:
        return
    console = getattr(owner, "console_connection", None)
    conn = await console(c, stream.closed) if callable(console) else None
    if conn is not None:
        await _relay_console(conn, stream, tty, opts)
    elif getattr(c, "running", False) and (opts.stdout or opts.stderr):
        await _until_gone(stream, _follow_log(owner, c, stream, tty, opts))


async def _send(stream: HijackedStream, tty: bool, kind: int, data: bytes) -> bool:
    return await stream.write(data if tty else frame(kind, data))


async def _until_gone(stream: HijackedStream, work: Any) -> None:
    """Run ``work`` until it ends or the client disconnects."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(stream.closed.wait())
    try:
        await asyncio.wait([task, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, gone):
            t.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)


async def _follow_log(owner: Any, c: Any, stream: HijackedStream, tty: bool, opts: AttachOptions) -> None:
    live = LogOptions(follow=True, tail=0, stdout=opts.stdout, stderr=opts.stderr)
    async for e in worker_entries(owner, _log_key(c), live):
        if not await _send(stream, tty, STDERR if e.stream == "stderr" else STDOUT, e.data):
            return


async def _relay_console(conn: ConsoleConnection, stream: HijackedStream, tty: bool, opts: AttachOptions) -> None:
    async def to_client() -> None:
        while True:
            item = await conn.read()
            if item is None:
                return
            kind, data = item
            wanted = (kind == T_STDOUT and opts.stdout) or (kind == T_STDERR and opts.stderr)
            if wanted and not await _send(stream, tty, STDOUT if kind == T_STDOUT else STDERR, data):
                return

    async def from_client() -> None:
        while True:
            data = await stream.read()
            if not data:
                break
            if opts.stdin and not await conn.send_stdin(data):
                return
        if opts.stdin and not stream.lost:
            await conn.send_eof()

    out = asyncio.ensure_future(to_client())
    inp = asyncio.ensure_future(from_client())
    gone = asyncio.ensure_future(stream.closed.wait())
    try:
        await asyncio.wait([out, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (out, inp, gone):
            t.cancel()
        await asyncio.gather(out, inp, gone, return_exceptions=True)
        with contextlib.suppress(OSError):
            if opts.stdin:
                await conn.close()  # a client that leaves ends stdin, as its EOF would
            else:
                await conn.detach()
