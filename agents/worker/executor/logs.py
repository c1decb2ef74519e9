"""Per-task logs in Docker's ``json-file`` format: one JSON object per line, rotated by size.

The writer runs inside the task supervisor (`shim.py`), so it imports only C modules (``_json``,
``time``, ``os``) -- no ``json`` package (which pulls in ``re``). The reader runs in the agent.

Format, as dockerd writes ``/var/lib/docker/containers/<id>/<id>-json.log``::

    {"log":"hello\\n","stream":"stdout","time":"2024-06-01T12:00:00.123456789Z"}

Lines longer than 16 KiB are split (the pieces carry no newline), as Docker's log copier does. The
file is rotated to ``.1``, ``.2``... once it would exceed ``max_size``; at most ``max_files`` files
exist, so a task's logs never take more than ``max_size * max_files`` bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # not at run time: the supervisor imports this module, and base imports it
    from agents.worker.executor.base import LogQuery

try:
    from _json import encode_basestring as _encode  # C, no ``re`` import
except ImportError:  # pragma: no cover - every CPython has _json
    import json as _jsonmod

    _encode = _jsonmod.dumps

MAX_LINE = 16 * 1024
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 2


def rfc3339_nano(ns: int) -> str:
    """``2024-06-01T12:00:00.123456789Z`` (fixed nine digits, as ``docker logs -t`` prints)."""
    sec, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


class JsonFileWriter:
    """Append log lines for both streams of one task; keeps per-stream partial lines."""

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE, max_files: int = DEFAULT_MAX_FILES) -> None:
        self.path = path
        self.max_size = max(1024, max_size)
        self.max_files = max(1, max_files)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def write(self, stream: str, data: bytes) -> None:
        """Log ``data`` read from ``stream``: complete lines now, the rest when it is completed."""
        buf = self._partial.get(stream, b"") + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0 or nl - start >= MAX_LINE:
                break
            self._entry(stream, buf[start : nl + 1])
            start = nl + 1
        rest = buf[start:]
        while len(rest) >= MAX_LINE:
            self._entry(stream, rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
            nl = rest.find(b"\n")
            if 0 <= nl < MAX_LINE:
                self._entry(stream, rest[: nl + 1])
                rest = rest[nl + 1 :]
        self._partial[stream] = rest

    def flush(self) -> None:
        """Write out unterminated last lines (at task exit)."""
        for stream, rest in self._partial.items():
            if rest:
                self._entry(stream, rest)
        self._partial = {"stdout": b"", "stderr": b""}

    def close(self) -> None:
        self.flush()
        os.close(self._fd)

    def _entry(self, stream: str, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        entry = (
            '{"log":' + _encode(text) + ',"stream":"' + stream + '","time":"' + rfc3339_nano(time.time_ns()) + '"}\n'
        ).encode()
        if self._size and self._size + len(entry) > self.max_size:
            self._rotate()
        os.write(self._fd, entry)
        self._size += len(entry)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_files == 1:
            os.truncate(self.path, 0)
        else:
            for i in range(self.max_files - 1, 0, -1):
                src = self.path if i == 1 else f"{self.path}.{i - 1}"
                if os.path.exists(src):
                    os.replace(src, f"{self.path}.{i}")
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._size = 0


# ----------------------------------------------------------------------------------------- reading


class LogEntry(NamedTuple):
    stream: str
    """``stdout`` or ``stderr``."""
    time: str
    """RFC 3339 with nanoseconds, UTC."""
    data: bytes
    """The line as the task wrote it (with its newline, unless it was split or unterminated)."""


def _parse(raw: bytes) -> LogEntry | None:
    import json

    try:
        obj = json.loads(raw)
        return LogEntry(str(obj["stream"]), str(obj["time"]), str(obj["log"]).encode())
    except (ValueError, KeyError, TypeError):
        return None  # a torn last line (the task is writing it right now)


def log_files(path: str, max_files: int = 16) -> list[str]:
    """The existing files of one log, oldest first."""
    rotated = [f"{path}.{i}" for i in range(max_files, 0, -1) if os.path.exists(f"{path}.{i}")]
    return [*rotated, path] if os.path.exists(path) else rotated


def read_entries(path: str) -> Iterator[LogEntry]:
    """Every entry on disk, oldest first."""
    for name in log_files(path):
        try:
            with open(name, "rb") as fh:
                for raw in fh:
                    if raw.endswith(b"\n"):
                        e = _parse(raw)
                        if e is not None:
                            yield e
        except FileNotFoundError:
            continue  # rotated away while reading


def _keep(e: LogEntry, since: str | None, until: str | None, streams: frozenset[str]) -> bool:
    return e.stream in streams and (since is None or e.time >= since) and (until is None or e.time < until)


async def read_logs(
    path: str, query: LogQuery, *, running: object = None, poll_s: float = 0.1
) -> AsyncIterator[LogEntry]:
    """``docker logs`` over one task's files. ``running`` is a callable telling whether to keep following.

    ``query.tail`` keeps the last N entries of what is on disk. Following polls the file (cheap, and
    robust across rotation: a new inode restarts at offset 0).
    """
    import asyncio
    from collections import deque

    follow, tail, since, until = query.follow, query.tail, query.since, query.until
    streams = frozenset(s for s, on in (("stdout", query.stdout), ("stderr", query.stderr)) if on)
    since_s = rfc3339_nano(int(since * 1e9)) if since else None
    until_s = rfc3339_nano(int(until * 1e9)) if until else None
    # Remember where the current file ends *before* reading history, so following starts there.
    try:
        st = os.stat(path)
        inode, offset = st.st_ino, st.st_size
    except FileNotFoundError:
        inode, offset = 0, 0
    history: Iterator[LogEntry] | deque[LogEntry] = (
        e for e in read_entries(path) if _keep(e, since_s, until_s, streams)
    )
    if tail is not None and tail >= 0:
        history = deque(history, maxlen=tail) if tail > 0 else deque()
    for e in history:
        yield e
    if not follow or until is not None:
        return
    pending = b""
    is_running = running if callable(running) else (lambda: False)
    while True:
        alive = bool(is_running())
        try:
            cur: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            cur = None
        if cur is not None and cur.st_ino != inode:
            inode, offset, pending = cur.st_ino, 0, b""
        if cur is not None and cur.st_size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read(cur.st_size - offset)
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                entry = _parse(raw)
                if entry is not None and _keep(entry, since_s, None, streams):
                    yield entry
            continue
        if not alive:
            return
        await asyncio.sleep(poll_s)
