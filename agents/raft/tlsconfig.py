"""TLS contexts for Raft members: mutual TLS, TLS 1.2+, identity = a certificate chain to the cluster CA.

Peers are addressed by IP and their addresses change as labs are rebuilt, so host names are not checked;
what is checked, in both directions, is that the other side holds a certificate issued by our CA.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_context", "server_context"]

StrPath = str | Path


def _base(purpose: int, cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(cafile=str(ca))
    return ctx


def server_context(cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    """Listening side: present ``cert``, and require a client certificate chaining to ``ca``."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    """Dialing side: present ``cert``, and require the server's certificate to chain to ``ca``."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
    ctx.check_hostname = False  # must be turned off before verify_mode may change; CA checking stays on
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
