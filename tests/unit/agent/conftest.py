"""Fixtures for the agent API tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .agentserver import ServerThread, make_ctx


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The default agent app (system routes only) for node "manager1"."""
    srv = ServerThread(make_ctx(tmp_path_factory.mktemp("api"))).start()
    try:
        yield srv
    finally:
        srv.stop()
