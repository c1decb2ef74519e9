"""The swarm's PKI: cluster root CA, node certificates, peer identity checks and TLS contexts.

Semantics follow SwarmKit's ``ca`` package:

* ``swarm init`` creates a self-signed ECDSA P-256 root CA (CN ``swarm-ca``, 20 years). Its private key
  lives in the replicated cluster state (:meth:`RootCA.to_state`), which the Raft log encrypts at rest;
  it is never written to the certificates directory.
* Every node holds a certificate issued by that CA with its identity in the subject: CN = node id,
  OU = role (``swarm-manager`` | ``swarm-worker``), O = cluster id. Only the public key of a CSR is used;
  everything else comes from the manager's decision, so a node cannot ask for a role.
* Node certificates last 90 days and are renewed once 50% of their validity has elapsed (SwarmKit picks a
  random point between 50% and 80% to avoid a renewal stampede: :func:`renewal_fraction`).
* Node-to-node traffic is mutual TLS (TLS 1.2+). Peers are addressed by IP, so host names are not checked;
  identity is the chain to our root (OpenSSL verifies it in every handshake: our TLS contexts trust only
  the cluster root) plus the CN/OU/O checks of :func:`require_role`, which the Raft
  transport and dispatcher run on every accepted connection: a worker certificate chains fine but must
  never reach a manager-only endpoint.

This module only *reads* certificates (:mod:`agents.pki.der`) and builds TLS contexts (:mod:`ssl`):
it never imports ``cryptography``, which would cost every agent ~11 MB for good. Creating keys and
signing run in a short-lived subprocess: :mod:`agents.pki.client` (the agent), :mod:`agents.pki.signing`
(what that process and the tests run).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import random
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from agents.manager.keys import (
    CertPaths,
    DEKError,
    cert_paths,
    load_node_credentials,
    load_or_create_dek,
    load_root_ca_cert,
    save_node_credentials,
    save_root_ca_cert,
)
from agents.manager.tokens import (
    CAPinError,
    InvalidJoinTokenError,
    JoinTokenError,
    JoinTokens,
    ParsedToken,
    Role,
    ca_digest,
    new_id,
    parse_token,
    pin_ca,
    verify_token,
)
from agents.pki import der
from agents.pki.der import Certificate

__all__ = [
    "CERT_BACKDATE",
    "DEFAULT_NODE_CERT_EXPIRY",
    "MIN_NODE_CERT_EXPIRY",
    "ROOT_CA_CN",
    "ROOT_CA_VALIDITY",
    "CAPinError",
    "CertPaths",
    "Certificate",
    "DEKError",
    "InvalidJoinTokenError",
    "JoinTokenError",
    "JoinTokens",
    "NodeCredentials",
    "ParsedToken",
    "PeerIdentity",
    "PermissionDeniedError",
    "Role",
    "RootCA",
    "bootstrap_client_context",
    "ca_digest",
    "cert_paths",
    "client_context",
    "identity_of",
    "load_certificate",
    "load_or_create_dek",
    "needs_renewal",
    "new_id",
    "parse_token",
    "peer_certificate",
    "peer_role",
    "pin_ca",
    "renewal_fraction",
    "renewal_time",
    "require_role",
    "server_context",
    "verify_token",
]

ROOT_CA_CN = "swarm-ca"
ROOT_CA_VALIDITY = _dt.timedelta(seconds=630720000)  # SwarmKit's RootCAExpiration: 20 years
DEFAULT_NODE_CERT_EXPIRY = _dt.timedelta(days=90)  # SwarmKit's DefaultNodeCertExpiration (2160h)
MIN_NODE_CERT_EXPIRY = _dt.timedelta(hours=1)  # SwarmKit's MinNodeCertExpiration
CERT_BACKDATE = _dt.timedelta(hours=1)
"""Certificates start an hour in the past so that a peer whose clock lags a little still accepts them."""
RENEW_LOWER = 0.5
RENEW_UPPER = 0.8


class PermissionDeniedError(PermissionError):
    """A peer's certificate does not grant what it asks for (SwarmKit: ``codes.PermissionDenied``)."""

    code = "PermissionDenied"

    def __init__(self, desc: str) -> None:
        self.desc = desc
        super().__init__(f"Permission denied: {desc}")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def load_certificate(cert: Certificate | bytes | str) -> Certificate:
    """A parsed certificate from PEM (the first ``CERTIFICATE`` block) or DER; ``ValueError`` if malformed."""
    if isinstance(cert, Certificate):
        return cert
    data = cert.encode() if isinstance(cert, str) else cert
    if data.lstrip().startswith(b"-----BEGIN"):
        data = der.pem_to_der(data)
    return der.parse_certificate(data)


# ----------------------------------------------------------------------------------------------------- RootCA


@dataclass(frozen=True, eq=False)
class RootCA:
    """The cluster root CA. ``key_pem`` is present only where the CA signs (managers, from cluster state).

    Signing happens out of process (:func:`agents.pki.client.issue`); this only holds and reads the PEMs.
    """

    cert_pem: bytes
    key_pem: bytes | None = None
    cluster_id: str | None = None

    @classmethod
    def from_pem(
        cls, cert_pem: bytes | str, key_pem: bytes | str | None = None, cluster_id: str | None = None
    ) -> RootCA:
        """Load and check: a self-issued CA certificate (``ValueError`` otherwise).

        The self-signature and that ``key_pem`` matches are checked where they matter, by the signing
        tool before it signs; peers verify the chain in every TLS handshake.
        """
        c = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
        k = key_pem.encode() if isinstance(key_pem, str) else key_pem
        ca = cls(c, k, cluster_id)
        cert = ca.cert
        if not cert.is_ca:
            raise ValueError("root CA certificate is not a CA certificate")
        if cert.issuer_der != cert.subject_der:
            raise ValueError("root CA certificate is not self-signed")
        if k is not None and not der.pem_blocks(k, "PRIVATE KEY"):
            raise ValueError("root CA key is not a PKCS#8 PEM private key")
        return ca

    @cached_property
    def cert(self) -> Certificate:
        return load_certificate(self.cert_pem)

    @property
    def can_sign(self) -> bool:
        return self.key_pem is not None

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the CA certificate (DER): what join tokens carry."""
        return ca_digest(self.cert_pem)

    def to_state(self) -> dict[str, str]:
        """The cluster-state record (Docker API ``Cluster.RootCA`` names); holds the CA key, if any."""
        out = {"CACert": self.cert_pem.decode(), "CACertHash": self.digest}
        if self.key_pem is not None:
            out["CAKey"] = self.key_pem.decode()
        return out

    @classmethod
    def from_state(cls, state: dict[str, str], cluster_id: str | None = None) -> RootCA:
        return cls.from_pem(state["CACert"], state.get("CAKey"), cluster_id)

    def public(self) -> RootCA:
        """The same CA without its key: what is handed to joining nodes."""
        return RootCA(self.cert_pem, None, self.cluster_id)

    def save(self, state_dir: str | Path) -> Path:
        """Write the CA *certificate* (never the key) to ``swarm-root-ca.crt``."""
        return save_root_ca_cert(state_dir, self.cert_pem)

    @classmethod
    def load(cls, state_dir: str | Path) -> RootCA:
        return cls.from_pem(load_root_ca_cert(state_dir))


# -------------------------------------------------------------------------------------------- node identity


class PeerIdentity(NamedTuple):
    """Who a certificate says its holder is."""

    node_id: str
    role: Role
    cluster_id: str


def _single(cert: Certificate, oid: str, what: str) -> str:
    values = cert.subject_values(oid)
    if len(values) != 1:
        raise PermissionDeniedError(f"remote certificate must carry exactly one {what}")
    return values[0]


def identity_of(cert: Certificate | bytes | str) -> PeerIdentity:
    """Parse CN/OU/O; exactly one of each, and a known role, or :class:`PermissionDeniedError`."""
    c = load_certificate(cert)
    ou = _single(c, der.OID_ORGANIZATIONAL_UNIT, "role (OU)")
    try:
        role = Role(ou)
    except ValueError:
        raise PermissionDeniedError(f"remote certificate has unknown role {ou!r}") from None
    return PeerIdentity(
        node_id=_single(c, der.OID_COMMON_NAME, "node id (CN)"),
        role=role,
        cluster_id=_single(c, der.OID_ORGANIZATION, "organization (O)"),
    )


@dataclass(frozen=True, eq=False)
class NodeCredentials:
    """This node's certificate and private key (PEM)."""

    cert_pem: bytes
    key_pem: bytes

    @cached_property
    def cert(self) -> Certificate:
        return load_certificate(self.cert_pem)

    @cached_property
    def identity(self) -> PeerIdentity:
        return identity_of(self.cert)

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    @property
    def role(self) -> Role:
        return self.identity.role

    @property
    def cluster_id(self) -> str:
        return self.identity.cluster_id

    def save(self, state_dir: str | Path) -> CertPaths:
        """Atomically store cert and key (0600), keeping a Raft DEK readable across the key change."""
        return save_node_credentials(state_dir, self.cert_pem, self.key_pem)

    @classmethod
    def load(cls, state_dir: str | Path) -> NodeCredentials:
        cert_pem, key_pem = load_node_credentials(state_dir)
        return cls(cert_pem, key_pem)


def renewal_fraction(rng: random.Random | None = None) -> float:
    """A random point in [50%, 80%) of a certificate's lifetime, to spread renewals as SwarmKit does."""
    return (rng or random.SystemRandom()).uniform(RENEW_LOWER, RENEW_UPPER)


def renewal_time(cert: Certificate | bytes | str, fraction: float = RENEW_LOWER) -> _dt.datetime:
    """When to renew: ``fraction`` of the validity period after ``notBefore``."""
    c = load_certificate(cert)
    return c.not_before + (c.not_after - c.not_before) * fraction


def needs_renewal(
    cert: Certificate | bytes | str | NodeCredentials,
    now: _dt.datetime | None = None,
    *,
    fraction: float = RENEW_LOWER,
) -> bool:
    """True once ``fraction`` (default half) of the validity has elapsed, or the certificate has expired.

    With the default, a 90-day certificate is renewed when less than 45 days are left; pass
    ``fraction=renewal_fraction()`` (chosen once per certificate) for SwarmKit's randomised point.
    """
    c = cert.cert if isinstance(cert, NodeCredentials) else load_certificate(cert)
    t = now or _now()
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t >= c.not_after or t >= renewal_time(c, fraction)


# ----------------------------------------------------------------------------------------- peer authorization


def peer_certificate(obj: Any) -> Certificate | None:
    """The peer's leaf certificate from an ``SSLObject``/``SSLSocket``, an asyncio writer or transport,
    a certificate, or DER/PEM bytes; ``None`` if the peer sent none."""
    if obj is None:
        return None
    if isinstance(obj, Certificate | bytes | str):
        return load_certificate(obj)
    if isinstance(obj, NodeCredentials):
        return obj.cert
    if isinstance(obj, asyncio.StreamWriter | asyncio.BaseTransport):
        obj = obj.get_extra_info("ssl_object")
        if obj is None:
            raise PermissionDeniedError("request is not using TLS")
    if isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        raw = obj.getpeercert(binary_form=True)
        return None if raw is None else der.parse_certificate(raw)
    raise TypeError(f"cannot get a peer certificate from {type(obj).__name__}")


def peer_role(obj: Any) -> Role:
    """The role written in the peer's certificate; :class:`PermissionDeniedError` if there is none.

    This trusts the certificate as given: use it only on connections whose chain TLS has verified.
    """
    cert = peer_certificate(obj)
    if cert is None:
        raise PermissionDeniedError("no client certificates in request")
    return identity_of(cert).role


def require_role(
    cert: Any,
    role: Role | str,
    *,
    cluster_id: str | None = None,
    node_id: str | None = None,
) -> PeerIdentity:
    """Authorize a peer for an endpoint reserved to ``role``; returns its identity.

    ``cert`` is anything :func:`peer_certificate` accepts; ``cluster_id`` pins the organization and
    ``node_id`` the node the peer claims to be (e.g. the Raft member id in its messages). Anything else
    raises :class:`PermissionDeniedError` with SwarmKit's wording.

    The chain is *not* checked here: every listener of ours is built by :func:`server_context` with the
    cluster root as its only trust anchor, so OpenSSL has already refused, during the handshake, any
    client certificate that is not signed by that root or not within its validity period (also on the
    control port, where a certificate is optional but one that is sent must verify). Only call this on
    such connections.
    """
    c = peer_certificate(cert)
    if c is None:
        raise PermissionDeniedError("no client certificates in request")
    ident = identity_of(c)
    want = Role.parse(role)
    if ident.role is not want:
        raise PermissionDeniedError(f"remote certificate not part of OUs: [{want.value}]")
    if cluster_id is not None and ident.cluster_id != cluster_id:
        raise PermissionDeniedError(f"remote certificate not part of organization: {cluster_id}")
    if node_id is not None and ident.node_id != node_id:
        raise PermissionDeniedError(f"remote certificate is for node {ident.node_id}, not {node_id}")
    return ident


# ----------------------------------------------------------------------------------------------- TLS contexts


@contextlib.contextmanager
def _pem_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """Paths OpenSSL can read the credentials from without the key touching a disk (memfd on Linux)."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fds: list[int] = []
        try:
            for data in (cert_pem, key_pem):
                fd = os.memfd_create("labagent-tls", os.MFD_CLOEXEC)
                fds.append(fd)
                os.write(fd, data)
            yield (f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="labagent-tls-") as d:  # created 0700
        cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield (cert_path, key_path)


def _ca_pem(root_ca: RootCA | bytes | str) -> str:
    if isinstance(root_ca, RootCA):
        return root_ca.cert_pem.decode()
    return root_ca if isinstance(root_ca, str) else root_ca.decode()


def _base(
    purpose: ssl.Purpose, node_creds: NodeCredentials | None, root_ca: RootCA | bytes | str | None
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if node_creds is not None:
        with _pem_files(node_creds.cert_pem, node_creds.key_pem) as (cert_path, key_path):
            ctx.load_cert_chain(cert_path, key_path)
    if root_ca is not None:
        ctx.load_verify_locations(cadata=_ca_pem(root_ca))
    return ctx


def server_context(
    node_creds: NodeCredentials, root_ca: RootCA | bytes | str, require_client_cert: bool
) -> ssl.SSLContext:
    """Listening side: present our certificate; verify client certificates against ``root_ca``.

    ``require_client_cert=False`` (CERT_OPTIONAL) is only for the join/CA endpoint, which nodes without a
    certificate must reach; a client certificate that *is* sent must still chain to our root. Everything
    else (Raft, dispatcher) uses ``True`` and then authorizes with :func:`require_role`.
    """
    ctx = _base(ssl.Purpose.CLIENT_AUTH, node_creds, root_ca)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(node_creds: NodeCredentials | None, root_ca: RootCA | bytes | str) -> ssl.SSLContext:
    """Dialing side: the server must chain to ``root_ca``; present our certificate if we have one.

    Host names are not checked (peers are addressed by IP); authorize the server with :func:`require_role`
    on the connection when its role matters.
    """
    ctx = _base(ssl.Purpose.SERVER_AUTH, node_creds, root_ca)
    ctx.check_hostname = False  # must precede verify_mode; chain verification stays on
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def bootstrap_client_context() -> ssl.SSLContext:
    """Unverified TLS for a joining node's *first* request only: fetching the root CA.

    Nothing learnt over it may be trusted until :func:`pin_ca` has matched the returned CA against the join
    token's digest; every later connection uses :func:`client_context` with the pinned CA.
    """
    ctx = _base(ssl.Purpose.SERVER_AUTH, None, None)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
