"""Stopping loops when a cancellation goes missing.

The demoted leader of test_membership stayed a manager under load: a cancellation was lost (Python
3.11's wait_for drops one that arrives as the awaited future completes) and three stop paths turned
that into a hang. Each stopped a task with ``cancel(); suppress(CancelledError): await task``, which also
swallowed the stopper's own cancellation, so the stopper ran on: the manager's leadership watch kept
polling, the manager's stop() waited for it, and the node's role loop outlived the node's stop().
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.cancel import cancel_and_wait
from agents.manager.loop import ControlLoop, LocalCommitter
from agents.manager.rolemanager import RoleManager
from agents.state.objects import ManagerStatus, NodeRole
from agents.swarmnode import SwarmNode, SwarmTiming
from tests.unit.manager.swarmfixtures import eventually, make_node, make_store


def run(coro: Any) -> None:
    async def main() -> None:
        async with asyncio.timeout(30):
            await coro

    asyncio.run(main())


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _swallows_one_cancel(calls: list[int]) -> None:
    """Waits forever, but returns on the first cancellation: what wait_for did when the awaited future
    completed as the cancellation arrived."""
    calls.append(1)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        return


def test_cancel_and_wait_passes_on_the_stoppers_own_cancellation() -> None:
    async def main() -> None:
        child = asyncio.ensure_future(_forever())
        await asyncio.sleep(0)
        await cancel_and_wait(child)  # the child's own cancellation is not an error
        assert child.cancelled()

        stubborn_calls: list[int] = []
        stubborn = asyncio.ensure_future(_swallows_one_cancel(stubborn_calls))
        await eventually(lambda: bool(stubborn_calls))
        await cancel_and_wait(stubborn)  # it ended on its own terms: fine
        assert stubborn.done() and not stubborn.cancelled()

        async def failing() -> None:
            raise ValueError("boom")

        broken = asyncio.ensure_future(failing())
        await asyncio.sleep(0)
        with pytest.raises(ValueError, match="boom"):
            await cancel_and_wait(broken)

        # The stopper is cancelled while it waits for a child that takes its time to end.
        async def slow_to_end() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.05)

        slow = asyncio.ensure_future(slow_to_end())
        await asyncio.sleep(0)
        stopper = asyncio.ensure_future(cancel_and_wait(slow))
        await asyncio.sleep(0.01)
        stopper.cancel()
        await asyncio.wait({stopper, slow}, timeout=5)
        assert stopper.cancelled(), "the stopper's cancellation was swallowed"
        assert slow.cancelled()

    run(main())


class _SlowToStop(ControlLoop):
    name = "slow-to-stop"

    async def run(self) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)


def test_a_control_loops_stopper_stays_cancelled() -> None:
    """The leadership watch stops the loops when leadership is lost; if the manager stops meanwhile, the
    watch must end (it swallowed that cancellation and kept polling, and Manager.stop() waited on it)."""

    async def main() -> None:
        store = make_store()
        loop = _SlowToStop(store, LocalCommitter(store))
        loop.start()
        await asyncio.sleep(0)
        stopper = asyncio.ensure_future(loop.stop())
        await asyncio.sleep(0.01)
        stopper.cancel()
        await asyncio.wait({stopper}, timeout=5)
        assert stopper.cancelled(), "ControlLoop.stop() swallowed its caller's cancellation"

    run(main())


class _Raft:
    """A leader that is asked to hand over, and whose handover wait drops the first cancellation."""

    def __init__(self) -> None:
        self.transfers: list[int] = []

    def raft_status(self) -> SimpleNamespace:
        return SimpleNamespace(voters=(1, 2), learners=())

    async def transfer_leadership(self, to: int, timeout: float | None = None) -> None:
        await _swallows_one_cancel(self.transfers)


def test_the_role_manager_ends_after_stop_even_if_its_cancellation_is_lost() -> None:
    async def main() -> None:
        store = make_store()
        me = make_node("manager1", role=NodeRole.MANAGER)
        me.spec.role = NodeRole.WORKER  # `docker node demote` of the leader itself
        me.manager_status = ManagerStatus(raft_id=1, addr="127.0.0.1:2377", leader=True)
        with store.local_batch() as tx:
            tx.create(me)
        raft = _Raft()
        manager: Any = SimpleNamespace(store=store, committer=LocalCommitter(store), raft=raft,
                                       config=SimpleNamespace(raft_id=1))
        rm = RoleManager(manager)
        rm.start()
        await eventually(lambda: bool(raft.transfers), timeout=5)
        async with asyncio.timeout(5):  # it used to run on, handing over again and again, and stop() hung
            await rm.stop()
        assert not rm.running

    run(main())


def test_the_role_watch_ends_on_stop_even_if_a_role_change_lost_the_cancellation(tmp_path: Path) -> None:
    async def main() -> None:
        node = SwarmNode(tmp_path, "n1", timing=SwarmTiming(heartbeat_period_s=0.2), fsync=False,
                         network_plane=False)
        checks: list[int] = []

        async def check_role() -> None:  # a role change whose manager.stop() swallowed the cancellation
            await _swallows_one_cancel(checks)

        node._check_role = check_role  # type: ignore[method-assign]
        node._role_task = asyncio.get_running_loop().create_task(node._role_loop())
        await eventually(lambda: bool(checks), timeout=5)
        async with asyncio.timeout(5):  # it used to keep polling, and the node's stop() never returned
            await node._stop_role_watch()
        assert node._role_task is None and len(checks) == 1

    run(main())
