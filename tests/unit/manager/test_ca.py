"""The swarm PKI: join tokens, CA pinning, node certificates, peer authorization, mutual TLS, key files, DEK.

Certificates are made in-process with :mod:`agents.pki.signing` (what the signing tool runs); the agent's
side (:mod:`agents.manager.ca`) only reads them. All network traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import random
import re
import ssl
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agents.manager import keys
from agents.manager.ca import (
    DEFAULT_NODE_CERT_EXPIRY,
    CAPinError,
    DEKError,
    InvalidJoinTokenError,
    JoinTokenError,
    JoinTokens,
    NodeCredentials,
    PermissionDeniedError,
    Role,
    RootCA,
    bootstrap_client_context,
    ca_digest,
    cert_paths,
    client_context,
    identity_of,
    load_or_create_dek,
    needs_renewal,
    new_id,
    parse_token,
    peer_certificate,
    peer_role,
    pin_ca,
    renewal_fraction,
    renewal_time,
    require_role,
    server_context,
    verify_token,
)
from agents.pki import client as pkiclient
from agents.pki import signing
from agents.pki.signing import key_to_pem, make_csr, new_node_key

CLUSTER = "clusterid0000000000000001"
DOCKER_INVALID = (
    "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this cluster"
)
TOKEN_RE = re.compile(r"SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}")


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


@pytest.fixture(scope="module")
def ca() -> RootCA:
    return signing.new_root(CLUSTER)


@pytest.fixture(scope="module")
def other_ca() -> RootCA:
    return signing.new_root(CLUSTER)


@pytest.fixture(scope="module")
def mgr1(ca: RootCA) -> NodeCredentials:
    return signing.new_credentials(ca, "manager1", Role.MANAGER)


@pytest.fixture(scope="module")
def mgr2(ca: RootCA) -> NodeCredentials:
    return signing.new_credentials(ca, "manager2", Role.MANAGER)


@pytest.fixture(scope="module")
def worker(ca: RootCA) -> NodeCredentials:
    return signing.new_credentials(ca, "worker1", Role.WORKER)


# --------------------------------------------------------------------------------------------------- tokens


def test_token_format_matches_swarmkit(ca: RootCA) -> None:
    tokens = JoinTokens.generate(ca.cert_pem)
    for t in (tokens.worker, tokens.manager):
        assert TOKEN_RE.fullmatch(t), t
    assert tokens.worker != tokens.manager
    assert tokens.worker.split("-")[2] == tokens.manager.split("-")[2]  # same CA digest
    assert tokens.worker.split("-")[3] != tokens.manager.split("-")[3]  # separate secrets
    der = x509.load_pem_x509_certificate(ca.cert_pem).public_bytes(serialization.Encoding.DER)
    assert ca.cert.der == der
    want = hashlib.sha256(der).hexdigest()
    assert tokens.worker.split("-")[2] == _b36(int(want, 16)).rjust(50, "0")
    assert ca_digest(ca.cert_pem) == ca.digest == "sha256:" + want


def test_parse_valid_token(ca: RootCA) -> None:
    tokens = JoinTokens.generate(ca.cert_pem)
    digest, secret = parse_token(tokens.worker)
    assert digest == ca.digest
    assert secret == tokens.worker.split("-")[3] and len(secret) == 25
    assert parse_token("  " + tokens.worker + "\n").digest == ca.digest  # pasted with whitespace


def test_secret_is_128_bits_padded() -> None:
    ids = {new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 25 and int(i, 36) < 1 << 128 for i in ids)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("SWMTKN", "SWMTKX", 1),  # wrong prefix
        lambda t: t.replace("SWMTKN-1-", "SWMTKN-2-", 1),  # unknown version
        lambda t: t.replace("SWMTKN-1-", "SWMTKN-2-0-", 1),  # SwarmKit's FIPS v2 format: not ours
        lambda t: t[:-1],  # secret too short
        lambda t: t + "0",  # secret too long
        lambda t: "SWMTKN-1-" + t.split("-")[2][1:] + "-" + t.split("-")[3],  # digest too short
        lambda t: t + "-extra",
        lambda t: t.upper(),
        lambda t: t.replace(t.split("-")[3], "!" * 25),
        lambda t: "SWMTKN-1-" + "z" * 50 + "-" + t.split("-")[3],  # > 256 bits
        lambda t: "",
        lambda t: "not a token",
    ],
)
def test_malformed_token_is_docker_invalid_join_token(ca: RootCA, mutate: Callable[[str], str]) -> None:
    token = JoinTokens.generate(ca.cert_pem).worker
    with pytest.raises(JoinTokenError) as ei:
        parse_token(mutate(token))
    assert str(ei.value) == "invalid join token"


def test_wrong_digest_fails_pinning(ca: RootCA, other_ca: RootCA) -> None:
    good = JoinTokens.generate(ca.cert_pem).worker
    assert pin_ca(ca.cert_pem, good) == ca.digest
    # A manager of another cluster (or a man in the middle) hands out its own CA: refused.
    with pytest.raises(CAPinError, match=r"remote CA does not match fingerprint\. Expected: [0-9a-f]{64}"):
        pin_ca(other_ca.cert_pem, good)
    # A token whose digest was altered does not pin the real CA either.
    parts = good.split("-")
    parts[2] = "1kxftv4ofnc6mt30lmgipg6ngf9luhwqopfk1tz6bdmnkubg0e"
    with pytest.raises(CAPinError):
        pin_ca(ca.cert_pem, "-".join(parts))
    with pytest.raises(CAPinError):
        pin_ca(b"garbage", good)


def test_digest_ignores_pem_reformatting(ca: RootCA) -> None:
    crlf = ca.cert_pem.replace(b"\n", b"\r\n")
    assert ca_digest(crlf) == ca.digest


def test_verify_token_roles_and_refusal(ca: RootCA, caplog: pytest.LogCaptureFixture) -> None:
    tokens = JoinTokens.generate(ca.cert_pem)
    assert verify_token(tokens.worker, tokens) is Role.WORKER
    assert verify_token(tokens.manager, tokens) is Role.MANAGER
    wrong = JoinTokens.generate(ca.cert_pem).worker  # right CA, wrong secret
    with caplog.at_level(logging.WARNING, logger="agents.manager.tokens"):
        with pytest.raises(InvalidJoinTokenError) as ei:
            verify_token(wrong, tokens, peer="127.0.0.1:4567")
        with pytest.raises(InvalidJoinTokenError):
            verify_token("garbage", tokens)
    assert str(ei.value) == DOCKER_INVALID
    assert ei.value.code == "InvalidArgument"
    text = caplog.text
    assert "invalid join token" in text and "127.0.0.1:4567" in text
    assert wrong.split("-")[3] not in text  # the guessed secret is never logged


def test_rotation_refuses_old_token(ca: RootCA) -> None:
    tokens = JoinTokens.generate(ca.cert_pem)
    rotated = tokens.rotate(ca.cert_pem, worker=True)
    assert rotated.manager == tokens.manager and rotated.worker != tokens.worker
    with pytest.raises(InvalidJoinTokenError, match="A valid join token is necessary"):
        verify_token(tokens.worker, rotated)
    assert verify_token(rotated.worker, rotated) is Role.WORKER
    assert verify_token(rotated.manager, rotated) is Role.MANAGER
    both = rotated.rotate(ca.cert_pem, worker=True, manager=True)
    with pytest.raises(InvalidJoinTokenError):
        verify_token(rotated.manager, both)
    assert JoinTokens.from_dict(both.to_dict()) == both


def test_token_comparison_is_constant_time(ca: RootCA, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = JoinTokens.generate(ca.cert_pem)
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert verify_token(tokens.worker, tokens) is Role.WORKER
    # Both tokens are always compared, whichever matches, and only through compare_digest.
    assert {b for _, b in calls} == {tokens.worker.encode(), tokens.manager.encode()}
    calls.clear()
    with pytest.raises(InvalidJoinTokenError):
        verify_token("SWMTKN-1-" + "0" * 50 + "-" + "0" * 25, tokens)
    assert len(calls) == 2


# ---------------------------------------------------------------------------------------------- certificates


def test_root_ca_properties(ca: RootCA) -> None:
    c = x509.load_pem_x509_certificate(ca.cert_pem)
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "swarm-ca"
    assert isinstance(c.public_key(), ec.EllipticCurvePublicKey)
    assert c.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    validity = c.not_valid_after_utc - c.not_valid_before_utc
    assert validity == dt.timedelta(days=7300)  # SwarmKit: 630720000s
    assert c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.cert.is_ca and (ca.cert.not_before, ca.cert.not_after) == (c.not_valid_before_utc, c.not_valid_after_utc)
    signing.check_root(ca.cert_pem, ca.key_pem)  # self-signed, key matches
    # Round trip through the cluster state (where the CA key lives).
    state = ca.to_state()
    assert state["CACertHash"] == ca.digest and "PRIVATE KEY" in state["CAKey"]
    again = RootCA.from_state(state, CLUSTER)
    assert again.digest == ca.digest and again.can_sign
    assert not ca.public().can_sign and "CAKey" not in ca.public().to_state()


def test_node_certificate_contents(ca: RootCA) -> None:
    key = new_node_key()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    pem = signing.issue(ca.cert_pem, ca.key_pem, make_csr(key), "node0000000000000000000001", Role.WORKER, CLUSTER,
                        now=now)
    cert = x509.load_pem_x509_certificate(pem)
    subj = cert.subject
    assert subj.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node0000000000000000000001"
    assert subj.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "swarm-worker"
    assert subj.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == CLUSTER
    assert cert.not_valid_after_utc - now == DEFAULT_NODE_CERT_EXPIRY
    assert now - cert.not_valid_before_utc == dt.timedelta(hours=1)  # backdated for clock skew
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    creds = NodeCredentials(pem, key_to_pem(key))
    assert (creds.node_id, creds.role, creds.cluster_id) == (
        "node0000000000000000000001",
        Role.WORKER,
        CLUSTER,
    )


def test_csr_subject_is_ignored_and_signature_checked(ca: RootCA) -> None:
    key = new_node_key()
    evil = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "manager1"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-manager"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    pem = signing.issue(ca.cert_pem, ca.key_pem, evil.public_bytes(serialization.Encoding.PEM), "w9", "worker",
                        CLUSTER)
    ident = NodeCredentials(pem, key_to_pem(key)).identity
    assert (ident.node_id, ident.role) == ("w9", Role.WORKER)
    # A CSR whose signature does not match its key is refused.
    tampered = bytearray(evil.public_bytes(serialization.Encoding.DER))
    tampered[-5] ^= 0xFF
    bad = x509.load_der_x509_csr(bytes(tampered))
    with pytest.raises(ValueError, match="invalid signature"):
        signing.issue(ca.cert_pem, ca.key_pem, bad, "w9", "worker", CLUSTER)
    with pytest.raises(ValueError, match="not a PEM certificate request"):
        signing.issue(ca.cert_pem, ca.key_pem, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA", "w9", "worker", CLUSTER)


@pytest.mark.parametrize("node_id", ["", "a,b", "x\nOU=swarm-manager", "-lead", "ü"])
def test_bad_node_id_refused(ca: RootCA, node_id: str) -> None:
    with pytest.raises(ValueError):
        signing.issue(ca.cert_pem, ca.key_pem, new_node_key().public_key(), node_id, Role.WORKER, CLUSTER)


def test_only_a_ca_with_key_signs(ca: RootCA, other_ca: RootCA) -> None:
    with pytest.raises(ValueError, match="no root CA key"):
        signing.issue(ca.cert_pem, None, new_node_key().public_key(), "n1", Role.WORKER, CLUSTER)
    with pytest.raises(ValueError, match="no root CA key"):  # refused before any process is started
        asyncio.run(pkiclient.issue(ca.public(), make_csr(new_node_key()), "n1", Role.WORKER, CLUSTER,
                                    DEFAULT_NODE_CERT_EXPIRY))
    assert other_ca.key_pem is not None
    with pytest.raises(ValueError, match="does not match"):  # a CA key that is not this CA's
        signing.issue(ca.cert_pem, other_ca.key_pem, new_node_key().public_key(), "n1", Role.WORKER, CLUSTER)


def test_issue_is_fast(ca: RootCA) -> None:
    csr = make_csr(new_node_key())
    signing.issue(ca.cert_pem, ca.key_pem, csr, "warm", Role.WORKER, CLUSTER)
    n = 50
    t0 = time.perf_counter()
    for i in range(n):
        signing.issue(ca.cert_pem, ca.key_pem, csr, f"n{i}", Role.WORKER, CLUSTER)
    per_ms = (time.perf_counter() - t0) * 1000 / n
    print(f"issue from CSR: {per_ms:.2f} ms")
    assert per_ms < 50  # a few ms in practice; generous bound for loaded CI machines


# ------------------------------------------------------------------------------------------------- renewal


def test_renewal_threshold(worker: NodeCredentials) -> None:
    c = worker.cert
    start = c.not_before
    half = start + (c.not_after - start) / 2
    assert renewal_time(c) == half
    assert not needs_renewal(worker, half - dt.timedelta(minutes=1))
    assert needs_renewal(worker, half + dt.timedelta(minutes=1))
    assert needs_renewal(worker.cert_pem, c.not_after + dt.timedelta(seconds=1))  # expired
    assert not needs_renewal(worker)  # just issued
    # SwarmKit's randomised point lies between 50% and 80% of the lifetime.
    rng = random.Random(7)
    fractions = [renewal_fraction(rng) for _ in range(500)]
    assert all(0.5 <= f < 0.8 for f in fractions) and max(fractions) - min(fractions) > 0.2
    f = 0.75
    at = renewal_time(c, f)
    assert not needs_renewal(c, at - dt.timedelta(seconds=1), fraction=f)
    assert needs_renewal(c, at, fraction=f)


# ----------------------------------------------------------------------------------------- authorization


def test_worker_cannot_act_as_manager(ca: RootCA, worker: NodeCredentials, mgr1: NodeCredentials) -> None:
    assert peer_role(worker.cert) is Role.WORKER
    assert peer_role(mgr1.cert_pem) is Role.MANAGER
    with pytest.raises(PermissionDeniedError, match=r"not part of OUs: \[swarm-manager\]"):
        require_role(worker.cert, "swarm-manager")
    ident = require_role(mgr1.cert, "swarm-manager", cluster_id=CLUSTER, node_id="manager1")
    assert ident.node_id == "manager1"


def test_claimed_node_id_and_cluster_must_match(ca: RootCA, mgr1: NodeCredentials) -> None:
    with pytest.raises(PermissionDeniedError, match="not manager2"):
        require_role(mgr1.cert, Role.MANAGER, node_id="manager2")
    with pytest.raises(PermissionDeniedError, match="organization"):
        require_role(mgr1.cert, Role.MANAGER, cluster_id="othercluster")


def test_cert_from_another_ca_refused_at_handshake(ca: RootCA, other_ca: RootCA, mgr1: NodeCredentials) -> None:
    """Same CN/OU/O, same CA subject name: only the signature tells them apart, and OpenSSL checks it in the
    handshake on every listener (require_role does not repeat it), also where client certs are optional."""
    impostor = signing.new_credentials(other_ca, "manager1", Role.MANAGER)
    assert identity_of(impostor.cert) == identity_of(mgr1.cert)
    assert impostor.cert.issuer_der == ca.cert.subject_der
    for required in (True, False):
        out = asyncio.run(
            _exchange(server_context(mgr1, ca, required), client_context(impostor, ca), _manager_only(ca))
        )
        assert out.server_saw == [] and not out.client_got


def test_expired_cert_refused_at_handshake() -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    ca = RootCA(*signing.create_root(CLUSTER, now=past - dt.timedelta(days=1)), CLUSTER)
    mgr1 = signing.new_credentials(ca, "manager1", Role.MANAGER)
    old = signing.new_credentials(ca, "old", Role.MANAGER, expiry=dt.timedelta(hours=1), now=past)
    assert old.cert.not_after < dt.datetime.now(dt.UTC)
    for required in (True, False):  # an expired client certificate
        out = asyncio.run(_exchange(server_context(mgr1, ca, required), client_context(old, ca), _manager_only(ca)))
        assert out.server_saw == [] and not out.client_got
    # An expired server certificate: the dialing side refuses it.
    out = asyncio.run(_exchange(server_context(old, ca, True), client_context(mgr1, ca), lambda w: "x"))
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert "expired" in str(out.client_error)


def test_cert_without_role_refused(ca: RootCA) -> None:
    key = new_node_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(x509.load_pem_x509_certificate(ca.cert_pem).subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .sign(signing.check_root(ca.cert_pem, ca.key_pem)[1], hashes.SHA256())  # type: ignore[arg-type]
    )
    with pytest.raises(PermissionDeniedError, match="exactly one role"):
        peer_role(cert.public_bytes(serialization.Encoding.DER))
    with pytest.raises(PermissionDeniedError, match="exactly one role"):
        peer_role(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(PermissionDeniedError, match="no client certificates"):
        peer_role(None)


# --------------------------------------------------------------------------------------------- mutual TLS


class _Outcome:
    def __init__(self) -> None:
        self.server_saw: list[str] = []  # what the handler decided, one entry per accepted connection
        self.client_got: bytes | None = None
        self.client_error: BaseException | None = None


async def _exchange(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    authorize: Callable[[asyncio.StreamWriter], str],
    request: bytes = b"hello\n",
    reply: Callable[[bytes], bytes] | None = None,
) -> _Outcome:
    out = _Outcome()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                verdict = authorize(writer)
            except PermissionDeniedError as e:
                out.server_saw.append(f"DENIED {e}")
                writer.write(b"DENIED\n")
            else:
                out.server_saw.append(verdict)
                line = await reader.readline()
                writer.write(reply(line) if reply else b"OK " + verdict.encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=client_ctx), 5)
        try:
            writer.write(request)
            await writer.drain()
            out.client_got = await asyncio.wait_for(reader.read(65536), 5)
        finally:
            writer.close()
    except (ssl.SSLError, ConnectionError, OSError) as e:
        out.client_error = e
    await asyncio.sleep(0.05)  # let a failing server-side handshake finish before we look
    server.close()
    await server.wait_closed()
    return out


def _manager_only(ca: RootCA) -> Callable[[asyncio.StreamWriter], str]:
    def check(writer: asyncio.StreamWriter) -> str:
        return require_role(writer, Role.MANAGER, cluster_id=CLUSTER).node_id

    return check


def test_mtls_manager_to_manager(ca: RootCA, mgr1: NodeCredentials, mgr2: NodeCredentials) -> None:
    out = asyncio.run(_exchange(server_context(mgr1, ca, True), client_context(mgr2, ca), _manager_only(ca)))
    assert out.client_error is None, out.client_error
    assert out.server_saw == ["manager2"]
    assert out.client_got == b"OK manager2\n"


def test_mtls_client_checks_server_role(ca: RootCA, mgr1: NodeCredentials, worker: NodeCredentials) -> None:
    """The dialing manager can also tell a worker posing as a Raft peer from a manager."""

    async def run() -> tuple[str, str]:
        roles: list[str] = []
        for server_creds in (mgr1, worker):
            srv = await asyncio.start_server(
                lambda r, w: w.close(), "127.0.0.1", 0, ssl=server_context(server_creds, ca, True)
            )
            port = srv.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(mgr1, ca))
            roles.append(peer_role(writer).value)
            writer.close()
            srv.close()
            await srv.wait_closed()
        return roles[0], roles[1]

    assert asyncio.run(run()) == ("swarm-manager", "swarm-worker")


def test_mtls_worker_rejected_on_manager_endpoint(
    ca: RootCA, mgr1: NodeCredentials, worker: NodeCredentials
) -> None:
    out = asyncio.run(
        _exchange(server_context(mgr1, ca, True), client_context(worker, ca), _manager_only(ca))
    )
    # The worker's chain is fine (TLS succeeds) but the manager-only check turns it away.
    assert len(out.server_saw) == 1 and out.server_saw[0].startswith("DENIED")
    assert "not part of OUs: [swarm-manager]" in out.server_saw[0]
    assert out.client_got == b"DENIED\n"


def test_mtls_no_client_cert(ca: RootCA, mgr1: NodeCredentials) -> None:
    def anyone(writer: asyncio.StreamWriter) -> str:
        return "anonymous" if peer_certificate(writer) is None else peer_role(writer).value

    # Manager-only (CERT_REQUIRED) endpoint: the handshake fails, the handler never runs.
    out = asyncio.run(_exchange(server_context(mgr1, ca, True), client_context(None, ca), anyone))
    assert out.server_saw == []
    assert not out.client_got
    # Join endpoint (CERT_OPTIONAL): a node without a certificate gets in.
    out = asyncio.run(_exchange(server_context(mgr1, ca, False), client_context(None, ca), anyone))
    assert out.server_saw == ["anonymous"]
    assert out.client_got == b"OK anonymous\n"


def test_mtls_foreign_ca_refused_both_ways(ca: RootCA, other_ca: RootCA, mgr1: NodeCredentials) -> None:
    impostor = signing.new_credentials(other_ca, "manager2", Role.MANAGER)
    # Impostor client: refused even by the optional-certificate join endpoint.
    for required in (True, False):
        out = asyncio.run(
            _exchange(
                server_context(mgr1, ca, required), client_context(impostor, other_ca), _manager_only(ca)
            )
        )
        assert out.server_saw == [] and not out.client_got
    # Impostor server: our client refuses it during the handshake.
    out = asyncio.run(
        _exchange(server_context(impostor, other_ca, True), client_context(mgr1, ca), lambda w: "x")
    )
    assert isinstance(out.client_error, ssl.SSLCertVerificationError)
    assert out.server_saw == []


def test_tls_contexts_settings(ca: RootCA, mgr1: NodeCredentials) -> None:
    s_req, s_opt, c = (
        server_context(mgr1, ca, True),
        server_context(mgr1, ca, False),
        client_context(mgr1, ca),
    )
    assert s_req.verify_mode is ssl.CERT_REQUIRED and s_opt.verify_mode is ssl.CERT_OPTIONAL
    assert c.verify_mode is ssl.CERT_REQUIRED and not c.check_hostname
    for ctx in (s_req, s_opt, c):
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_join_flow_pins_ca_and_checks_token(ca: RootCA, mgr1: NodeCredentials, other_ca: RootCA) -> None:
    """A joining node: unverified first contact, pin the CA from the token, then send token + CSR."""
    tokens = JoinTokens.generate(ca.cert_pem)
    issued: list[str] = []

    def join_endpoint(line: bytes) -> bytes:
        if line.startswith(b"GETCA"):
            return ca.cert_pem
        token, csr_b64 = line.split()
        try:
            role = verify_token(token.decode(), tokens)
        except InvalidJoinTokenError as e:
            return str(e).encode()
        node_id = new_id()
        issued.append(node_id)
        return signing.issue(ca.cert_pem, ca.key_pem, base64.b64decode(csr_b64), node_id, role, CLUSTER)

    def anyone(writer: asyncio.StreamWriter) -> str:
        return "-"

    def join(token: str) -> NodeCredentials | str:
        async def run() -> NodeCredentials | str:
            out = await _exchange(
                server_context(mgr1, ca, False), bootstrap_client_context(), anyone, b"GETCA\n", join_endpoint
            )
            assert out.client_got
            pin_ca(out.client_got, token)  # before trusting anything from the manager
            key = new_node_key()
            req = token.encode() + b" " + base64.b64encode(make_csr(key)) + b"\n"
            out = await _exchange(
                server_context(mgr1, ca, False),
                client_context(None, out.client_got),
                anyone,
                req,
                join_endpoint,
            )
            assert out.client_got is not None
            if not out.client_got.startswith(b"-----BEGIN CERTIFICATE"):
                return out.client_got.decode()
            return NodeCredentials(out.client_got, key_to_pem(key))

        return asyncio.run(run())

    creds = join(tokens.worker)
    assert isinstance(creds, NodeCredentials) and creds.role is Role.WORKER and creds.cluster_id == CLUSTER
    creds = join(tokens.manager)
    assert isinstance(creds, NodeCredentials) and creds.role is Role.MANAGER
    # Right CA digest, wrong secret: refused with Docker's text; nothing issued.
    n = len(issued)
    bad = JoinTokens.generate(ca.cert_pem).worker
    assert join(bad) == DOCKER_INVALID
    assert len(issued) == n
    # Token of another cluster: pinning fails before the token is even sent.
    with pytest.raises(CAPinError):
        join(JoinTokens.generate(other_ca.cert_pem).worker)
    assert len(issued) == n


# ------------------------------------------------------------------------------------------------ key files


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_key_files_modes_and_layout(tmp_path: Path, ca: RootCA, mgr1: NodeCredentials) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the key's mode
    try:
        ca.save(tmp_path)
        paths = mgr1.save(tmp_path)
    finally:
        os.umask(old)
    d = tmp_path / "swarm" / "certificates"
    assert paths == cert_paths(tmp_path) and paths.directory == d
    assert {p.name for p in d.iterdir()} == {"swarm-root-ca.crt", "swarm-node.crt", "swarm-node.key"}
    assert _mode(d / "swarm-node.key") == 0o600
    assert _mode(d) == 0o700
    assert b"PRIVATE KEY" not in (d / "swarm-root-ca.crt").read_bytes()  # the CA key stays in cluster state
    loaded = NodeCredentials.load(tmp_path)
    assert loaded.cert_pem == mgr1.cert_pem and loaded.node_id == "manager1"
    assert RootCA.load(tmp_path).digest == ca.digest


def test_mismatched_key_and_cert_detected(
    tmp_path: Path, mgr1: NodeCredentials, mgr2: NodeCredentials
) -> None:
    mgr1.save(tmp_path)
    keys.atomic_write(cert_paths(tmp_path).node_key, mgr2.key_pem)
    with pytest.raises(ValueError, match="does not match"):
        NodeCredentials.load(tmp_path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "swarm" / "certificates" / "swarm-node.key"
    keys.atomic_write(target, b"old key")
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def failing_fsync(fd: int) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk gone"):
        keys.atomic_write(target, b"new key")
    assert target.read_bytes() == b"old key"
    assert [p.name for p in target.parent.iterdir()] == ["swarm-node.key"]  # no temp file left behind

    def spy_fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def spy_replace(src: Any, dst: Any) -> None:
        calls.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    keys.atomic_write(target, b"new key")
    assert target.read_bytes() == b"new key" and _mode(target) == 0o600
    assert calls == ["fsync", "replace", "fsync"]  # file fsync, rename, directory fsync


# -------------------------------------------------------------------------------------------------- DEK


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_dek_created_once_and_reused(tmp_path: Path, mgr1: NodeCredentials) -> None:
    mgr1.save(tmp_path)
    raft_dir = tmp_path / "swarm" / "raft"
    raft_dir.mkdir(parents=True)
    dek = load_or_create_dek(tmp_path)
    assert len(dek) == 32
    assert load_or_create_dek(tmp_path) == dek
    p = cert_paths(tmp_path).dek
    assert p == tmp_path / "swarm" / "certificates" / "raft-dek"
    assert _mode(p) == 0o600
    assert list(raft_dir.iterdir()) == []
    for f in _all_files(tmp_path):  # never in the clear anywhere
        data = f.read_bytes()
        for form in (dek, dek.hex().encode(), base64.b64encode(dek)):
            assert form not in data, f


def test_dek_survives_node_key_rotation(tmp_path: Path, ca: RootCA, mgr1: NodeCredentials) -> None:
    mgr1.save(tmp_path)
    dek = load_or_create_dek(tmp_path)
    renewed = signing.new_credentials(ca, "manager1", Role.MANAGER)  # renewal brings a new key
    renewed.save(tmp_path)
    assert load_or_create_dek(tmp_path) == dek
    assert _mode(cert_paths(tmp_path).dek) == 0o600


def test_dek_rotation_is_crash_safe(
    tmp_path: Path, ca: RootCA, mgr1: NodeCredentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    mgr1.save(tmp_path)
    dek = load_or_create_dek(tmp_path)
    renewed = signing.new_credentials(ca, "manager1", Role.MANAGER)
    real = keys.atomic_write
    writes: list[str] = []

    def crash_on_cert(path: str | Path, data: bytes, mode: int = 0o600) -> None:
        writes.append(Path(path).name)
        if Path(path).name == "swarm-node.crt":
            raise OSError("power cut")
        real(path, data, mode)

    monkeypatch.setattr(keys, "atomic_write", crash_on_cert)
    with pytest.raises(OSError):
        renewed.save(tmp_path)
    monkeypatch.undo()
    assert writes == ["raft-dek", "swarm-node.key", "swarm-node.crt"]
    # The new key is on disk but the certificate is the old one: the DEK must still unwrap.
    assert load_or_create_dek(tmp_path) == dek


def test_dek_wrong_key_refused(tmp_path: Path, mgr1: NodeCredentials, mgr2: NodeCredentials) -> None:
    mgr1.save(tmp_path)
    load_or_create_dek(tmp_path)
    keys.atomic_write(cert_paths(tmp_path).node_key, mgr2.key_pem)  # not via save(): no re-wrap
    with pytest.raises(DEKError):
        load_or_create_dek(tmp_path)


def test_dek_requires_node_key(tmp_path: Path) -> None:
    with pytest.raises(DEKError, match="no node key"):
        load_or_create_dek(tmp_path)


def test_dek_autolock(tmp_path: Path, mgr1: NodeCredentials) -> None:
    mgr1.save(tmp_path)
    dek = load_or_create_dek(tmp_path)
    unlock = keys.generate_unlock_key()
    assert unlock.startswith("SWMKEY-1-") and len(keys.parse_unlock_key(unlock)) == 32
    keys.rewrap_dek(tmp_path, new_unlock_key=unlock)  # autolock on
    with pytest.raises(DEKError, match="locked"):
        load_or_create_dek(tmp_path)
    with pytest.raises(DEKError):
        load_or_create_dek(tmp_path, unlock_key=keys.generate_unlock_key())
    assert load_or_create_dek(tmp_path, unlock_key=unlock) == dek
    keys.rewrap_dek(tmp_path, unlock_key=unlock)  # autolock off again
    assert load_or_create_dek(tmp_path) == dek
    with pytest.raises(ValueError, match="invalid unlock key"):
        keys.parse_unlock_key("SWMKEY-1-short")
