"""The role manager: makes Raft membership follow the roles users ask for (`docker node promote/demote`).

`docker node promote` only changes a node's desired role (`spec.role`). This leader-only loop then:

* promotion: gives the node a Raft id and a manager address (`manager_status`); the node notices (it
  polls `/v1/role`), fetches a manager certificate, starts Raft and asks to be added; once it is a voter,
  its observed role becomes manager;
* demotion: removes the node from Raft and clears its manager status; if the node to demote is this
  leader, it hands leadership to another voter first and lets the next leader finish the job.

As SwarmKit's role manager, it keeps no state of its own: every pass re-reads the store and Raft.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from typing import TYPE_CHECKING

from agents.manager.errors import ManagerError
from agents.manager.loop import ControlLoop
from agents.manager.membership import CONTROL_PORT
from agents.state.errors import StoreError
from agents.state.objects import ManagerStatus, Node, NodeRole, Reachability

if TYPE_CHECKING:
    from agents.manager.manager import Manager

log = logging.getLogger(__name__)

PASS_INTERVAL = 0.2


class RoleManager(ControlLoop):
    name = "role-manager"

    def __init__(self, manager: Manager) -> None:
        super().__init__(manager.store, manager.committer)
        self.manager = manager

    async def run(self) -> None:
        # Until stop() unsets the task: handing leadership over is what gets this loop cancelled, and a
        # cancellation that lands as the handover completes must not leave it running on a follower.
        while self._task is asyncio.current_task():
            try:
                await self.reconcile()
            except ManagerError as e:
                log.info("role manager: %s", e.message)
            except StoreError as e:  # raced another writer: the next pass re-reads
                log.debug("role manager: %s", e)
            await asyncio.sleep(PASS_INTERVAL)

    async def reconcile(self) -> None:
        raft = self.manager.raft
        status = raft.raft_status()
        members = set(status.voters) | set(status.learners)
        for node in self.store.list(Node):
            if node.spec.role is NodeRole.MANAGER and node.role is not NodeRole.MANAGER:
                await self._promote(node, set(status.voters))
            elif node.spec.role is NodeRole.WORKER and (node.role is NodeRole.MANAGER or node.manager_status):
                done = await self._demote(node, members)
                if not done:
                    return  # leadership is moving; the next leader continues

    async def _promote(self, node: Node, voters: set[int]) -> None:
        updated = node.copy()
        if node.manager_status is None:
            ip = node.status.addr
            if not ip:
                return  # the node has not reported its address yet
            updated.manager_status = ManagerStatus(
                raft_id=random.SystemRandom().getrandbits(63) | 1, addr=f"{ip}:{CONTROL_PORT}",
                reachability=Reachability.UNKNOWN,
            )
        elif node.manager_status.raft_id in voters:
            updated.role = NodeRole.MANAGER
            updated.manager_status = dataclasses.replace(node.manager_status, reachability=Reachability.REACHABLE)
        else:
            return  # waiting for the node to start Raft and catch up
        await self._commit(updated)

    async def _demote(self, node: Node, members: set[int]) -> bool:
        ms = node.manager_status
        raft = self.manager.raft
        if ms is not None and ms.raft_id == self.manager.config.raft_id:
            others = [v for v in raft.raft_status().voters if v != ms.raft_id]
            if not others:
                return True  # the last manager is never demoted (the API refuses it)
            log.info("demoting the leader: handing leadership to %x first", others[0])
            try:
                await raft.transfer_leadership(others[0], timeout=5)
            except (TimeoutError, Exception) as e:  # retried on the next pass
                log.warning("leadership transfer failed: %s", e)
            return False
        if ms is not None and ms.raft_id in members:
            await raft.remove_member(ms.raft_id, timeout=10)
        current = self.store.get(Node, node.id)  # re-read: others wrote while we waited on Raft
        if current is None:
            return True
        updated = current.copy()
        updated.role = NodeRole.WORKER
        updated.manager_status = None
        await self._commit(updated)
        return True

    async def _commit(self, node: Node) -> None:
        with self.store.batch() as tx:
            tx.update(node)
        assert tx.changeset is not None
        await self.committer.commit(tx.changeset)


def role_manager(manager: Manager) -> ControlLoop:
    return RoleManager(manager)
