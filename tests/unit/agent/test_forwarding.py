"""A follower forwarding to a leader it cannot reach (halted, cut off): it waits out the election for a
while and then answers Docker's "no leader" text, instead of hanging on a dead address."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aiohttp.test_utils import make_mocked_request

from agents.api import forwarding
from agents.api.errors import Unavailable
from agents.manager.errors import NO_LEADER_MSG


class FakeManager:
    """What `forward` reads of a Manager: who leads (one answer per call) and since when nobody does."""

    def __init__(self, leaders: list[str | None], leaderless_for: float = 0.0) -> None:
        self.leaders = leaders
        self.calls = 0
        self.election_timeout = 0.1
        self._leaderless_for = leaderless_for

    def leader_control_addr(self) -> str | None:
        leader = self.leaders[min(self.calls, len(self.leaders) - 1)]
        self.calls += 1
        return leader

    def leaderless_for(self) -> float:
        return self._leaderless_for


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def forward(manager: FakeManager, method: str = "GET") -> float:
    """Run `forwarding.forward`; expect Docker's "no leader" 503; return how long it took."""

    async def main() -> float:
        request = make_mocked_request(method, "/v1.45/nodes")
        t0 = time.monotonic()
        with pytest.raises(Unavailable) as info:
            await forwarding.forward(request, object(), manager)  # type: ignore[arg-type]
        assert (info.value.status, info.value.message) == (503, NO_LEADER_MSG)
        return time.monotonic() - t0

    return asyncio.run(main())


@pytest.fixture(autouse=True)
def no_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarding, "_client_tls", lambda swarm: None)


def test_quorum_lost_answers_at_once() -> None:
    assert NO_LEADER_MSG.startswith("rpc error: code = Unknown desc = The swarm does not have a leader.")
    assert forward(FakeManager([None], leaderless_for=5.0)) < 0.5


def test_unreachable_leader_is_given_up_after_a_few_election_timeouts() -> None:
    manager = FakeManager([f"127.0.0.1:{closed_port()}"])
    took = forward(manager)
    assert forwarding.MIN_LEADER_WAIT - 0.5 < took < forwarding.MIN_LEADER_WAIT + 2
    assert manager.calls > 3  # it kept asking who leads while it retried


def test_an_election_under_way_is_waited_for_then_the_new_leader_asked() -> None:
    port = closed_port()
    manager = FakeManager([f"127.0.0.1:{port}", None, None, None, f"127.0.0.1:{port}"])
    forward(manager, "POST")  # connecting failed: nothing was sent, so a write is retried too
    assert manager.calls >= 5
