"""Swarm join tokens (``SWMTKN-1-<CA digest>-<secret>``) and pinning of the cluster's root CA.

A join token does two jobs, as in Docker Swarm: its *secret* tells the manager which role the joining node
gets, and its *digest* lets the joining node recognise the right root CA before it trusts anything the
manager says (the first connection cannot be verified: the node has no CA yet). So:

* the joining node parses the token (:func:`parse_token`), fetches the root CA over an unverified TLS
  connection and calls :func:`pin_ca`; only a CA whose digest matches is kept;
* the manager compares the presented token with the cluster's current tokens in constant time
  (:func:`verify_token`); a rotated token simply no longer matches.

Encoding as SwarmKit: the digest is the SHA-256 of the root CA certificate written as a base-36 number
left-padded with zeros to 50 characters, the secret is 128 random bits in base 36 padded to 25.
Unlike SwarmKit, which hashes the PEM text it happens to hold, we hash the certificate's DER encoding:
that is canonical, so re-encoding the PEM (line endings, wrapping) never changes the token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from agents.pki import der

__all__ = [
    "CAPinError",
    "InvalidJoinTokenError",
    "JoinTokenError",
    "JoinTokens",
    "ParsedToken",
    "Role",
    "ca_digest",
    "digest_from_der",
    "new_id",
    "parse_token",
    "pin_ca",
    "verify_token",
]

log = logging.getLogger(__name__)

TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = "1"
BASE36_DIGEST_LEN = 50
"""A 256-bit digest needs at most 50 base-36 digits."""
SECRET_LEN = 25
"""128 random bits need at most 25 base-36 digits."""
SECRET_BYTES = 16

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_B36_RE = re.compile(r"[0-9a-z]+")

INVALID_TOKEN_DESC = "A valid join token is necessary to join this cluster"


class Role(StrEnum):
    """A node's role as written in the OU of its certificate (SwarmKit's names)."""

    MANAGER = "swarm-manager"
    WORKER = "swarm-worker"

    @property
    def api_name(self) -> str:
        """The Docker API spelling (``manager`` / ``worker``)."""
        return "manager" if self is Role.MANAGER else "worker"

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        """Accept both the certificate (``swarm-manager``) and the API (``manager``) spelling."""
        if isinstance(value, Role):
            return value
        v = str(value).strip().lower()
        for r in cls:
            if v in (r.value, r.api_name):
                return r
        raise ValueError(f"unknown node role {value!r}")


class JoinTokenError(ValueError):
    """A token that is not a well-formed ``SWMTKN-1-…`` string (Docker: ``invalid join token``)."""

    def __init__(self) -> None:
        super().__init__("invalid join token")


class InvalidJoinTokenError(PermissionError):
    """The manager refuses a join: the token matches neither current token.

    ``code``/``desc`` let the API layer map it to a gRPC-style status; ``str()`` is Docker's full text.
    """

    code = "InvalidArgument"
    desc = INVALID_TOKEN_DESC

    def __init__(self) -> None:
        super().__init__(f"rpc error: code = {self.code} desc = {self.desc}")


class CAPinError(Exception):
    """The root CA a manager handed out is not the one the join token names."""

    def __init__(self, expected_hex: str) -> None:
        self.expected = expected_hex
        super().__init__(f"remote CA does not match fingerprint. Expected: {expected_hex}")


def _to_b36(n: int, width: int) -> str:
    out: list[str] = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36[r])
    return "".join(reversed(out)).rjust(width, "0")


def new_id() -> str:
    """128 random bits in base 36, 25 characters: SwarmKit's format for node ids and token secrets."""
    return _to_b36(int.from_bytes(secrets.token_bytes(SECRET_BYTES), "big"), SECRET_LEN)


def digest_from_der(der: bytes) -> str:
    """``sha256:<hex>`` of a DER-encoded certificate."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def ca_digest(root_ca_pem: bytes | str) -> str:
    """Digest (``sha256:<64 hex>``) of the first certificate in ``root_ca_pem``, hashed as DER."""
    raw = der.pem_to_der(root_ca_pem)
    der.parse_certificate(raw)  # only a well-formed certificate gets a digest
    return digest_from_der(raw)


def _b36_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return _to_b36(int(hexpart, 16), BASE36_DIGEST_LEN)


class ParsedToken(NamedTuple):
    """The two halves of a join token: the CA ``digest`` (``sha256:<hex>``) and the role ``secret``."""

    digest: str
    secret: str


def parse_token(token: str) -> ParsedToken:
    """Split and validate a join token; raises :class:`JoinTokenError` (``invalid join token``)."""
    parts = token.strip().split("-")
    if (
        len(parts) != 4
        or parts[0] != TOKEN_PREFIX
        or parts[1] != TOKEN_VERSION
        or len(parts[2]) != BASE36_DIGEST_LEN
        or len(parts[3]) != SECRET_LEN
        or not _B36_RE.fullmatch(parts[2])
        or not _B36_RE.fullmatch(parts[3])
    ):
        raise JoinTokenError()
    n = int(parts[2], 36)
    if n >= 1 << 256:  # 50 base-36 digits can hold more than 256 bits
        raise JoinTokenError()
    return ParsedToken(f"sha256:{n:064x}", parts[3])


def pin_ca(root_ca_pem: bytes | str, token_or_digest: str) -> str:
    """Check that ``root_ca_pem`` is the CA the token names; returns its digest or raises :class:`CAPinError`.

    Call this on the CA a manager returned *before* using it as a trust anchor: until then the connection
    to the manager is unauthenticated, and this comparison is what makes the downloaded CA trustworthy.
    """
    expected = (
        parse_token(token_or_digest).digest if token_or_digest.startswith(TOKEN_PREFIX) else token_or_digest
    )
    try:
        got = ca_digest(root_ca_pem)
    except ValueError:
        raise CAPinError(expected.removeprefix("sha256:")) from None
    if not hmac.compare_digest(got.encode(), expected.encode()):
        raise CAPinError(expected.removeprefix("sha256:"))
    return got


@dataclass(frozen=True)
class JoinTokens:
    """The cluster's current worker and manager join tokens (Docker API: ``JoinTokens``)."""

    worker: str
    manager: str

    @staticmethod
    def make_token(root_ca_pem: bytes | str) -> str:
        """One fresh token for the given root CA."""
        return f"{TOKEN_PREFIX}-{TOKEN_VERSION}-{_b36_digest(ca_digest(root_ca_pem))}-{new_id()}"

    @classmethod
    def generate(cls, root_ca_pem: bytes | str) -> JoinTokens:
        """Two independent tokens (separate secrets) for a new cluster."""
        return cls(worker=cls.make_token(root_ca_pem), manager=cls.make_token(root_ca_pem))

    def rotate(self, root_ca_pem: bytes | str, *, worker: bool = False, manager: bool = False) -> JoinTokens:
        """New secret(s) for the chosen role(s); the replaced token is refused from then on."""
        return JoinTokens(
            worker=self.make_token(root_ca_pem) if worker else self.worker,
            manager=self.make_token(root_ca_pem) if manager else self.manager,
        )

    def for_role(self, role: Role | str) -> str:
        return self.manager if Role.parse(role) is Role.MANAGER else self.worker

    def to_dict(self) -> dict[str, str]:
        """Docker API / cluster-state shape."""
        return {"Worker": self.worker, "Manager": self.manager}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> JoinTokens:
        return cls(worker=d["Worker"], manager=d["Manager"])


def _redact(token: str) -> str:
    """Enough of a token to correlate log lines, never the secret."""
    parts = token.strip().split("-")
    if len(parts) == 4 and parts[0] == TOKEN_PREFIX:
        return f"{parts[0]}-{parts[1]}-{parts[2][:12]}…-<redacted>"
    return f"<malformed, {len(token)} chars>"


def verify_token(token: str, cluster_tokens: JoinTokens, *, peer: str | None = None) -> Role:
    """The role ``token`` grants, or :class:`InvalidJoinTokenError` (logged) if it matches neither token.

    Both comparisons always run and use :func:`hmac.compare_digest`, so timing reveals neither how much of a
    secret matched nor which role's token was being guessed.
    """
    presented = token.strip().encode()
    is_manager = hmac.compare_digest(presented, cluster_tokens.manager.encode())
    is_worker = hmac.compare_digest(presented, cluster_tokens.worker.encode())
    if is_manager:
        return Role.MANAGER
    if is_worker:
        return Role.WORKER
    log.warning("join refused from %s: invalid join token %s", peer or "unknown peer", _redact(token))
    raise InvalidJoinTokenError()
