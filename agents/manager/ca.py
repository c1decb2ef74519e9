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
  identity is the chain to our root plus the CN/OU/O checks of :func:`require_role`, which the Raft
  transport and dispatcher run on every accepted connection: a worker certificate chains fine but must
  never reach a manager-only endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import random
import re
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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

__all__ = [
    "CERT_BACKDATE",
    "DEFAULT_NODE_CERT_EXPIRY",
    "MIN_NODE_CERT_EXPIRY",
    "ROOT_CA_CN",
    "ROOT_CA_VALIDITY",
    "CAPinError",
    "CertPaths",
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
    "key_to_pem",
    "load_or_create_dek",
    "make_csr",
    "needs_renewal",
    "new_id",
    "new_node_key",
    "parse_token",
    "peer_certificate",
    "peer_role",
    "pin_ca",
    "renewal_fraction",
    "renewal_time",
    "require_role",
    "server_context",
    "verify_chain",
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

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class PermissionDeniedError(PermissionError):
    """A peer's certificate does not grant what it asks for (SwarmKit: ``codes.PermissionDenied``)."""

    code = "PermissionDenied"

    def __init__(self, desc: str) -> None:
        self.desc = desc
        super().__init__(f"Permission denied: {desc}")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _check_name(kind: str, value: str) -> str:
    """Node and cluster ids go into certificate subjects: keep them to a safe, non-empty alphabet."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(f"invalid {kind} {value!r}")
    return value


# ------------------------------------------------------------------------------------------------ keys & CSRs


def new_node_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key: cheap to generate and to handshake with, as SwarmKit uses."""
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKeyTypes) -> bytes:
    """Unencrypted PKCS#8 PEM (the file itself is 0600; see :mod:`agents.manager.keys`)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_csr(key: ec.EllipticCurvePrivateKey | bytes) -> bytes:
    """A CSR (PEM) proving possession of ``key``; its subject is empty because the manager decides it."""
    k = serialization.load_pem_private_key(key, password=None) if isinstance(key, bytes) else key
    if not isinstance(k, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError("node keys are ECDSA (or RSA)")
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(k, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _acceptable_public_key(pub: Any) -> CertificatePublicKeyTypes:
    if isinstance(pub, ec.EllipticCurvePublicKey):
        if pub.curve.name not in ("secp256r1", "secp384r1"):
            raise ValueError(f"unsupported EC curve {pub.curve.name}")
        return pub
    if isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        return pub
    raise ValueError(f"unsupported public key type {type(pub).__name__}")


def _public_key_from(
    request: bytes | str | x509.CertificateSigningRequest | Any,
) -> CertificatePublicKeyTypes:
    """The public key to certify, from a CSR (signature checked) or a public key (object or PEM)."""
    if isinstance(request, str):
        request = request.encode()
    if isinstance(request, bytes):
        if b"CERTIFICATE REQUEST" in request:
            request = x509.load_pem_x509_csr(request)
        else:
            return _acceptable_public_key(serialization.load_pem_public_key(request))
    if isinstance(request, x509.CertificateSigningRequest):
        if not request.is_signature_valid:
            raise ValueError("certificate signing request has an invalid signature")
        return _acceptable_public_key(request.public_key())
    return _acceptable_public_key(request)


# ----------------------------------------------------------------------------------------------------- RootCA


def _load_cert(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = cert.encode() if isinstance(cert, str) else cert
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


@dataclass(frozen=True, eq=False)
class RootCA:
    """The cluster root CA. ``key_pem`` is present only where the CA signs (managers, from cluster state)."""

    cert_pem: bytes
    key_pem: bytes | None = None
    cluster_id: str | None = None

    @classmethod
    def create(cls, cluster_id: str | None = None, *, now: _dt.datetime | None = None) -> RootCA:
        """A new self-signed root for ``swarm init``: ECDSA P-256, CN ``swarm-ca``, valid 20 years."""
        if cluster_id is not None:
            _check_name("cluster id", cluster_id)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ROOT_CA_CN)])
        start = (now or _now()).replace(microsecond=0) - CERT_BACKDATE
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + ROOT_CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key), cluster_id)

    @classmethod
    def from_pem(
        cls, cert_pem: bytes | str, key_pem: bytes | str | None = None, cluster_id: str | None = None
    ) -> RootCA:
        """Load and validate: a self-signed CA certificate and, if given, the matching private key."""
        c = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
        k = key_pem.encode() if isinstance(key_pem, str) else key_pem
        ca = cls(c, k, cluster_id)
        cert = ca.cert
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ValueError("root CA certificate is not a CA certificate")
        try:
            cert.verify_directly_issued_by(cert)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise ValueError("root CA certificate is not self-signed") from e
        if k is not None:
            fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            if ca.private_key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
                raise ValueError("root CA key does not match its certificate")
        return ca

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @cached_property
    def private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        if self.key_pem is None:
            raise ValueError("this node holds no root CA key: only managers sign certificates")
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError("root CA key must be ECDSA or RSA")
        return key

    @property
    def can_sign(self) -> bool:
        return self.key_pem is not None

    @cached_property
    def digest(self) -> str:
        """``sha256:<hex>`` of the CA certificate (DER): what join tokens carry."""
        return ca_digest(self.cert_pem)

    def issue(
        self,
        request: bytes | str | x509.CertificateSigningRequest | CertificatePublicKeyTypes,
        node_id: str,
        role: Role | str,
        cluster_id: str | None = None,
        expiry: _dt.timedelta = DEFAULT_NODE_CERT_EXPIRY,
        *,
        now: _dt.datetime | None = None,
    ) -> bytes:
        """Sign a node certificate (PEM) for the public key in ``request`` (a CSR or a public key).

        Identity comes only from the arguments (CN node id, OU role, O cluster id); the CSR contributes
        nothing but its public key, as SwarmKit's CSR whitelist does.
        """
        _check_name("node id", node_id)
        r = Role.parse(role)
        org = cluster_id if cluster_id is not None else self.cluster_id
        if org is None:
            raise ValueError("a cluster id is needed for the certificate's organization")
        _check_name("cluster id", org)
        if expiry < MIN_NODE_CERT_EXPIRY:
            raise ValueError(f"certificate expiry must be at least {MIN_NODE_CERT_EXPIRY}")
        pub = _public_key_from(request)
        ca_cert, ca_key = self.cert, self.private_key
        t = (now or _now()).replace(microsecond=0)  # X.509 times have whole seconds
        start = max(t - CERT_BACKDATE, ca_cert.not_valid_before_utc)
        end = min(t + expiry, ca_cert.not_valid_after_utc)  # never outlive the issuer
        sans: list[x509.GeneralName] = [x509.DNSName(r.value), x509.DNSName(node_id)]
        if r is Role.MANAGER:
            sans.append(x509.DNSName(ROOT_CA_CN))  # managers also serve the CA endpoint, as in SwarmKit
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, r.value),
                        x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                    ]
                )
            )
            .issuer_name(ca_cert.subject)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def issue_credentials(
        self,
        node_id: str,
        role: Role | str,
        cluster_id: str | None = None,
        expiry: _dt.timedelta = DEFAULT_NODE_CERT_EXPIRY,
    ) -> NodeCredentials:
        """Key + certificate in one go (``swarm init`` for the first manager, and tests)."""
        key = new_node_key()
        return NodeCredentials(
            self.issue(key.public_key(), node_id, role, cluster_id, expiry), key_to_pem(key)
        )

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


def _single(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        raise PermissionDeniedError(f"remote certificate must carry exactly one {what}")
    value = attrs[0].value
    return value.decode() if isinstance(value, bytes) else value


def identity_of(cert: x509.Certificate | bytes | str) -> PeerIdentity:
    """Parse CN/OU/O; exactly one of each, and a known role, or :class:`PermissionDeniedError`."""
    c = _load_cert(cert)
    ou = _single(c, NameOID.ORGANIZATIONAL_UNIT_NAME, "role (OU)")
    try:
        role = Role(ou)
    except ValueError:
        raise PermissionDeniedError(f"remote certificate has unknown role {ou!r}") from None
    return PeerIdentity(
        node_id=_single(c, NameOID.COMMON_NAME, "node id (CN)"),
        role=role,
        cluster_id=_single(c, NameOID.ORGANIZATION_NAME, "organization (O)"),
    )


@dataclass(frozen=True, eq=False)
class NodeCredentials:
    """This node's certificate and private key (PEM)."""

    cert_pem: bytes
    key_pem: bytes

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

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


def renewal_time(cert: x509.Certificate | bytes | str, fraction: float = RENEW_LOWER) -> _dt.datetime:
    """When to renew: ``fraction`` of the validity period after ``notBefore``."""
    c = _load_cert(cert)
    start, end = c.not_valid_before_utc, c.not_valid_after_utc
    return start + (end - start) * fraction


def needs_renewal(
    cert: x509.Certificate | bytes | str | NodeCredentials,
    now: _dt.datetime | None = None,
    *,
    fraction: float = RENEW_LOWER,
) -> bool:
    """True once ``fraction`` (default half) of the validity has elapsed, or the certificate has expired.

    With the default, a 90-day certificate is renewed when less than 45 days are left; pass
    ``fraction=renewal_fraction()`` (chosen once per certificate) for SwarmKit's randomised point.
    """
    c = cert.cert if isinstance(cert, NodeCredentials) else _load_cert(cert)
    t = now or _now()
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.UTC)
    return t >= c.not_valid_after_utc or t >= renewal_time(c, fraction)


# ----------------------------------------------------------------------------------------- peer authorization


def peer_certificate(obj: Any) -> x509.Certificate | None:
    """The peer's leaf certificate from an ``SSLObject``/``SSLSocket``, an asyncio writer or transport,
    a certificate, or DER/PEM bytes; ``None`` if the peer sent none."""
    if obj is None:
        return None
    if isinstance(obj, x509.Certificate | bytes | str):
        return _load_cert(obj)
    if isinstance(obj, NodeCredentials):
        return obj.cert
    if isinstance(obj, asyncio.StreamWriter | asyncio.BaseTransport):
        obj = obj.get_extra_info("ssl_object")
        if obj is None:
            raise PermissionDeniedError("request is not using TLS")
    if isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        der = obj.getpeercert(binary_form=True)
        return None if der is None else x509.load_der_x509_certificate(der)
    raise TypeError(f"cannot get a peer certificate from {type(obj).__name__}")


def peer_role(obj: Any) -> Role:
    """The role written in the peer's certificate; :class:`PermissionDeniedError` if there is none.

    This trusts the certificate as given: use it on connections whose chain TLS has verified, or call
    :func:`require_role` with ``root_ca``.
    """
    cert = peer_certificate(obj)
    if cert is None:
        raise PermissionDeniedError("no client certificates in request")
    return identity_of(cert).role


def verify_chain(
    cert: x509.Certificate | bytes | str, root_ca: RootCA | bytes | str, now: _dt.datetime | None = None
) -> None:
    """Check that ``cert`` was signed by our root, is a leaf and is currently valid."""
    c = _load_cert(cert)
    root = root_ca if isinstance(root_ca, RootCA) else RootCA.from_pem(root_ca)
    if c.issuer != root.cert.subject:
        raise PermissionDeniedError("remote certificate was not issued by the cluster root CA")
    try:
        c.verify_directly_issued_by(root.cert)
    except (ValueError, TypeError, InvalidSignature):
        raise PermissionDeniedError("remote certificate was not issued by the cluster root CA") from None
    try:
        if c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise PermissionDeniedError("remote certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    t = now or _now()
    if not c.not_valid_before_utc <= t <= c.not_valid_after_utc:
        raise PermissionDeniedError("remote certificate is expired or not yet valid")


def require_role(
    cert: Any,
    role: Role | str,
    *,
    root_ca: RootCA | bytes | str | None = None,
    cluster_id: str | None = None,
    node_id: str | None = None,
    now: _dt.datetime | None = None,
) -> PeerIdentity:
    """Authorize a peer for an endpoint reserved to ``role``; returns its identity.

    ``cert`` is anything :func:`peer_certificate` accepts. With ``root_ca`` the chain is re-checked (needed
    where TLS verification was optional); ``cluster_id`` pins the organization and ``node_id`` the node the
    peer claims to be (e.g. the Raft member id in its messages). Anything else raises
    :class:`PermissionDeniedError` with SwarmKit's wording.
    """
    c = peer_certificate(cert)
    if c is None:
        raise PermissionDeniedError("no client certificates in request")
    if root_ca is not None:
        verify_chain(c, root_ca, now)
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
