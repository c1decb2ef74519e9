"""Everything that creates keys or signs, with ``cryptography``: run in a short-lived subprocess only.

The long-lived agent never imports this module (it would carry ``cryptography``'s ~11 MB for good); it
asks :mod:`agents.pki.tool` through :mod:`agents.pki.client`, one process per operation. Tests import it
directly to build certificates. Semantics are SwarmKit's (see :mod:`agents.manager.ca` for the rules):
the root is a self-signed ECDSA P-256 CA (CN ``swarm-ca``, 20 years); node certificates take only the
*public key* of a CSR (whose signature proves possession of the key) and get their identity (CN node id,
OU role, O cluster id) from the manager's decision.
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes, PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agents.manager.ca import (
    CERT_BACKDATE,
    DEFAULT_NODE_CERT_EXPIRY,
    MIN_NODE_CERT_EXPIRY,
    ROOT_CA_CN,
    ROOT_CA_VALIDITY,
    NodeCredentials,
    RootCA,
)
from agents.manager.tokens import Role

__all__ = [
    "check_root",
    "create_root",
    "issue",
    "issue_credentials",
    "key_to_pem",
    "make_csr",
    "new_credentials",
    "new_node_key",
    "new_root",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")



def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a node certificate signs and enciphers TLS keys."""
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
        key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )

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


def _load_private_key(key_pem: bytes | str, what: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    data = key_pem.encode() if isinstance(key_pem, str) else key_pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what} is not a usable PEM private key") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{what} must be ECDSA or RSA")
    return key


def make_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | bytes | str) -> bytes:
    """A CSR (PEM) proving possession of ``key``; its subject is empty because the manager decides it."""
    k = _load_private_key(key, "node key") if isinstance(key, bytes | str) else key
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


def _public_key_from(request: bytes | str | x509.CertificateSigningRequest | Any) -> CertificatePublicKeyTypes:
    """The public key to certify, from a CSR (signature checked) or a public key (object or PEM)."""
    if isinstance(request, str):
        request = request.encode()
    if isinstance(request, bytes):
        try:
            if b"CERTIFICATE REQUEST" in request:
                request = x509.load_pem_x509_csr(request)
            else:
                return _acceptable_public_key(serialization.load_pem_public_key(request))
        except (ValueError, TypeError) as e:
            raise ValueError("not a PEM certificate request or public key") from e
    if isinstance(request, x509.CertificateSigningRequest):
        if not request.is_signature_valid:
            raise ValueError("certificate signing request has an invalid signature")
        return _acceptable_public_key(request.public_key())
    return _acceptable_public_key(request)


# ------------------------------------------------------------------------------------------------------ root


def create_root(cluster_id: str | None = None, *, now: _dt.datetime | None = None) -> tuple[bytes, bytes]:
    """A new self-signed root for ``swarm init``: ``(cert_pem, key_pem)``; ECDSA P-256, valid 20 years."""
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
            _key_usage(ca=True),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key)


def check_root(
    cert_pem: bytes | str, key_pem: bytes | str | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None]:
    """A self-signed CA certificate and, if given, its matching private key; ``ValueError`` otherwise."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise ValueError(f"root CA certificate is not a PEM certificate: {e}") from None
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
    if key_pem is None:
        return cert, None
    key = _load_private_key(key_pem, "root CA key")
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != cert.public_key().public_bytes(*fmt):
        raise ValueError("root CA key does not match its certificate")
    return cert, key


# ----------------------------------------------------------------------------------------------------- issue


def issue(
    ca_cert_pem: bytes | str,
    ca_key_pem: bytes | str | None,
    request: bytes | str | x509.CertificateSigningRequest | CertificatePublicKeyTypes,
    node_id: str,
    role: Role | str,
    cluster_id: str,
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
    _check_name("cluster id", cluster_id)
    if expiry < MIN_NODE_CERT_EXPIRY:
        raise ValueError(f"certificate expiry must be at least {MIN_NODE_CERT_EXPIRY}")
    if not ca_key_pem:
        raise ValueError("this node holds no root CA key: only managers sign certificates")
    ca_cert, ca_key = check_root(ca_cert_pem, ca_key_pem)
    assert ca_key is not None
    pub = _public_key_from(request)
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
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_id),
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
            _key_usage(ca=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_credentials(
    ca_cert_pem: bytes | str,
    ca_key_pem: bytes | str | None,
    node_id: str,
    role: Role | str,
    cluster_id: str,
    expiry: _dt.timedelta = DEFAULT_NODE_CERT_EXPIRY,
    *,
    now: _dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """A new node key and its certificate in one go: ``(cert_pem, key_pem)`` (``swarm init``, tests)."""
    key = new_node_key()
    cert = issue(ca_cert_pem, ca_key_pem, key.public_key(), node_id, role, cluster_id, expiry, now=now)
    return cert, key_to_pem(key)


# ------------------------------------------------------------------------------ conveniences (tests, tools)


def new_root(cluster_id: str | None = None) -> RootCA:
    """A new root CA with its key, as :class:`agents.manager.ca.RootCA`."""
    cert_pem, key_pem = create_root(cluster_id)
    return RootCA(cert_pem, key_pem, cluster_id)


def new_credentials(
    root: RootCA,
    node_id: str,
    role: Role | str,
    cluster_id: str | None = None,
    expiry: _dt.timedelta = DEFAULT_NODE_CERT_EXPIRY,
    *,
    now: _dt.datetime | None = None,
) -> NodeCredentials:
    """A new key and certificate from ``root`` (its cluster id unless ``cluster_id`` is given)."""
    org = cluster_id if cluster_id is not None else root.cluster_id
    if org is None:
        raise ValueError("a cluster id is needed for the certificate's organization")
    cert, key = issue_credentials(root.cert_pem, root.key_pem, node_id, role, org, expiry, now=now)
    return NodeCredentials(cert, key)
