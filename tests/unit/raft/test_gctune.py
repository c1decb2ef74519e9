"""gctune: long-lived objects frozen out of the collector's full passes, cyclic garbage still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref

from agents.raft import gctune


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_start_freezes_refreezes_collects_in_full_passes_and_stop_unfreezes() -> None:
    async def main() -> None:
        task = gctune.start(freeze_every=0.05, full_every=1.0)
        gc.disable()  # no automatic pass may collect the cycle before it is frozen
        try:
            assert gc.get_freeze_count() > 0  # what start-up left alive is out of the collector's way
            garbage = _Cycle()
            ref = weakref.ref(garbage)
            del garbage
            await asyncio.sleep(0.12)  # refrozen since: the cycle is frozen too, never collected...
            frozen = gc.get_freeze_count()
            gc.collect()
            assert ref() is not None and gc.get_freeze_count() == frozen
            for _ in range(250):  # ...until the periodic full pass unfreezes and collects everything
                if ref() is None:
                    break
                await asyncio.sleep(0.02)
            assert ref() is None, "the periodic full collection did not reclaim frozen cyclic garbage"
        finally:
            gc.enable()
            await gctune.stop(task)
        assert gc.get_freeze_count() == 0

    asyncio.run(main())
