"""Key material on disk: the node's certificate and key, the root CA certificate, the Raft DEK.

Layout (as SwarmKit, under ``<state-dir>/swarm/certificates/``)::

    swarm-root-ca.crt   root CA certificate (public)
    swarm-node.crt      this node's certificate (CN node id, OU role, O cluster id)
    swarm-node.key      this node's private key, mode 0600
    raft-dek            managers only: the Raft log's data encryption key, wrapped, mode 0600

Every file is replaced atomically (temporary file, fsync, rename, directory fsync) so a crash leaves
either the old or the new version, never a torn key. Secret files are *created* with mode 0600, so they
are never readable by others, not even for the instant between creation and chmod.

The DEK encrypts the Raft log at rest. It is never stored in the clear: it is wrapped (AES-256-GCM) with a
key-encryption key derived by HKDF either from the node's private key (default) or from the cluster's
unlock key when autolock is on. Because the node key changes on every certificate renewal, the wrap is
keyed by the node key's fingerprint and :func:`save_node_credentials` re-wraps the DEK around the key
replacement, in an order that leaves a usable wrap on disk after a crash at any step.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.pki import der
from agents.pki.aead import AesGcm, hkdf_sha256

__all__ = [
    "DEK_SIZE",
    "CertPaths",
    "DEKError",
    "atomic_write",
    "cert_paths",
    "generate_unlock_key",
    "load_node_credentials",
    "load_or_create_dek",
    "load_root_ca_cert",
    "parse_unlock_key",
    "rewrap_dek",
    "save_node_credentials",
    "save_root_ca_cert",
]

DEK_SIZE = 32
UNLOCK_KEY_PREFIX = "SWMKEY-1-"
_DEK_FILE_VERSION = 1
_HKDF_INFO = b"labagent raft-dek kek v1"
_UNLOCK_ID = "unlock-key"

_Doc = dict[str, Any]


class DEKError(Exception):
    """The Raft DEK exists but cannot be unwrapped (wrong/missing key, or the file is damaged)."""


@dataclass(frozen=True)
class CertPaths:
    """Where one node keeps its TLS material."""

    directory: Path
    root_ca: Path
    node_cert: Path
    node_key: Path
    dek: Path


def cert_paths(state_dir: str | Path) -> CertPaths:
    d = Path(state_dir) / "swarm" / "certificates"
    return CertPaths(
        directory=d,
        root_ca=d / "swarm-root-ca.crt",
        node_cert=d / "swarm-node.crt",
        node_key=d / "swarm-node.key",
        dek=d / "raft-dek",
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create the certificates directory (0700: it holds private keys)."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably; the file is born with ``mode``."""
    p = Path(path)
    _ensure_dir(p.parent)
    tmp = p.with_name(f".{p.name}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask; fchmod is not
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(p.parent)


# ---------------------------------------------------------------------------------------------- certificates


def save_root_ca_cert(state_dir: str | Path, root_ca_pem: bytes) -> Path:
    """Store the (public) root CA certificate; 0644 like SwarmKit, it is not secret."""
    p = cert_paths(state_dir).root_ca
    atomic_write(p, root_ca_pem, 0o644)
    return p


def load_root_ca_cert(state_dir: str | Path) -> bytes:
    return cert_paths(state_dir).root_ca.read_bytes()


def _load_key(key_pem: bytes) -> der.PrivateKeyInfo:
    """The node key's PKCS#8 DER and public key, read without ``cryptography`` (see :mod:`agents.pki`)."""
    return der.parse_private_key(der.pem_to_der(key_pem, "PRIVATE KEY"))


def _key_id(key: der.PrivateKeyInfo) -> str:
    """Fingerprint of the public half: names which node key a DEK wrap belongs to, reveals nothing.

    The SubjectPublicKeyInfo comes from the key itself (its embedded public key), not from the node
    certificate: after a crash between writing a new key and its certificate they differ, and the
    DEK must then be found under the key on disk.
    """
    return "node-key:" + hashlib.sha256(key.spki_der).hexdigest()[:32]


def _key_ikm(key: der.PrivateKeyInfo) -> bytes:
    """The key's PKCS#8 DER: the PEM body as written by the signing tool (unencrypted PKCS#8)."""
    return key.der


def save_node_credentials(state_dir: str | Path, cert_pem: bytes, key_pem: bytes) -> CertPaths:
    """Store this node's certificate and key (key 0600), re-wrapping an existing node-key-wrapped DEK.

    Order matters for crash safety: (1) the DEK gets a wrap under the new key *in addition to* the old one,
    (2) key then certificate are replaced, (3) the old wrap is dropped. After a crash between any two steps
    the key on disk still unwraps the DEK. (The key/certificate pair itself is two renames; a crash between
    them is caught by :func:`load_node_credentials`, which checks that they match.)
    """
    paths = cert_paths(state_dir)
    new_key = _load_key(key_pem)
    dek: bytes | None = None
    doc = _read_dek_doc(paths.dek)
    if doc is not None and doc.get("kek") == "node-key" and paths.node_key.exists():
        old_key = _load_key(paths.node_key.read_bytes())
        dek = _unwrap(doc, _key_id(old_key), _key_ikm(old_key))
        if _key_id(old_key) != _key_id(new_key):
            doc["wraps"][_key_id(new_key)] = _wrap(dek, _key_id(new_key), _key_ikm(new_key))
            atomic_write(paths.dek, _dump(doc))
    atomic_write(paths.node_key, key_pem, 0o600)
    atomic_write(paths.node_cert, cert_pem, 0o644)
    if dek is not None:
        new_doc = _new_doc("node-key")
        new_doc["wraps"][_key_id(new_key)] = _wrap(dek, _key_id(new_key), _key_ikm(new_key))
        atomic_write(paths.dek, _dump(new_doc))
    return paths


def load_node_credentials(state_dir: str | Path) -> tuple[bytes, bytes]:
    """``(cert_pem, key_pem)`` from disk; raises ``ValueError`` if the key does not belong to the cert."""
    paths = cert_paths(state_dir)
    cert_pem = paths.node_cert.read_bytes()
    key_pem = paths.node_key.read_bytes()
    cert = der.parse_certificate(der.pem_to_der(cert_pem))
    if cert.spki_der != _load_key(key_pem).spki_der:
        raise ValueError(f"{paths.node_key} does not match {paths.node_cert}")
    return cert_pem, key_pem


# ------------------------------------------------------------------------------------------------------ DEK


def generate_unlock_key() -> str:
    """A new autolock unlock key in Docker's format (``SWMKEY-1-<base64 of 32 random bytes>``)."""
    return UNLOCK_KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def parse_unlock_key(unlock_key: str) -> bytes:
    """The 32 key bytes of an ``SWMKEY-1-…`` string; ``ValueError`` (Docker's text) if malformed."""
    s = unlock_key.strip()
    if not s.startswith(UNLOCK_KEY_PREFIX):
        raise ValueError("invalid unlock key")
    body = s[len(UNLOCK_KEY_PREFIX) :]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid unlock key") from None
    if len(raw) != 32:
        raise ValueError("invalid unlock key")
    return raw


def _kek(ikm: bytes, salt: bytes) -> bytes:
    return hkdf_sha256(ikm, salt, _HKDF_INFO, 32)


def _wrap(dek: bytes, kek_id: str, ikm: bytes) -> str:
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    ct = AesGcm(_kek(ikm, salt)).encrypt(nonce, dek, kek_id.encode())
    return base64.b64encode(salt + nonce + ct).decode()


def _unwrap(doc: _Doc, kek_id: str, ikm: bytes) -> bytes:
    blob = doc.get("wraps", {}).get(kek_id)
    if blob is None:
        raise DEKError(f"raft DEK is not wrapped for {kek_id.split(':')[0]} (wrong key, or node is locked)")
    try:
        raw = base64.b64decode(blob, validate=True)
        dek = AesGcm(_kek(ikm, raw[:16])).decrypt(raw[16:28], raw[28:], kek_id.encode())
    except Exception as e:  # InvalidTag, binascii.Error, short blob
        raise DEKError("raft DEK cannot be decrypted (wrong key or damaged file)") from e
    if len(dek) != DEK_SIZE:
        raise DEKError("raft DEK has the wrong size")
    return dek


def _new_doc(kek: str) -> _Doc:
    return {"version": _DEK_FILE_VERSION, "kek": kek, "wraps": {}}


def _dump(doc: _Doc) -> bytes:
    return json.dumps(doc, sort_keys=True).encode() + b"\n"


def _read_dek_doc(path: Path) -> _Doc | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise DEKError(f"{path} is damaged") from e
    if (
        not isinstance(doc, dict)
        or doc.get("version") != _DEK_FILE_VERSION
        or doc.get("kek")
        not in (
            "node-key",
            "unlock-key",
        )
    ):
        raise DEKError(f"{path} has an unknown format")
    return doc


def _kek_source(paths: CertPaths, unlock_key: str | None) -> tuple[str, str, bytes]:
    """``(kind, kek_id, ikm)`` for the configured mode."""
    if unlock_key is not None:
        return "unlock-key", _UNLOCK_ID, parse_unlock_key(unlock_key)
    try:
        key = _load_key(paths.node_key.read_bytes())
    except FileNotFoundError:
        raise DEKError(f"no node key at {paths.node_key}: the DEK is wrapped with it") from None
    return "node-key", _key_id(key), _key_ikm(key)


def load_or_create_dek(state_dir: str | Path, *, unlock_key: str | None = None) -> bytes:
    """This manager's 32-byte Raft data encryption key: unwrapped from ``raft-dek``, created on first use.

    ``unlock_key`` (``SWMKEY-1-…``) is required when the DEK was stored with autolock on; otherwise the
    wrap uses the node's private key, which must already exist. Pass the result to the Raft storage's
    ``AesGcmCipher``.
    """
    paths = cert_paths(state_dir)
    doc = _read_dek_doc(paths.dek)
    kind, kek_id, ikm = _kek_source(paths, unlock_key)
    if doc is not None:
        if doc["kek"] != kind:
            raise DEKError(
                "the raft DEK is protected by the unlock key: this node is locked"
                if doc["kek"] == "unlock-key"
                else "the raft DEK is not protected by an unlock key (autolock is off)"
            )
        return _unwrap(doc, kek_id, ikm)
    dek = secrets.token_bytes(DEK_SIZE)
    doc = _new_doc(kind)
    doc["wraps"][kek_id] = _wrap(dek, kek_id, ikm)
    atomic_write(paths.dek, _dump(doc), 0o600)
    return dek


def rewrap_dek(
    state_dir: str | Path, *, unlock_key: str | None = None, new_unlock_key: str | None = None
) -> None:
    """Re-protect the DEK when autolock is switched or its key rotated (``None`` = node-key wrap).

    The DEK itself is unchanged, so the Raft log stays readable.
    """
    paths = cert_paths(state_dir)
    dek = load_or_create_dek(state_dir, unlock_key=unlock_key)
    kind, kek_id, ikm = _kek_source(paths, new_unlock_key)
    doc = _new_doc(kind)
    doc["wraps"][kek_id] = _wrap(dek, kek_id, ikm)
    atomic_write(paths.dek, _dump(doc), 0o600)
