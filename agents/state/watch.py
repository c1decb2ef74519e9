"""Change notification: events and a bounded, asyncio-friendly watch queue.

Events are delivered synchronously at the end of ``Store.apply`` (in log order). Async consumers use a
``WatchQueue``: it buffers at most ``maxsize`` events; a consumer that falls further behind is closed with
``fell_behind`` set (its buffer dropped), and must resync by re-listing the store and watching again.
That bounds memory whatever a slow consumer does, and a consumer never silently misses an event.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agents.state.objects import StoreObject


class EventAction(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    REMOVED = "removed"


@dataclass(slots=True, frozen=True)
class Event:
    """``obj`` is the stored object after the change (for ``removed``: the object as it was deleted);
    ``old`` is the previous version for ``updated``, else None. Both are shared: do not mutate."""

    action: EventAction
    kind: str
    obj: StoreObject
    old: StoreObject | None = None


Callback = Callable[[list[Event]], None]


class WatchClosed(Exception):
    """The queue was closed; ``fell_behind`` says whether the consumer must resync by re-listing."""

    def __init__(self, fell_behind: bool) -> None:
        super().__init__("watch fell behind; re-list and watch again" if fell_behind else "watch closed")
        self.fell_behind = fell_behind


class WatchQueue:
    """Events for the given kinds, for one consumer in the event loop that runs ``Store.apply``.

    ``async for ev in q`` ends quietly on ``close()``; on overflow it raises ``WatchClosed(fell_behind=True)``.
    """

    def __init__(
        self, kinds: Iterable[str] | None, maxsize: int, on_close: Callable[[WatchQueue], None]
    ) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.maxsize = maxsize
        self.fell_behind = False
        self.closed = False
        self._buf: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._on_close = on_close

    def __len__(self) -> int:
        return len(self._buf)

    def push(self, events: list[Event]) -> None:
        """Called by the store after each apply."""
        if self.closed:
            return
        kinds = self.kinds
        new = events if kinds is None else [e for e in events if e.kind in kinds]
        if not new:
            return
        if len(self._buf) + len(new) > self.maxsize:
            self._close(fell_behind=True)
            return
        self._buf.extend(new)
        self._wake()

    def close(self) -> None:
        self._close(fell_behind=False)

    def _close(self, fell_behind: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.fell_behind = fell_behind
        if fell_behind:
            self._buf.clear()
        self._on_close(self)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def get_nowait(self) -> Event | None:
        """The next event, or None if none is buffered; raises ``WatchClosed`` once closed and drained."""
        if self._buf and not self.fell_behind:
            return self._buf.popleft()
        if self.closed:
            raise WatchClosed(self.fell_behind)
        return None

    def drain(self) -> list[Event]:
        """All buffered events (possibly none); raises ``WatchClosed`` once closed and drained."""
        if self.closed and not self._buf:
            raise WatchClosed(self.fell_behind)
        out = list(self._buf)
        self._buf.clear()
        return out

    async def get(self) -> Event:
        while True:
            ev = self.get_nowait()
            if ev is not None:
                return ev
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> WatchQueue:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.get()
        except WatchClosed as e:
            if e.fell_behind:
                raise
            raise StopAsyncIteration from None
