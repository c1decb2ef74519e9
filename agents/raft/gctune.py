"""Keep CPython's cyclic GC from stalling a Raft server process.

Why: a leader holds up to ``snapshot_every`` log entries (plus request state) as live, GC-tracked objects.
CPython (3.11) runs a full collection whenever the objects that survived into the oldest generation
grow by 25%, and each full collection walks *every* tracked object: under load that was a 10-70 ms stall
several times a second, i.e. the whole p99 commit latency. ``gc.freeze()`` moves everything alive into
a permanent generation that collections skip, so freezing once a second keeps collections proportional
to the last second's survivors. Frozen cyclic garbage is never collected, so every ``full_every``
seconds everything is unfrozen and collected once (one long pause per minute instead of several per
second). This is a process-wide setting: call it from a server's ``main``, never from a library.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc


async def _run(freeze_every: float, full_every: float) -> None:
    loop = asyncio.get_running_loop()
    next_full = loop.time() + full_every
    while True:
        await asyncio.sleep(freeze_every)
        if loop.time() >= next_full:
            next_full = loop.time() + full_every
            gc.unfreeze()
            gc.collect()
        gc.freeze()


def start(freeze_every: float = 1.0, full_every: float = 60.0) -> asyncio.Task[None]:
    """Start the freeze task on the running loop; cancel the returned task to stop it."""
    gc.collect()
    gc.freeze()
    return asyncio.get_running_loop().create_task(_run(freeze_every, full_every), name="gc-freeze")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gc.unfreeze()
