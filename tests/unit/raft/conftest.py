"""Fixtures for the Raft unit tests: throwaway mutual-TLS material (ECDSA, so it is quick to make)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.raft import devcerts, tlsconfig


@dataclass(frozen=True)
class TlsPair:
    server: ssl.SSLContext
    client: ssl.SSLContext


@dataclass(frozen=True)
class Certs:
    """A cluster CA with node certificates, plus a rogue CA (same names, different trust root)."""

    directory: Path
    nodes: dict[int, devcerts.Issued]
    rogue: devcerts.Issued

    def contexts(self, node: int) -> TlsPair:
        i = self.nodes[node]
        return TlsPair(
            tlsconfig.server_context(i.cert, i.key, i.ca), tlsconfig.client_context(i.cert, i.key, i.ca)
        )

    def rogue_contexts(self) -> TlsPair:
        r = self.rogue
        return TlsPair(
            tlsconfig.server_context(r.cert, r.key, r.ca), tlsconfig.client_context(r.cert, r.key, r.ca)
        )


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("raft-certs")
    nodes = devcerts.make_cluster_certs(d / "cluster", [1, 2, 3])
    rogue_ca = devcerts.make_ca(d / "rogue", name="rogue-ca")
    rogue = devcerts.issue(d / "rogue", rogue_ca, "node-2")
    return Certs(d, nodes, rogue)


@pytest.fixture
def tls(certs: Certs) -> Callable[[int], TlsPair]:
    return certs.contexts
