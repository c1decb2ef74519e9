"""A stopping task is signalled only once every node has dropped it: the publisher's acknowledgement
bookkeeping, the session's ``mesh_ack``, and `MeshAgent.drain` (driven by hand, userspace mode, no
rules programmed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agents.mesh import agent as mesh_agent
from agents.mesh.agent import MODE_PROXY, MeshAgent
from agents.mesh.publisher import MeshPublisher
from agents.state.store import Store
from agents.worker.session import WorkerSession
from tests.unit.manager.test_dispatcher import (
    Raw,
    Server,
    add_nodes,
    ca,
    creds,
    description,
    make_dispatcher,
    started,
    until,
)


def _svc(*tasks: tuple[str, bool]) -> dict[str, Any]:
    return {"id": "s1", "name": "web", "vips": [], "ports": [], "networks": [],
            "tasks": [{"id": tid, "node_id": "n1", "addrs": {"net": f"10.0.0.{i + 3}"}, "ready": ready}
                      for i, (tid, ready) in enumerate(tasks)]}


def _mesh(stream: str, gen: int, *tasks: tuple[str, bool]) -> dict[str, Any]:
    return {"type": "mesh", "full": True, "services": [_svc(*tasks)], "networks": [], "nodes": [],
            "stream": stream, "gen": gen}


def _applied(stream: str, gen: int) -> dict[str, Any]:
    return {"type": "mesh_applied", "stream": stream, "gen": gen}


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(mesh_agent, "DRAIN_SETTLE_S", 0.0)
    monkeypatch.setattr(mesh_agent, "DRAIN_ORDER_S", 0.3)
    monkeypatch.setenv("LABAGENT_MESH_DRAIN_MAX_S", "1")
    yield


def _agent() -> MeshAgent:
    a = MeshAgent("n1", "192.0.2.1", probe=False, force_mode=MODE_PROXY)
    a.mode, a._started = MODE_PROXY, True  # nothing to start: no ports, no networks
    return a


def test_drain_waits_for_every_node_to_apply_the_table_without_the_task(fast: None) -> None:
    async def main() -> None:
        a = _agent()
        assert await a.on_message(_mesh("s", 1, ("t1", True), ("t2", True)))
        drain = asyncio.create_task(a.drain("t1"))
        await asyncio.sleep(0.05)
        assert not drain.done()  # still a backend here
        await a.on_message(_mesh("s", 2, ("t2", True)))  # the manager dropped it: this node applied it
        await a.on_message(_applied("s", 1))  # ... but not every node has
        await asyncio.sleep(0.05)
        assert not drain.done()
        await a.on_message(_applied("old-leader", 5))  # another stream says nothing about this one
        await asyncio.sleep(0.05)
        assert not drain.done()
        t0 = time.monotonic()
        await a.on_message(_applied("s", 2))
        await asyncio.wait_for(drain, 1)
        assert time.monotonic() - t0 < 0.1

    asyncio.run(main())


def test_drain_follows_a_new_leaders_stream(fast: None) -> None:
    async def main() -> None:
        a = _agent()
        await a.on_message(_mesh("s", 1, ("t1", True)))
        await a.on_message(_mesh("s", 2))
        drain = asyncio.create_task(a.drain("t1"))
        await a.on_message(_mesh("new", 1))  # leadership moved before every node confirmed
        await a.on_message(_applied("s", 2))  # the old leader's word no longer counts
        await asyncio.sleep(0.05)
        assert not drain.done()
        await a.on_message(_applied("new", 1))
        await asyncio.wait_for(drain, 1)

    asyncio.run(main())


def test_drain_is_bounded(fast: None) -> None:
    async def main() -> None:
        a = _agent()
        await a.on_message(_mesh("s", 1, ("t1", True)))
        # a stop the manager did not order (docker stop, leaving the swarm): the old fixed delay
        waited = await a.drain("t1")
        assert 0.3 <= waited < 0.5
        # every node but a stuck one applied the drop: the stop goes ahead at the bound
        await a.on_message(_mesh("s", 2))
        waited = await a.drain("t1")
        assert 1.0 <= waited < 1.3
        # a task that is no backend anywhere, everything confirmed: no wait at all
        await a.on_message(_applied("s", 2))
        assert await a.drain("t1") < 0.05
        # a manager without generations: the old fixed delay
        b = _agent()
        await b.on_message({"type": "mesh", "full": True, "services": [], "networks": [], "nodes": []})
        assert 0.3 <= await b.drain("t1") < 0.5

    asyncio.run(main())


def test_publisher_announces_the_generation_every_live_session_applied() -> None:
    async def main() -> None:
        sent: list[dict[str, Any]] = []
        live = {"a", "b"}
        pub = MeshPublisher(Store(), sent.append, members=lambda: live)
        pub.publish()
        stream = sent[0]["stream"]
        assert (sent[0]["type"], sent[0]["gen"]) == ("mesh", 1)
        pub.ack("a", stream, 1)
        pub.ack("b", "other", 1)  # a previous leader's stream
        pub.ack("b", stream, True)  # garbage
        assert [m["type"] for m in sent] == ["mesh"]
        pub.ack("b", stream, 1)
        assert sent[-1] == {"type": "mesh_applied", "stream": stream, "gen": 1}
        pub.gen = 2  # (as after another publish)
        pub.ack("a", stream, 2)
        live.discard("b")  # the laggard's session ends
        pub.check()
        assert sent[-1] == {"type": "mesh_applied", "stream": stream, "gen": 2}
        n = len(sent)
        pub.check()
        assert len(sent) == n  # announced once
        pub.reset()
        assert pub.stream != stream and pub.full_message()["gen"] == 1

    asyncio.run(main())


def test_sessions_acknowledge_and_the_dispatcher_announces() -> None:
    """Over the real dispatcher and worker session (TLS on 127.0.0.1): the session acknowledges each
    applied ``mesh`` message, not one its callback failed to program, and ``mesh_applied`` follows
    the slowest live node."""

    async def main() -> None:
        store = Store()
        add_nodes(store, ["n1", "n2"])
        got: list[dict[str, Any]] = []
        program_ok = [True]

        def on_mesh(msg: dict[str, Any]) -> bool:
            got.append(msg)
            return program_ok[0]

        d = make_dispatcher(store)
        async with Server(d) as srv:
            await started(d)
            ws = WorkerSession(creds("n1"), ca(), [srv.addr], description("n1"), lambda a: None)
            ws.on_mesh = on_mesh
            ws.start()
            raw = await Raw.register(srv.addr, "n2", beat=True)
            try:
                await ws.wait_connected(5)
                full = await raw.recv("mesh")
                stream, gen = full["stream"], full["gen"]
                await until(lambda: any(m.get("type") == "mesh" for m in got), what="n1's table")
                await raw.no_message("mesh_applied", 0.3)  # n2 has not acknowledged
                await raw.send(type="mesh_ack", stream=stream, gen=gen)
                assert (await raw.recv("mesh_applied"))["gen"] == gen
                await until(lambda: got[-1].get("type") == "mesh_applied", what="announcement on n1")

                program_ok[0] = False  # n1 cannot program the next table: no acknowledgement
                d.mesh.gen += 1
                mine = d.mesh.gen
                d._broadcast_mesh(d.mesh._stamp(d.mesh.published.full_message()))  # type: ignore[union-attr]
                while (await raw.recv("mesh"))["gen"] < mine:
                    pass
                await raw.send(type="mesh_ack", stream=stream, gen=mine)
                await until(lambda: any(m.get("gen") == mine for m in got), what="n1 got it")
                await asyncio.sleep(0.3)
                assert d.mesh.applied_everywhere < mine
                await raw.close()  # the other node leaves: n1 is still the laggard
                await asyncio.sleep(0.2)
                assert d.mesh.applied_everywhere < mine
            finally:
                await ws.stop()
                await raw.close()

    asyncio.run(asyncio.wait_for(main(), 60))
