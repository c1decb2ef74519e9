"""Log plumbing shared by ``docker logs``, ``docker service logs`` and the node log endpoint.

* :class:`LogOptions` parses dockerd's query parameters (``follow``, ``tail``, ``timestamps``,
  ``details``, ``stdout``/``stderr``, ``since``);
* :func:`frame` builds Docker's multiplexed-stream frames (8-byte header: stream type, three zero
  bytes, big-endian payload length);
* :func:`worker_entries` reads one task's log from this node's worker (``Worker.logs``) as
  :class:`LogEntry` items, whatever shape the worker yields.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from agents.api.errors import InvalidParameter
from agents.api.httputil import query_bool
from agents.worker.executor.base import LogQuery
from agents.worker.executor.logs import LogEntry

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
STREAM_IDS = {"stdin": 0, "stdout": 1, "stderr": 2}


@dataclass(frozen=True)
class LogOptions(LogQuery):
    """What to read (handed to the worker as it is) and how to render it."""

    timestamps: bool = False
    details: bool = False

    @classmethod
    def from_request(cls, request: web.Request) -> LogOptions:
        opts = cls(
            follow=query_bool(request, "follow"),
            tail=parse_tail(request.query.get("tail", "")),
            timestamps=query_bool(request, "timestamps"),
            details=query_bool(request, "details"),
            stdout=query_bool(request, "stdout"),
            stderr=query_bool(request, "stderr"),
            since=parse_since(request.query.get("since", "")),
        )
        if not (opts.stdout or opts.stderr):
            raise InvalidParameter("Bad parameters: you must choose at least one stream")
        return opts

    def query(self) -> dict[str, str]:
        """The same options as query parameters (for fetching a task's log from another node)."""
        q = {
            "follow": str(int(self.follow)),
            "stdout": str(int(self.stdout)),
            "stderr": str(int(self.stderr)),
            "tail": "all" if self.tail is None else str(self.tail),
        }
        if self.since is not None:
            q["since"] = repr(self.since)
        return q


def parse_tail(raw: str) -> int | None:
    raw = raw.strip()
    if raw in ("", "all"):
        return None
    try:
        n = int(raw)
    except ValueError:
        raise InvalidParameter(f"invalid value for 'tail': {raw!r} (a number of lines or \"all\")") from None
    return None if n < 0 else n


def parse_since(raw: str) -> float | None:
    """Unix seconds with an optional fraction, as the CLI sends it (``1700000000.000000000``)."""
    raw = raw.strip()
    if raw in ("", "0"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidParameter(f"invalid value for 'since': {raw!r}") from None


def frame(stream: str, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed stream."""
    return struct.pack(">BxxxL", STREAM_IDS.get(stream, 1), len(payload)) + payload


def details_prefix(attrs: Mapping[str, str]) -> bytes:
    """dockerd's details: ``k=v,k=v`` sorted by key, values query-escaped, then a space."""
    return (",".join(f"{k}={quote(v, safe='')}" for k, v in sorted(attrs.items())) + " ").encode()


def render(entry: LogEntry, opts: LogOptions, attrs: Mapping[str, str] | None = None) -> bytes:
    """The frame for one entry with the timestamp and details the request asked for."""
    line = entry.data
    if opts.details:
        line = details_prefix(attrs or {}) + line
    if opts.timestamps:
        line = entry.time.encode() + b" " + line
    return frame(entry.stream, line)


def _entry(item: Any) -> LogEntry | None:
    if isinstance(item, LogEntry):
        return item
    if isinstance(item, bytes | bytearray):
        return LogEntry("stdout", "", bytes(item))
    stream, time, data = (getattr(item, k, None) for k in ("stream", "time", "data"))
    if isinstance(data, bytes | str):
        raw = data.encode() if isinstance(data, str) else data
        return LogEntry(str(stream or "stdout"), str(time or ""), raw)
    if isinstance(item, tuple) and len(item) == 3:
        s, t, d = item
        return LogEntry(str(s), str(t), d if isinstance(d, bytes) else str(d).encode())
    return None


def node_worker(ctx: Any) -> Any:
    """This node's worker: the swarm side keeps it (``SwarmNode.worker``) while the node is in a swarm."""
    return getattr(ctx.swarm, "worker", None) or getattr(ctx, "worker", None)


async def worker_entries(worker: Any, ref: str, opts: LogOptions) -> AsyncIterator[LogEntry]:
    """One task's (or container's) log lines from this node's worker; nothing if it has none.

    The worker's ``logs(ref, query)`` yields :class:`LogEntry` items; a task the worker does not know
    (never ran here, or removed) has no lines."""
    logs = getattr(worker, "logs", None)
    if logs is None:
        return
    try:
        result = logs(ref, opts)
        if inspect.isawaitable(result):
            result = await result
    except LookupError:
        return
    if result is None:
        return
    streams = {s for s, on in (("stdout", opts.stdout), ("stderr", opts.stderr)) if on}
    if hasattr(result, "__aiter__"):
        async for item in result:
            e = _entry(item)
            if e is not None and e.stream in streams:
                yield e
    else:
        for item in result:
            e = _entry(item)
            if e is not None and e.stream in streams:
                yield e


async def start_stream(request: web.Request) -> web.StreamResponse:
    """Headers sent before the first frame (clients wait for them to start reading)."""
    resp = web.StreamResponse(status=200, headers={"Content-Type": MULTIPLEXED})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    return resp
