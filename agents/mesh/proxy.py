"""The userspace fallback where nftables cannot be programmed (no privileges): a TCP listener per
published port on every node, splicing each accepted connection to the next backend round-robin.
Same behaviour as the kernel mesh for ingress ports (slower, and the task sees the node as client);
a backend that refuses is skipped for that connection, so a stopping task costs no request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Backends = Callable[[], list[tuple[str, int]]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class PortProxy:
    """One published port: ``backends()`` is consulted per connection (always the current set)."""

    def __init__(self, port: int, backends: Backends, host: str = "0.0.0.0", connect_timeout: float = 2.0) -> None:
        self.port = port
        self.host = host
        self.backends = backends
        self.connect_timeout = connect_timeout
        self._next = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                return
            ur, uw = upstream
            try:
                await asyncio.gather(_pipe(reader, uw), _pipe(ur, writer))
            finally:
                uw.close()
        finally:
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        backends = self.backends()
        for _ in range(len(backends)):
            host, port = backends[self._next % len(backends)]
            self._next += 1
            try:
                async with asyncio.timeout(self.connect_timeout):
                    return await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                continue
        return None

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        for t in list(self._conns):
            t.cancel()


class ProxySet:
    """The proxies for a whole table: ``update({port: backends_fn})`` starts and stops listeners."""

    def __init__(self, host: str = "0.0.0.0") -> None:
        self.host = host
        self.proxies: dict[int, PortProxy] = {}

    async def update(self, ports: dict[int, Backends]) -> None:
        for port in [p for p in self.proxies if p not in ports]:
            await self.proxies.pop(port).stop()
        for port, fn in ports.items():
            if port in self.proxies:
                self.proxies[port].backends = fn
                continue
            p = PortProxy(port, fn, self.host)
            try:
                await p.start()
            except OSError as e:
                log.warning("mesh proxy: cannot listen on port %d: %s", port, e)
                continue
            self.proxies[port] = p

    async def close(self) -> None:
        for p in self.proxies.values():
            await p.stop()
        self.proxies.clear()
