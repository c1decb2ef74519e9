"""RaftNode's waits keep a cancellation that arrives just as what they wait for completes.

On Python 3.11 ``asyncio.wait_for`` returns the result in that case and drops the cancellation. The role
manager hands leadership over with `transfer_leadership`, and losing leadership is what gets it
cancelled: the two coincide, and the role manager ran on as a zombie on a follower while the manager's
stop() waited for it (the demoted leader of test_membership stayed a manager).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from .test_node import Cluster

pytestmark = pytest.mark.timeout(120)


def test_a_cancel_landing_as_a_leadership_transfer_completes_is_kept(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path)
        try:
            await c.start_all()
            leader = await c.leader()
            to = 99  # not a member: the transfer waits until the test completes it
            transfer = asyncio.ensure_future(leader.transfer_leadership(to, timeout=10))
            while not leader._leader_waiters:  # the transfer waits on its future now
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            assert not transfer.done()
            # The transfer completes (as the node resolves it on seeing `to` lead) and, in the same turn
            # of the event loop, the task that asked for it is cancelled (the leadership watch stopping
            # the role manager).
            done = leader._leader_waiters[-1][1]
            done.set_result(None)
            transfer.cancel()
            await asyncio.wait({transfer}, timeout=10)
            assert transfer.cancelled(), "the cancellation was lost: the transfer returned normally"
        finally:
            await c.stop_all()

    asyncio.run(main())
